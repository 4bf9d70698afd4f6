"""The ``train`` stage: one round of Diffusion-DPO, Diffusion-KTO or reward-weighted training.

Winner and loser go through the denoiser in one concatenated batch with shared noise and timestep. With a LoRA (the
default) the reference's errors come from the same network with the adapter disabled; a full fine-tune trains every
denoiser weight against a frozen copy (optionally parked on the CPU between uses).

Everything frozen is computed before the first step: text conditioning once per prompt (from the run's
:class:`TextCache` when the family caches it, so the text encoder never runs here on a later round), generated samples
from their saved sampler latents, real videos from their cached VAE latents; then the text encoder and VAE leave the
accelerator for the whole of training. A resumable state (trainable weights, optimizer, step, log) is saved
atomically every ``save_every`` steps; a killed run continues from it and reproduces the same steps, since every
random draw is seeded by (run seed, round, step).
"""
from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .. import losses, seeds
from ..config import TrainConfig
from ..data.cache import TextCache
from ..data.ledger import Ledger
from ..errors import UserError
from ..io import atomic
from ..models.base import VideoModel
from ..stages.generate import load_latent
from . import lora

log = logging.getLogger(__name__)


def _cat(conds: list[dict]) -> dict:
    return {k: torch.cat([c[k] for c in conds]) for k in conds[0]}


class Batcher:
    """Deterministic epoch permutations over item indices, resumable at any micro-batch."""

    def __init__(self, n: int, batch: int, seed: int):
        self.n, self.batch, self.seed = n, batch, seed

    def micro(self, index: int) -> list[int]:
        per_epoch = max(1, math.ceil(self.n / self.batch))
        epoch, pos = divmod(index, per_epoch)
        g = torch.Generator().manual_seed(seeds.stream_seed(self.seed, "perm", epoch))
        perm = torch.randperm(self.n, generator=g).tolist()
        return perm[pos * self.batch:(pos + 1) * self.batch]


def _items(method: str, ledger: Ledger, round_: int) -> list[dict]:
    samples = {s["id"]: s for s in ledger.rows("samples", round_)}
    if method == "dpo":
        return [{"chosen": samples[p["chosen"]], "rejected": samples[p["rejected"]], "weight": p["weight"]}
                for p in ledger.rows("pairs", round_)]
    return [{"sample": samples[e["sample"]], "desirable": e["desirable"], "score": e["score"]}
            for e in ledger.rows("examples", round_)]


def train_round(model: VideoModel, cfg: TrainConfig, ledger: Ledger, round_: int, round_dir: Path, real=None,
                run_seed: int = 0, progress: bool = True, text_cache: TextCache | None = None) -> dict:
    """Train this round's policy in place (``model`` ends with it: the adapter attached and active, or the fully
    fine-tuned denoiser); return a summary."""
    round_dir = Path(round_dir)
    items = _items(cfg.method, ledger, round_)
    if not items:
        raise RuntimeError(f"round {round_}: no {'pairs' if cfg.method == 'dpo' else 'examples'} to train on")
    device = next(model.denoiser.parameters()).device
    total = max(1, math.ceil(cfg.epochs * len(items) / (cfg.batch_size * cfg.grad_accum)))
    # real videos the family trains from cached latents: every draw of the round is known now, so encode them first
    encoded = real is not None and getattr(real, "encoded", False) and cfg.real_batch_size > 0 and cfg.lambda_real > 0
    draws = [real.indices(cfg.real_batch_size, seeds.stream_seed(run_seed, round_, "real", s, m))
             for s in range(total) for m in range(cfg.grad_accum)] if encoded else []
    captions = sorted({c for d in draws for c in real.captions(d)})
    # Text conditioning is computed once, without gradients (only the trainable weights get them).
    prompts = sorted({it[k]["prompt"] for it in items for k in ("chosen", "rejected", "sample") if k in it})
    if text_cache is not None:
        cache = text_cache.rows(model, prompts + captions, device)
    else:
        prompts = sorted(set(prompts) | set(captions))
        with torch.no_grad():
            cache = {}
            for i in range(0, len(prompts), 64):
                chunk = prompts[i:i + 64]
                enc = model.encode_prompts(chunk)
                for j, pr in enumerate(chunk):
                    cache[pr] = {k: v[j:j + 1] for k, v in enc.items()}
    if encoded:
        real.prepare(model, [i for d in draws for i in d])
    latent_cache: dict[str, torch.Tensor] = {}

    def latent(s: dict) -> torch.Tensor:
        if s["id"] not in latent_cache:
            latent_cache[s["id"]] = load_latent(round_dir / s["latent"])
        return latent_cache[s["id"]]

    model.encoders_to("cpu")
    try:
        return _train(model, cfg, items, cache, latent, real, round_, round_dir, run_seed, progress, total, device)
    finally:
        model.encoders_to(device)


