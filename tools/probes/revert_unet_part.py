# Probe (docs/results.md): revert one part of the 4250-step UNet to the 3750-step snapshot and re-judge direction.
# Needs runs/pretrain-4250/{model,snap-3750} (pretrain with an EMA snapshot at 3750). Usage: python tools/probes/revert_unet_part.py
import sys

import torch

sys.path.insert(0, "src")
torch.set_num_threads(1)
from vipo.models.world import WorldModel
from vipo.world.pretrain import evaluate_pass_rate

old = WorldModel.load("runs/pretrain-4250/snap-3750").unet.state_dict()
for name, prefixes in (
    ("emb", ("class_embedding", "time_embedding")),
    ("io", ("conv_in", "conv_out", "conv_norm_out")),
    ("down", ("down_blocks",)),
    ("up", ("up_blocks",)),
    ("mid", ("mid_block",)),
):
    m = WorldModel.load("runs/pretrain-4250/model")
    sd = m.unet.state_dict()
    for k in sd:
        if k.startswith(prefixes):
            sd[k] = old[k]
    m.unet.load_state_dict(sd)
    r = evaluate_pass_rate(m, 96, 15, 2.0)
    print("4250 with 3750", name, round(r["direction"], 3), flush=True)
