# Probe (docs/results.md): which way does the clip go for each direction word, same seeds. Usage: python tools/probes/direction_words.py MODEL_DIR
import collections
import sys

import torch

sys.path.insert(0, "src")
torch.set_num_threads(1)
from vipo.models.world import WorldModel
from vipo.world import grammar
from vipo.world.exact_judge import judge_clip

m = WorldModel.load(sys.argv[1])
u = m.encode_prompts([""])
seeds = list(range(500, 548))
dirs = ["left", "right", "up", "down"]
seen = {}
for d in dirs:
    a = grammar.Attributes("red", "circle", d)
    with torch.no_grad():
        fr = m.decode(m.sample(m.encode_prompts([a.prompt()] * len(seeds)), u, seeds, 15, 2.0))
    seen[d] = []
    for f in fr:
        got = None
        for d2 in dirs:
            if judge_clip(f, grammar.Attributes("red", "circle", d2)).direction_ok:
                got = d2
        seen[d].append(got)
    print(d, "correct", sum(g == d for g in seen[d]), collections.Counter(seen[d]), flush=True)
same = sum(len(set(seen[d][i] for d in dirs)) == 1 for i in range(len(seeds)))
print("seeds whose clip goes the same way whatever the prompt says:", same, "/", len(seeds))
