# Probe (docs/results.md): full fine-tune DPO on round 1 of runs/world-full-dpo (run `vipo run --config configs/world-full.yaml
# --rounds 1 --out runs/world-full-dpo` first). Usage: python tools/probes/full_finetune_dpo.py LR STEPS [WINDOW_LOW]
import copy
import random
import sys

import torch

sys.path.insert(0, "src")
torch.set_num_threads(1)
from pathlib import Path

from vipo import losses
from vipo.data.cache import load_latent
from vipo.data.ledger import Ledger
from vipo.models.world import WorldModel
from vipo.world.pretrain import evaluate_pass_rate

lr, steps, window = float(sys.argv[1]), int(sys.argv[2]), (float(sys.argv[3]), 1.0) if len(sys.argv) > 3 else None
run = Path("runs/world-full-dpo")
led = Ledger(run / "ledger.sqlite")
samples = {s["id"]: s for s in led.rows("samples", 1)}
pairs = [(samples[p["chosen"]], samples[p["rejected"]]) for p in led.rows("pairs", 1)]
m = WorldModel.load("src/vipo/world/checkpoint")
ref = copy.deepcopy(m.unet).eval()
for p in ref.parameters():
    p.requires_grad_(False)
lat = lambda s: load_latent(run / "round-1" / s["latent"])
X = [(lat(w), lat(l), w["prompt"]) for w, l in pairs]
with torch.no_grad():
    enc = m.encode_prompts([x[2] for x in X])
opt = torch.optim.AdamW(m.unet.parameters(), lr=lr)
g = torch.Generator().manual_seed(0)
rng = random.Random(0)
m.unet.train()
for step in range(steps):
    idx = rng.sample(range(len(X)), 16)
    x = torch.cat([torch.stack([X[i][0] for i in idx]), torch.stack([X[i][1] for i in idx])])
    cond = {k: torch.cat([v[idx], v[idx]]) for k, v in enc.items()}
    noise = torch.randn((16,) + tuple(x.shape[1:]), generator=g)
    t = m.sample_timesteps(16, g, window)
    noise, t = torch.cat([noise, noise]), torch.cat([t, t])
    pred, tg = m.predict_and_target(x, cond, noise, t)
    e = losses.per_sample_error(pred, tg)
    unet = m.unet
    m.unet = ref
    with torch.no_grad():
        rp, rt = m.predict_and_target(x, cond, noise, t)
    m.unet = unet
    r = losses.per_sample_error(rp, rt)
    out = losses.dpo(e[:16], e[16:], r[:16], r[16:], 5000.0)
    loss = out.loss + 0.2 * e[:16].mean()
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(m.unet.parameters(), 1.0)
    opt.step()
    if step % 20 == 0:
        print(step, round(out.metrics["dpo_loss"], 3), out.metrics["implicit_acc"], flush=True)
m.unet.eval()
r = evaluate_pass_rate(m, 96, 15, 2.0)
print("FULL FT", lr, steps, window, {k: round(v, 3) for k, v in r.items()}, flush=True)
