"""Pretraining of the embedded world's base model (``vipo world pretrain``).

Plain denoising on freshly rendered in-distribution clips (never a held-out combination), random phrasing, optional
caption noise (``caption_noise``: attribute words swapped the way web captions are wrong), prompt dropout for
classifier-free guidance, AdamW with warmup and cosine decay, an EMA copy that is what gets saved.
Everything is drawn from generators seeded by ``seed``, so a run is reproducible; a resumable state is saved every
``save_every`` steps (safetensors + JSON, no pickle: :mod:`vipo.train.state`) and a killed run continues from it.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import random
import time
from pathlib import Path

import numpy as np
import torch

from ..config import PretrainConfig
from ..errors import UserError
from ..io import atomic
from ..models.world import WorldModel
from ..train import state
from . import grammar, render

log = logging.getLogger(__name__)


#: options a resumed pretraining may change: its length (nanoGPT-style, with ``lr_decay_steps`` fixing the schedule),
#: logging, saving and the final evaluation; any other change would continue a state trained under another config
RESUMABLE = ("steps", "log_every", "save_every", "eval_clips", "eval_steps", "eval_guidance")


@contextlib.contextmanager
def open_folder(cfg: PretrainConfig, out: Path, force: bool = False):
    """Hold ``out``'s lock and its config record (``out/config.yaml``) while pretraining writes it: another config
    (beyond :data:`RESUMABLE`) is refused naming the changed fields, and ``force`` deletes the saved state and
    starts over."""
    import shutil

    from ..config import to_dict
    from ..io import provenance
    from ..io.lock import folder_lock

    record = {k: v for k, v in to_dict(cfg).items() if k not in RESUMABLE}
    with folder_lock(out):
        provenance.check(
            out / "config.yaml",
            record,
            force,
            start_over=lambda: shutil.rmtree(out / "state", ignore_errors=True),
            refusal="this pretraining folder was started with a different config ({changes}); re-run "
            f"with the same one (only {', '.join(RESUMABLE)} may change), choose another --out, "
            "or pass --force to delete its state and start over",
            forced=f"--force: deleting the pretraining state in {out} and starting over ({{changes}})",
        )
        yield out


def _batch(rng: random.Random, cfg: PretrainConfig, step: int) -> tuple[list[str], np.ndarray]:
    prompts, clips = [], []
    noise = cfg.caption_noise if step >= cfg.caption_noise_start else 0.0
    for _ in range(cfg.batch_size):
        attrs = rng.choice(grammar.INDIST)
        clips.append(render.random_clip(attrs, rng, cfg.side, cfg.frames))
        caption = grammar.mislabel(attrs, rng, noise)
        prompts.append("" if rng.random() < cfg.cfg_dropout else grammar.random_prompt(caption, rng))
    return prompts, np.stack(clips)


def _lr(step: int, cfg: PretrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    p = (step - cfg.warmup) / max(1, (cfg.lr_decay_steps or cfg.steps) - cfg.warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, p))))


def _params(model: WorldModel) -> list[torch.nn.Parameter]:
    return list(model.unet.parameters()) + list(model.text_encoder.parameters())


def pretrain(cfg: PretrainConfig, out: Path, device: str = "cpu", progress: bool = True, callback=None) -> WorldModel:
    """Train from scratch (or resume) and return the EMA model; ``callback(step, ema)`` runs after each step."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic.clean_temp(out)
    model = WorldModel.fresh(
        device=device,
        frames=cfg.frames,
        side=cfg.side,
        widths=tuple(cfg.widths),
        text_width=cfg.text_width,
        layers_per_block=cfg.layers_per_block,
        attention=cfg.attention,
        seed=cfg.seed,
    )
    ema = WorldModel(
        copy.deepcopy(model.unet), copy.deepcopy(model.text_encoder), model.tokenizer, model.scheduler, device=device
    )
    for p in _params(ema):
        p.requires_grad_(False)
    opt = torch.optim.AdamW(_params(model), lr=cfg.lr, weight_decay=cfg.weight_decay)
    rng = random.Random(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    step = 0
    state_dir = out / "state"
    got = _load_state(state_dir)
    if got is not None:
        for name, part in (
            ("unet", model.unet),
            ("text_encoder", model.text_encoder),
            ("ema_unet", ema.unet),
            ("ema_text_encoder", ema.text_encoder),
        ):
            part.load_state_dict({k[len(name) + 1 :]: v for k, v in got["params"].items() if k.startswith(name + ".")})
        opt.load_state_dict(got["opt"])
        version, internal, gauss = got["info"]["rng"]
        rng.setstate((version, tuple(internal), gauss))
        gen.set_state(got["params"]["gen"])
        step = got["info"]["step"]
        log.info("resumed pretraining at step %d", step)
    n_params = sum(p.numel() for p in model.unet.parameters())
    log.info(
        "pretraining world model: %.2fM UNet parameters, %d steps of %d clips",
        n_params / 1e6,
        cfg.steps,
        cfg.batch_size,
    )
    from tqdm.auto import tqdm

    bar = tqdm(total=cfg.steps, initial=step, disable=not progress, desc="pretrain", unit="step")
    t0, losses = time.time(), []
    while step < cfg.steps:
        prompts, clips = _batch(rng, cfg, step)
        x = model.encode_video(clips).to(device)
        noise = torch.randn(x.shape, generator=gen).to(device)
        t = model.sample_timesteps(len(prompts), gen)
        cond = model.encode_prompts(prompts)
        pred, target = model.predict_and_target(x, cond, noise, t.to(device))
        loss = (pred.float() - target.float()).pow(2).mean()
        for g in opt.param_groups:
            g["lr"] = _lr(step, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(_params(model), 1.0)
        opt.step()
        decay = min(cfg.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, pm in zip(_params(ema), _params(model)):
                pe.lerp_(pm, 1 - decay)
        step += 1
        losses.append(loss.item())
        bar.update(1)
        if callback is not None:
            callback(step, ema)
        if step % cfg.log_every == 0 or step == cfg.steps:
            log.info(
                "step %d loss %.4f lr %.2e %.2fs/step",
                step,
                float(np.mean(losses)),
                _lr(step - 1, cfg),
                (time.time() - t0) / len(losses),
            )
            bar.set_postfix(loss=f"{np.mean(losses):.4f}")
            t0, losses = time.time(), []
        if step % cfg.save_every == 0 and step < cfg.steps:
            params = {
                f"{name}.{k}": v.clone()
                for name, part in (
                    ("unet", model.unet),
                    ("text_encoder", model.text_encoder),
                    ("ema_unet", ema.unet),
                    ("ema_text_encoder", ema.text_encoder),
                )
                for k, v in part.state_dict().items()
            }
            version, internal, gauss = rng.getstate()
            state.save(
                state_dir,
                dict(params, gen=gen.get_state()),
                opt,
                {"step": step, "rng": [version, list(internal), gauss]},
            )
    bar.close()
    ema.unet.eval()
    ema.text_encoder.eval()
    return ema


def _load_state(folder: Path) -> dict | None:
    """The resumable state (safetensors + JSON, :mod:`vipo.train.state`), or None. A pickle ``state.pt`` from an
    older vipo is refused unless ``--allow-pickle``, and even then read with torch's restricted unpickler."""
    legacy = folder / "state.pt"
    if atomic.is_complete(folder) and legacy.is_file() and not (folder / "state.json").is_file():
        from ..models import allow_pickle

        if not allow_pickle():
            raise UserError(
                f"{legacy}: a pickle-format state (from an older vipo), which can run arbitrary code when "
                f"loaded; delete {folder} to start over, or pass --allow-pickle if you wrote it yourself"
            )
        try:
            old = torch.load(legacy, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001  (the restricted unpickler refuses anything but tensors and plain data)
            raise UserError(
                f"{legacy}: not a plain pretraining state ({type(e).__name__}); delete {folder} to start over"
            ) from None
        params = {
            f"{name}.{k}": v
            for name in ("unet", "text_encoder", "ema_unet", "ema_text_encoder")
            for k, v in old[name].items()
        }
        version, internal, gauss = old["rng"]
        return {
            "params": dict(params, gen=old["gen"]),
            "opt": old["opt"],
            "info": {"step": old["step"], "rng": [version, list(internal), gauss]},
        }
    return state.load(folder)


def evaluate_pass_rate(
    model: WorldModel, n: int, steps: int, guidance: float, split: str = "indist", batch: int = 48
) -> dict:
    """Semantic pass rate of ``n`` clips over the split's combinations (canonical phrasing).

    Prompts and seeds are the first ``n`` of the ``eval`` stage's fixed set, so this number and a run's round-0
    evaluation judge the same clips.
    """
    from ..config import EvalConfig
    from ..stages.evaluate import eval_prompts
    from .exact_judge import judge_clip

    rows = [r for r in eval_prompts(EvalConfig(clips_per_split=n)) if r["split"] == split]
    attrs = [grammar.parse(r["prompt"]) for r in rows]
    seeds = [r["seed"] for r in rows]
    uncond = model.encode_prompts([""])
    ok = {"color": 0, "shape": 0, "direction": 0, "pass": 0}
    fid = mot = 0.0
    with torch.no_grad():
        for i in range(0, n, batch):
            a = attrs[i : i + batch]
            cond = model.encode_prompts([x.prompt() for x in a])
            frames = model.decode(model.sample(cond, uncond, seeds[i : i + batch], steps, guidance))
            for f, target in zip(frames, a):
                s = judge_clip(f, target)
                ok["color"] += s.color_ok
                ok["shape"] += s.shape_ok
                ok["direction"] += s.direction_ok
                ok["pass"] += s.passed
                fid += s.fidelity
                mot += s.motion
    out = {k: v / n for k, v in ok.items()}
    out.update(fidelity=fid / n, motion=mot / n, n=n)
    return out
