"""Probe (not part of the package): continue a world model on noisy captions. usage: noisy_caption_base.py SRC_MODEL OUT STEPS NOISE [LR]"""

import random
import sys
import time

import numpy as np
import torch

sys.path.insert(0, "src")
from vipo.models.world import WorldModel
from vipo.world import grammar, render
from vipo.world.pretrain import evaluate_pass_rate

torch.set_num_threads(2)
src, out, steps, q = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
lr = float(sys.argv[5]) if len(sys.argv) > 5 else 2e-4
m = WorldModel.load(src)
ema = WorldModel.load(src)
params = list(m.unet.parameters()) + list(m.text_encoder.parameters())
eparams = list(ema.unet.parameters()) + list(ema.text_encoder.parameters())
opt = torch.optim.AdamW(params, lr=lr)
rng = random.Random(123)
gen = torch.Generator().manual_seed(123)
t0 = time.time()
for step in range(steps):
    prompts, clips = [], []
    for _ in range(32):
        a = rng.choice(grammar.INDIST)
        clips.append(render.random_clip(a, rng, 32, 9))
        prompts.append("" if rng.random() < 0.1 else grammar.random_prompt(grammar.mislabel(a, rng, q), rng))
    x = m.encode_video(np.stack(clips))
    noise = torch.randn(x.shape, generator=gen)
    t = m.sample_timesteps(32, gen)
    pred, tgt = m.predict_and_target(x, m.encode_prompts(prompts), noise, t)
    loss = (pred - tgt).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    with torch.no_grad():
        for pe, pm in zip(eparams, params):
            pe.lerp_(pm, 1 - 0.995)
    if step % 100 == 99:
        print(step + 1, round(loss.item(), 4), f"{(time.time() - t0) / (step + 1):.2f}s/step", flush=True)
ema.save(out)
r = evaluate_pass_rate(ema, 96, 15, 2.0)
print(out, {k: round(v, 3) for k, v in r.items()}, flush=True)