def _train(model, cfg, items, cache, latent, real, round_, round_dir, run_seed, progress, total, device) -> dict:
    net = model.denoiser
    params, frozen = trainable(model, cfg)
    opt = make_optimizer(cfg, params)
    ctx = StepContext(model, cfg, frozen, device)
    batcher = Batcher(len(items), cfg.batch_size, seeds.stream_seed(run_seed, round_, "batches"))
    state_dir, log_path = round_dir / "train_state", round_dir / "train_log.jsonl"
    step, history = 0, []
    if atomic.is_complete(state_dir):
        st = torch.load(state_dir / "state.pt", weights_only=False)
        lora.load_lora_state(model, st.get("params", st.get("lora")))
        opt.load_state_dict(st["opt"])
        step, history = st["step"], st["history"]
        log.info("round %d: resumed training at step %d/%d", round_, step, total)
    net.train()
    bar = tqdm(total=total, initial=step, disable=not progress, desc=f"train r{round_} {cfg.method}", unit="step")
    while step < total:
        lr = cfg.lr * min(1.0, (step + 1) / max(1, cfg.warmup))
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad(set_to_none=True)
        agg: dict[str, float] = {}
        for micro in range(cfg.grad_accum):
            idx = batcher.micro(step * cfg.grad_accum + micro)
            batch = [items[i] for i in idx]
            gen = torch.Generator().manual_seed(seeds.stream_seed(run_seed, round_, "noise", step, micro))
            loss, metrics = _micro_loss(ctx, batch, cache, latent, gen, real,
                                        seeds.stream_seed(run_seed, round_, "real", step, micro))
            (loss / cfg.grad_accum).backward()
            for k, v in metrics.items():
                agg[k] = agg.get(k, 0.0) + v / cfg.grad_accum
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm if cfg.max_grad_norm > 0 else 1e12)
        opt.step()
        step += 1
        agg.update(step=step, lr=lr, grad_norm=float(grad_norm))
        history.append(agg)
        bar.update(1)
        bar.set_postfix(loss=f"{agg['loss']:.4f}", acc=f"{agg.get('implicit_acc', 0):.2f}")
        if step % cfg.log_every == 0 or step == total:
            log.info("round %d step %d/%d %s", round_, step, total,
                     " ".join(f"{k}={v:.4g}" for k, v in agg.items() if k not in ("step",)))
        if step % cfg.save_every == 0 and step < total:
            _save_state(state_dir, model, opt, step, history)
            _write_log(log_path, history)
    bar.close()
    _write_log(log_path, history)
    net.eval()
    if cfg.gradient_checkpointing:
        net.disable_gradient_checkpointing()
    if frozen is not None:
        net.requires_grad_(False)
    first, last = history[0], history[-1]
    tail = history[-max(1, len(history) // 5):]
    return {"method": cfg.method, "steps": total, "items": len(items), "first_loss": first["loss"],
            "last_loss": last["loss"], "mean_loss_last_20pct": sum(h["loss"] for h in tail) / len(tail),
            "implicit_acc_last_20pct": sum(h.get("implicit_acc", 0.0) for h in tail) / len(tail)}


def trainable(model: VideoModel, cfg: TrainConfig) -> tuple[list, torch.nn.Module | None]:
    """Make the policy trainable as ``cfg`` asks; return (parameters to optimize, the frozen reference or None)."""
    net = model.denoiser
    if cfg.finetune == "full":
        frozen = copy.deepcopy(net).requires_grad_(False).eval()
        if cfg.ref_offload:
            frozen.to("cpu")
        params = list(net.parameters())
        for p in params:
            p.requires_grad_(True)
    else:
        # attach() freezes the denoiser: only the adapter trains; the reference is the adapter disabled
        frozen, params = None, lora.attach(model, cfg.lora_rank, cfg.lora_alpha, cfg.lora_targets or None)
    if cfg.gradient_checkpointing:
        if not getattr(net, "_supports_gradient_checkpointing", False):
            raise UserError(f"train.gradient_checkpointing: the {model.family} denoiser does not support it")
        net.enable_gradient_checkpointing()
    return params, frozen


def bitsandbytes():
    try:
        import bitsandbytes as bnb
    except ImportError:
        raise UserError("train.optimizer: adamw8bit needs bitsandbytes; `pip install bitsandbytes` "
                        "or use optimizer: adamw") from None
    return bnb


def make_optimizer(cfg: TrainConfig, params: list) -> torch.optim.Optimizer:
    if cfg.optimizer == "adamw8bit":
        return bitsandbytes().optim.AdamW8bit(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


class StepContext:
    """What a micro-batch needs besides its data: the model, the config, and how to run the reference."""

    def __init__(self, model: VideoModel, cfg: TrainConfig, frozen: torch.nn.Module | None, device: torch.device):
        self.model, self.cfg, self.frozen, self.device = model, cfg, frozen, device

    def autocast(self):
        # bf16 matmuls in the forward pass; per_sample_error and the losses upcast to float32
        if self.cfg.mixed_precision == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def reference(self):
        """The reference in the denoiser's place: the adapter disabled (LoRA) or the frozen copy swapped in."""
        if self.frozen is None:
            net = self.model.denoiser
            net.disable_adapters()
            try:
                yield
            finally:
                net.enable_adapters()
            return
        owner, name = self.model.denoiser_slot()
        policy = vars(owner)[name]
        if self.cfg.ref_offload:
            self.frozen.to(self.device)
        vars(owner)[name] = self.frozen  # bypasses a pipeline's __setattr__, which would rewrite its config
        try:
            yield
        finally:
            vars(owner)[name] = policy
            if self.cfg.ref_offload:
                self.frozen.to("cpu")

    def errors(self, x, cond, noise, t) -> torch.Tensor:
        with self.autocast():
            pred, target = self.model.predict_and_target(x, cond, noise, t)
        return losses.per_sample_error(pred, target)


def _micro_loss(ctx: StepContext, batch, cache, latent, gen, real, real_seed):
    model, cfg, device = ctx.model, ctx.cfg, ctx.device
    if cfg.method == "dpo":
        n = len(batch)
        x = torch.cat([torch.stack([latent(b["chosen"]) for b in batch]),
                       torch.stack([latent(b["rejected"]) for b in batch])]).to(device)
        conds = [cache[b["chosen"]["prompt"]] for b in batch] + [cache[b["rejected"]["prompt"]] for b in batch]
        noise = torch.randn((n,) + tuple(x.shape[1:]), generator=gen).to(device)
        t = model.sample_timesteps(n, gen, tuple(cfg.timestep_window)).to(device)
        noise, t = torch.cat([noise, noise]), torch.cat([t, t])
    else:
        x = torch.stack([latent(b["sample"]) for b in batch]).to(device)
        conds = [cache[b["sample"]["prompt"]] for b in batch]
        noise = torch.randn(tuple(x.shape), generator=gen).to(device)
        t = model.sample_timesteps(len(batch), gen, tuple(cfg.timestep_window)).to(device)
    cond = _cat(conds)
    e = ctx.errors(x, cond, noise, t)
    with torch.no_grad(), ctx.reference():
        r = ctx.errors(x, cond, noise, t)
    if cfg.method == "dpo":
        n = len(batch)
        w = torch.tensor([b["weight"] for b in batch], device=device)
        out = losses.dpo(e[:n], e[n:], r[:n], r[n:], cfg.beta, weight=w)
        loss = out.loss + cfg.lambda_winner * losses.nll(e[:n])
        out.metrics["nll_winner"] = e[:n].mean().item()
    elif cfg.method == "kto":
        des = torch.tensor([b["desirable"] for b in batch], device=device)
        out = losses.kto(e, r, des, cfg.beta, cfg.lambda_desirable, cfg.lambda_undesirable)
        loss = out.loss
    else:
        reward = torch.tensor([b["score"] for b in batch], device=device)
        out = losses.reward_weighted(e, reward)
        loss = out.loss
    metrics = dict(out.metrics)
    if real is not None and cfg.real_batch_size > 0 and cfg.lambda_real > 0:
        if getattr(real, "encoded", False):
            prompts, xr = real.draw_latents(cfg.real_batch_size, real_seed)
            xr, rc = xr.to(device), _cat([cache[p] for p in prompts])
        else:  # the world's renderer: pixels, encoded here (its "VAE" is the identity)
            prompts, clips = real.draw(cfg.real_batch_size, real_seed)
            xr = model.encode_video(clips).to(device)
            with torch.no_grad():
                rc = model.encode_prompts(prompts)
        nr = torch.randn(tuple(xr.shape), generator=gen).to(device)
        tr = model.sample_timesteps(len(prompts), gen).to(device)
        nll_real = losses.nll(ctx.errors(xr, rc, nr, tr))
        loss = loss + cfg.lambda_real * nll_real
        metrics["nll_real"] = nll_real.item()
    metrics["loss"] = loss.item()
    return loss, metrics


def _save_state(state_dir: Path, model, opt, step: int, history: list) -> None:
    with atomic.atomic_dir(state_dir) as tmp:
        trainable = {n: p.detach().clone() for n, p in model.denoiser.named_parameters() if p.requires_grad}
        torch.save({"params": trainable, "opt": opt.state_dict(), "step": step, "history": history}, tmp / "state.pt")


def _write_log(path: Path, history: list) -> None:
    atomic.write_text(path, "".join(json.dumps(h) + "\n" for h in history))
