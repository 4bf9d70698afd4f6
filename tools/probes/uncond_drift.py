"""Probe (not part of the package): how far DPO training moves the unconditional prediction, with and without caption
dropout. usage: uncond_drift.py RUN_DIR DROPOUT STEPS

Trains STEPS steps of the world recipe's DPO (configs/world.yaml's train section) on RUN_DIR's round-1 pairs, from
the committed base, then compares trained and base predictions at t = 950 on 60 canonical in-distribution prompts:
the mean absolute change of the conditional and of the unconditional (empty-prompt) prediction, and their ratio.
"""

import random
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, "src")
from vipo import config  # noqa: E402
from vipo.data.ledger import Ledger  # noqa: E402
from vipo.data.real import WorldRealVideos  # noqa: E402
from vipo.models import policy as policies  # noqa: E402
from vipo.train.trainer import train_round  # noqa: E402
from vipo.world import grammar, render  # noqa: E402

run, p, steps = Path(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
tmp = Path(tempfile.mkdtemp())
shutil.copytree(
    run / "round-1",
    tmp / "round-1",
    ignore=shutil.ignore_patterns("eval", "checkpoint", "train_state", "train_log.jsonl"),
)
shutil.copy(run / "ledger.sqlite", tmp / "ledger.sqlite")
cfg = config.load(config.RunConfig, "configs/world.yaml").train
with Ledger(tmp / "ledger.sqlite") as ledger:
    n = len(ledger.rows("pairs", 1))
    cfg.caption_dropout, cfg.epochs = p, steps * cfg.batch_size * cfg.grad_accum / n
    model = policies.load_policy("world")
    train_round(
        model, cfg, ledger, 1, tmp / "round-1", real=WorldRealVideos(9, 32, cfg.real_caption_noise), progress=False
    )
base = policies.load_policy("world")
rng = random.Random(0)
attrs = list(grammar.INDIST)
clips = model.encode_video(np.stack([render.random_clip(a, rng) for a in attrs]))
g = torch.Generator().manual_seed(0)
noise = torch.randn(clips.shape, generator=g)
t = torch.full((len(attrs),), 950)
with torch.no_grad():
    cond_p = [a.prompt() for a in attrs]
    out = {}
    for name, prompts in (("cond", cond_p), ("uncond", [""] * len(attrs))):
        preds = []
        for m in (model, base):
            pred, _ = m.predict_and_target(clips, m.encode_prompts(prompts), noise, t)
            preds.append(pred)
        out[name] = (preds[0] - preds[1]).abs().mean().item()
        # the denoising error of each prediction on the rendered clips (x0-prediction: the target is the clip)
        out[name + "_err"] = [(pr - clips).pow(2).mean().item() for pr in preds]
print(
    f"caption_dropout {p}, {steps} steps: mean |change| cond {out['cond']:.5f}, uncond {out['uncond']:.5f}, "
    f"uncond/cond {out['uncond'] / out['cond']:.3f}; error at t=950 trained/base: cond "
    f"{out['cond_err'][0]:.5f}/{out['cond_err'][1]:.5f}, uncond {out['uncond_err'][0]:.5f}/{out['uncond_err'][1]:.5f}",
    flush=True,
)
shutil.rmtree(tmp)
