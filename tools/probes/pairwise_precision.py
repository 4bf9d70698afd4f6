# Probe (docs/results-critics.md): how precise must a critic's per-clip scores be for the world judge's pairwise
# verdicts? Adds Gaussian noise of standard deviation sigma to each clip's exact graded score (as the judge's own
# reasons state it, "A 3.873 vs B 2.651") and re-decides every test pair with the judge's tie bands.
# Usage: python tools/probes/pairwise_precision.py labels/world/export/critic_train.jsonl [--seeds 5]
import argparse
import json
import re
import sys

import numpy as np

sys.path.insert(0, "src")
from vipo.critics.world import TIE  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("data")
p.add_argument("--seeds", type=int, default=5)
p.add_argument("--split", default="test")
args = p.parse_args()
pairs = {d: [] for d in TIE}
STATED = re.compile(r"^A (\S+) vs B (\S+)$")  # the world judge's pairwise reason
with open(args.data) as f:
    for line in f:
        r = json.loads(line)
        if r["task"] != "pairwise" or r["split"] != args.split:
            continue
        m = next(filter(None, (STATED.match(t) for t in r["reasons"])), None)
        if m:
            pairs[r["dimension"]].append((float(m.group(1)), float(m.group(2))))


def verdicts(a, b, tie):
    d = a - b
    return np.where(np.abs(d) < tie, 2, np.where(d > 0, 0, 1))


sigmas = (0.002, 0.005, 0.01, 0.015, 0.02, 0.03, 0.04)
print("| dimension | questions | exact A / B / Tie | " + " | ".join(f"sigma {s}" for s in sigmas) + " |")
print("|---|---|---|" + "---|" * len(sigmas))
pooled = {s: [] for s in sigmas}
for d, v in pairs.items():
    v = np.array(v)
    truth = verdicts(v[:, 0], v[:, 1], TIE[d])
    row = []
    for s in sigmas:
        accs = []
        for seed in range(args.seeds):
            rng = np.random.default_rng(seed)
            got = verdicts(v[:, 0] + rng.normal(0, s, len(v)), v[:, 1] + rng.normal(0, s, len(v)), TIE[d])
            accs.append((got == truth).mean())
            pooled[s].append(got == truth)
        row.append(f"{100 * np.mean(accs):.1f}%")
    counts = np.bincount(truth, minlength=3)
    print(f"| {d} | {len(v)} | {counts[0]} / {counts[1]} / {counts[2]} | " + " | ".join(row) + " |")
print("| all | | | " + " | ".join(f"{100 * np.concatenate(pooled[s]).mean():.1f}%" for s in sigmas) + " |")
