"""The ``train`` stage: one round of Diffusion-DPO, Diffusion-KTO or reward-weighted training.

Winner and loser go through the denoiser in one concatenated batch with shared noise and timestep. With a LoRA (the
default) the reference's errors come from the same network with the adapter disabled; a full fine-tune trains every
denoiser weight against a frozen copy (optionally parked on the CPU between uses).

With weights loaded in bfloat16 (``model_dtype``) the frozen base stays bf16 and only float32 weights train: the LoRA
(its reference the bf16 base), or in a full fine-tune the denoiser's float32 master weights, read again from the
folder it was loaded from, against a float32 copy (the text encoder and VAE stay bf16). Forward passes then always run
under autocast in the model's dtype, so bf16 weights and float32 adapters or activations meet in bf16 matmuls; errors
and losses are float32 either way.

Everything frozen is computed before the first step: text conditioning once per prompt (from the run's
:class:`TextCache` when the family caches it, so the text encoder never runs here on a later round), generated samples
from their saved sampler latents, real videos from their cached VAE latents; then the text encoder and VAE leave the
accelerator for the whole of training. A resumable state (see :mod:`.state`: weights, optimizer, step, RNGs, data
position, config hash) is saved atomically every ``save_every`` steps and on SIGTERM; a killed run continues from it
and reproduces the same steps, since every random draw is seeded by (run seed, round, step).

The objectives follow their references (``vipo.losses`` names each equation): KTO's reference point comes from a pool
of the last ``kto_kl_pool`` rewards, read once per optimizer step (:class:`~vipo.losses.RewardPool`), and its class
weights from the round's label counts; a ``caption_dropout`` share of items trains on the family's empty-prompt
conditioning (a DPO pair's two samples share the draw) so the unconditional branch classifier-free guidance uses
keeps learning; the NLL regularizers are in the preference term's units (``nll_units``). At the first step of every
round the gradient norms of the preference term, the winner NLL and the real-video NLL are measured apart and logged
(``grad_norm_preference``, ``grad_norm_winner_nll``, ``grad_norm_real_nll`` in the first train_log.jsonl record and
in the round's summary), so anyone can see what each term weighs.

A step whose loss or gradient norm is not finite is skipped (no optimizer step; counted, logged, marked ``skipped``
in the log); ``max_skipped_steps`` consecutive skips, or a loss above ``loss_spike_factor`` times the mean of the
recent ones, stop the stage. Samples whose saved latent is not finite are quarantined and their items dropped.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import logging
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .. import dist, faults, losses, seeds, tracking
from ..config import TrainConfig
from ..data.cache import TextCache, fingerprint, load_latent
from ..data.ledger import Ledger, check_quarantine
from ..errors import StageAborted, UserError
from ..io import atomic
from ..models.base import VideoModel
from . import lora, refcache
from . import state as train_state

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
        return perm[pos * self.batch : (pos + 1) * self.batch]

    def epoch(self, index: int) -> int:
        return index // max(1, math.ceil(self.n / self.batch))


def _items(cfg: TrainConfig, ledger: Ledger, round_: int) -> list[dict]:
    samples = {s["id"]: s for s in ledger.rows("samples", round_)}
    if cfg.method == "dpo":
        return [
            {"chosen": samples[p["chosen"]], "rejected": samples[p["rejected"]], "weight": p["weight"]}
            for p in ledger.rows("pairs", round_)
        ]
    # rwr's reward: LiFT's label map averaged over the dimensions (examples written before labels were kept: score)
    return [
        {
            "sample": samples[e["sample"]],
            "desirable": e["desirable"],
            "score": losses.label_reward(e["labels"], cfg.rwr_scores) if "labels" in e else e["score"],
        }
        for e in ledger.rows("examples", round_)
    ]


def kto_weights(cfg: TrainConfig, items: list[dict]) -> dict:
    """The round's KTO class weights: as set, or (null) by the KTO paper's rule from its label counts."""
    n_d = sum(bool(it["desirable"]) for it in items)
    n_u = len(items) - n_d
    auto_d, auto_u = losses.kto_class_weights(n_d, n_u)
    lam_d = auto_d if cfg.lambda_desirable is None else cfg.lambda_desirable
    lam_u = auto_u if cfg.lambda_undesirable is None else cfg.lambda_undesirable
    return {
        "n_desirable": n_d,
        "n_undesirable": n_u,
        "lambda_desirable": lam_d,
        "lambda_undesirable": lam_u,
        "weighted_ratio": lam_d * n_d / (lam_u * n_u) if lam_u * n_u else None,
    }


def _usable(
    items: list[dict], ledger: Ledger, round_: int, round_dir: Path, latent_cache: dict, max_quarantined: float
) -> list[dict]:
    """Items whose samples are not quarantined; a sample whose saved latent is not finite is quarantined now."""

    bad = ledger.quarantined(round_)
    for s in {s["id"]: s for it in items for k, s in it.items() if k in ("chosen", "rejected", "sample")}.values():
        if s["id"] not in bad:
            lat = latent_cache[s["id"]] = load_latent(round_dir / s["latent"])
            if not torch.isfinite(lat).all():
                log.warning("round %d: %s has a non-finite latent; quarantined", round_, s["id"])
                ledger.quarantine(round_, s["id"], "non-finite latent (read)")
                bad.add(s["id"])
    check_quarantine(ledger, round_, len(ledger.keys("samples", round_)), max_quarantined, "train")
    return [
        it for it in items if not any(s["id"] in bad for k, s in it.items() if k in ("chosen", "rejected", "sample"))
    ]


def train_round(
    model: VideoModel,
    cfg: TrainConfig,
    ledger: Ledger,
    round_: int,
    round_dir: Path,
    real=None,
    run_seed: int = 0,
    progress: bool = True,
    text_cache: TextCache | None = None,
    max_quarantined: float = 1.0,
) -> dict:
    """Train this round's policy in place (``model`` ends with it: the adapter attached and active, or the fully
    fine-tuned denoiser); return a summary."""
    round_dir = Path(round_dir)
    if dist.world() > 1 and cfg.method == "kto" and not cfg.kto_kl_pool:
        raise UserError(
            "train.kto_kl_pool: 0 takes each micro-batch's own mean reward as KTO's reference point, "
            "which processes holding parts of a micro-batch cannot compute alone; give kto_kl_pool >= 2 "
            "(e.g. 128) to train on several processes"
        )
    latent_cache: dict[str, torch.Tensor] = {}
    items = dist.from_main(
        lambda: _usable(_items(cfg, ledger, round_), ledger, round_, round_dir, latent_cache, max_quarantined)
    )  # (the main rank reads the ledger)
    if not items:
        raise StageAborted(f"round {round_} train: no {'pairs' if cfg.method == 'dpo' else 'examples'} to train on")
    device = next(model.denoiser.parameters()).device
    total = max(1, math.ceil(cfg.epochs * len(items) / (cfg.batch_size * cfg.grad_accum)))
    # real videos the family trains from cached latents: every draw of the round is known now, so encode them first
    encoded = real is not None and real.encoded and cfg.real_batch_size > 0 and cfg.lambda_real > 0
    draws = (
        [
            real.indices(cfg.real_batch_size, seeds.stream_seed(run_seed, round_, "real", s, m))
            for s in range(total)
            for m in range(cfg.grad_accum)
        ]
        if encoded
        else []
    )
    captions = sorted({c for d in draws for c in real.captions(d)})
    # Text conditioning is computed once, without gradients (only the trainable weights get them).
    prompts = sorted(
        {it[k]["prompt"] for it in items for k in ("chosen", "rejected", "sample") if k in it}
        | ({""} if cfg.caption_dropout > 0 else set())
    )
    if text_cache is not None:
        if dist.is_main():  # (one writer; the other ranks read what it stored)
            text_cache.ensure(model, prompts + captions)
        dist.barrier()
        cache = text_cache.rows(model, prompts + captions, device)
    else:
        prompts = sorted(set(prompts) | set(captions))
        with torch.no_grad():
            cache = {}
            for i in range(0, len(prompts), 64):
                chunk = prompts[i : i + 64]
                enc = model.encode_prompts(chunk)
                for j, pr in enumerate(chunk):
                    cache[pr] = {k: v[j : j + 1] for k, v in enc.items()}
    if encoded:
        if dist.is_main():
            real.prepare(model, [i for d in draws for i in d])
        dist.barrier()

    def latent(s: dict) -> torch.Tensor:
        if s["id"] not in latent_cache:
            latent_cache[s["id"]] = load_latent(round_dir / s["latent"])
        return latent_cache[s["id"]]

    # the reference's identity for the cached reference errors (before an adapter is attached: the reference itself)
    reference = fingerprint(model.denoiser) if cfg.ref_cache and cfg.method != "rwr" else ""
    model.encoders_to("cpu")
    try:
        with model.pinned():  # dtypes and rotary tables resolved once for the round, not per forward
            return _train(
                model, cfg, items, cache, latent, real, round_, round_dir, run_seed, progress, total, device, reference
            )
    finally:
        model.encoders_to(device)


def _train(
    model, cfg, items, cache, latent, real, round_, round_dir, run_seed, progress, total, device, reference: str = ""
) -> dict:
    params, frozen = trainable(model, cfg, seeds.stream_seed(run_seed, round_, "lora"))
    net = model.denoiser  # (after trainable: a low-precision full fine-tune swaps in its float32 master weights)
    sharded, plain_cls = _sharding(cfg, net, frozen, device), type(net)
    if sharded:
        params = list(net.parameters())  # (fully_shard made them DTensors)
    names = [n for n, p in net.named_parameters() if p.requires_grad]  # the optimizer's order (full fine-tune)
    opt = make_optimizer(cfg, params)
    ctx = StepContext(model, cfg, frozen, device)
    ctx.pad = sharded
    extra: dict = {"nll_scale": ctx.nll_scale}
    if cfg.method == "kto":
        ctx.kto = kto_weights(cfg, items)
        extra.update(ctx.kto)
        log.info(
            "round %d: KTO on %d desirable / %d undesirable examples, lambda_desirable %.3g, lambda_undesirable "
            "%.3g (weighted ratio %s)",
            round_,
            ctx.kto["n_desirable"],
            ctx.kto["n_undesirable"],
            ctx.kto["lambda_desirable"],
            ctx.kto["lambda_undesirable"],
            "n/a" if ctx.kto["weighted_ratio"] is None else f"{ctx.kto['weighted_ratio']:.3g}",
        )
    pool = losses.RewardPool(cfg.kto_kl_pool) if cfg.method == "kto" and cfg.kto_kl_pool else None
    batcher = Batcher(len(items), cfg.batch_size, seeds.stream_seed(run_seed, round_, "batches"))
    state_dir, log_path = round_dir / "train_state", round_dir / "train_log.jsonl"
    step, history, skipped, run_of_skips = 0, [], 0, 0
    chash = train_state.train_config_hash(cfg, run_seed, round_, len(items))
    if dist.is_main():  # (it cleans a save killed half-way: one rank, before any other reads)
        st = train_state.load(state_dir)
    dist.barrier()
    if not dist.is_main():
        st = train_state.load(state_dir, clean=False)
    if st is not None and st["info"]["config_hash"] != chash:
        log.warning(
            "round %d: %s was saved under another train config or data; training from step 0", round_, state_dir
        )
        st = None
    if st is not None:
        if sharded:
            dist.fsdp_load(net, opt, st["params"], _named_optimizer_state(st["opt"], names))
        else:
            lora.load_lora_state(model, st["params"])
            opt.load_state_dict(st["opt"])
        train_state.set_rng_state(st["rng"])
        info = st["info"]
        step, history, skipped, run_of_skips = info["step"], info["history"], info["skipped"], info["run_of_skips"]
        if pool is not None:
            pool = losses.RewardPool(cfg.kto_kl_pool, info["kto_pool"])
        log.info("round %d: resumed training at step %d/%d", round_, step, total)

    def save() -> None:
        if sharded:  # (every rank gathers; the main rank gets the whole weights and optimizer state)
            trainable, osd = dist.fsdp_state(net, opt)
        if not dist.is_main():  # written once, in the one-process format: any N resumes it
            return
        if sharded:
            osd = _indexed_optimizer_state(osd, names)
        else:
            trainable, osd = {n: p for n, p in net.named_parameters() if p.requires_grad}, opt.state_dict()
        train_state.save(
            state_dir,
            trainable,
            osd,
            {
                "step": step,
                "micro": 0,
                "data_position": step * cfg.grad_accum,
                "history": history,
                "skipped": skipped,
                "run_of_skips": run_of_skips,
                "config_hash": chash,
                "kto_pool": pool.state() if pool is not None else None,
            },
        )
        _write_log(log_path, history)

    net.train()
    cached = None
    if cfg.ref_cache and cfg.method != "rwr":
        cached = reference_cache(ctx, items, cache, latent, round_dir, run_seed, round_, reference, progress)
        extra["ref_cache_draws"] = cached[0].shape[1]
    bar = tqdm(total=total, initial=step, disable=not progress, desc=f"train r{round_} {cfg.method}", unit="step")
    while step < total:
        lr = cfg.lr * min(1.0, (step + 1) / max(1, cfg.warmup))
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad(set_to_none=True)
        z0 = pool.z0() if pool is not None else None  # one reference point for every micro-batch of the step
        batches, records, norms, unit, real_unit = [], [], {}, 0, 0
        for micro in range(cfg.grad_accum):
            index = step * cfg.grad_accum + micro
            idx = batcher.micro(index)
            batch = [items[i] for i in idx]
            gen = torch.Generator().manual_seed(seeds.stream_seed(run_seed, round_, "noise", step, micro))
            draws = ref = None
            if cached is not None:  # epoch e trains on every item's draw e mod K
                errors, draws_for = cached
                k = batcher.epoch(index) % errors.shape[1]
                draws, ref = draws_for(idx, [k] * len(idx)), errors[idx, k].T.reshape(-1)
            # this rank's share: the step's items (and real videos) counted across its micro-batches, j to rank j % N
            n_real = cfg.real_batch_size if ctx.real_term(real) else 0
            mine, mine_real = dist.shard_range(unit, len(batch)), dist.shard_range(real_unit, n_real)
            unit, real_unit = unit + len(batch), real_unit + n_real
            terms = micro_loss(
                ctx,
                batch,
                cache,
                latent,
                gen,
                real,
                seeds.stream_seed(run_seed, round_, "real", step, micro),
                z0,
                draws,
                ref,
                mine,
                mine_real,
            )
            if step == 0 and micro == 0 and not sharded:  # what each term weighs, measured apart once per round
                norms = grad_norms(terms, params)
            scale = float(faults.value("train.loss", torch.tensor(1.0)))
            if terms.total.requires_grad:  # (FSDP averages the ranks' gradients: its shares count N times)
                (terms.total * (scale * (dist.world() if sharded else 1) / cfg.grad_accum)).backward()
            batches.append(batch)
            records.append(dict(terms.record, scale=scale))
        if not sharded:
            dist.sum_gradients(params)  # (every rank then holds the whole step's gradient and takes the same step)
        if dist.world() > 1:  # (every rank's per-sample errors, on the CPU for the exchange)
            records = dist.all_gather([_to_cpu(r) for r in records])
        else:
            records = [records]
        metrics, rewards = _step_metrics(ctx, batches, records, z0)
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm if cfg.max_grad_norm > 0 else 1e12)
        # the step's one read-back from the accelerator (the skip rule below needs the loss before opt.step())
        if hasattr(grad_norm, "full_tensor"):  # (FSDP: a DTensor)
            grad_norm = grad_norm.full_tensor()
        metrics, grad_norm, step_rewards = read_back(metrics, grad_norm, [rewards])
        agg: dict[str, float] = {}
        for m in metrics:
            for k, v in m.items():
                agg[k] = agg.get(k, 0.0) + v / cfg.grad_accum
        agg.update(norms)
        if math.isfinite(agg["loss"]) and math.isfinite(grad_norm):
            _check_spike(cfg, history, agg["loss"], round_, step)
            opt.step()
            run_of_skips = 0
            if pool is not None:
                pool.push(step_rewards)
        else:  # a NaN/Inf never reaches the weights or the optimizer's moments
            opt.zero_grad(set_to_none=True)
            skipped, run_of_skips = skipped + 1, run_of_skips + 1
            agg["skipped"] = True
            log.warning(
                "round %d step %d: loss %s, grad norm %s: step skipped (%d in a row, %d in all)",
                round_,
                step + 1,
                agg["loss"],
                grad_norm,
                run_of_skips,
                skipped,
            )
            if run_of_skips >= cfg.max_skipped_steps:
                raise StageAborted(
                    f"round {round_} train: {run_of_skips} consecutive steps with a non-finite loss or "
                    f"gradient (train.max_skipped_steps={cfg.max_skipped_steps}); lower train.lr or "
                    "check the data"
                )
        step += 1
        agg.update(step=step, lr=lr, grad_norm=grad_norm)
        history.append(agg)
        tracking.train_step(round_, agg)
        faults.point("train.after_step")
        bar.update(1)
        bar.set_postfix(loss=f"{agg['loss']:.4f}", acc=f"{agg.get('implicit_acc', 0):.2f}")
        if step % cfg.log_every == 0 or step == total:
            log.info(
                "round %d step %d/%d %s",
                round_,
                step,
                total,
                " ".join(f"{k}={v:.4g}" for k, v in agg.items() if k not in ("step",)),
            )
        if step % cfg.save_every == 0 and step < total:
            save()
        if dist.any_true(faults.term_requested()):  # (every rank stops at this step)
            save()
            raise faults.Terminated(f"round {round_} train at step {step}")
    bar.close()
    if dist.is_main():
        _write_log(log_path, history)
    tracking.flush()
    if sharded:  # the main rank gets the trained denoiser whole, for the round checkpoint
        net = _unshard(model, net, plain_cls)
    net.eval()
    if cfg.gradient_checkpointing:
        net.disable_gradient_checkpointing()
    if frozen is not None:
        net.requires_grad_(False)
    first, last = history[0], history[-1]
    tail = [h for h in history[-max(1, len(history) // 5) :] if not h.get("skipped")] or history[-1:]
    return {
        "method": cfg.method,
        "steps": total,
        "items": len(items),
        "first_loss": first["loss"],
        "last_loss": last["loss"],
        "mean_loss_last_20pct": sum(h["loss"] for h in tail) / len(tail),
        "implicit_acc_last_20pct": sum(h.get("implicit_acc", 0.0) for h in tail) / len(tail),
        "skipped_steps": skipped,
        **extra,
        **({k: v for k, v in history[0].items() if k.startswith("grad_")} if history else {}),
    }


def reference_cache(
    ctx: StepContext,
    items: list[dict],
    cache: dict,
    latent,
    round_dir: Path,
    run_seed: int,
    round_: int,
    reference: str,
    progress: bool = True,
):
    """The round's cached reference errors (:mod:`.refcache`), computed or read back, and the function that makes
    the draws they belong to: ``(errors [items, K, width], draws_for(item indices, draw indices))``."""
    cfg = ctx.cfg
    k = refcache.draws_used(cfg)
    keys = [refcache.item_key(it) for it in items]
    width = 2 if cfg.method == "dpo" else 1
    shapes = [tuple(latent(it["chosen"] if "chosen" in it else it["sample"]).shape) for it in items]

    def draws_for(idx: list[int], ks: list[int]) -> list[refcache.Draw]:
        return [refcache.draw(ctx.model, cfg, run_seed, round_, keys[i], j, shapes[i]) for i, j in zip(idx, ks)]

    def reference_errors(idx: list[int], ks: list[int]) -> torch.Tensor:
        x, cond, noise, t = inputs(ctx, [items[i] for i in idx], cache, latent, None, draws_for(idx, ks))
        with ctx.reference():
            r = ctx.errors(x, cond, noise, t)
        return r.view(width, len(idx)).T  # a DPO batch is its winners, then its losers

    want = refcache.key(cfg, run_seed, round_, items, reference, k)
    errors = refcache.build(
        Path(round_dir) / refcache.FILE, want, len(items), k, width, reference_errors, cfg.batch_size, progress
    )
    return errors, draws_for


SPIKE_WINDOW = 20


def _check_spike(cfg: TrainConfig, history: list, loss: float, round_: int, step: int) -> None:
    """Stop before a step whose loss exceeds ``loss_spike_factor`` times the mean of the recent good steps."""
    recent = [h["loss"] for h in history if not h.get("skipped")][-SPIKE_WINDOW:]
    if cfg.loss_spike_factor > 0 and recent:
        mean = sum(recent) / len(recent)
        if abs(loss) > cfg.loss_spike_factor * abs(mean):
            raise StageAborted(
                f"round {round_} train: loss {loss:.4g} at step {step + 1} is more than "
                f"train.loss_spike_factor={cfg.loss_spike_factor} times the recent mean {mean:.4g}; "
                "lower train.lr or check the data (the last saved state is before it)"
            )


def trainable(model: VideoModel, cfg: TrainConfig, seed: int | None = None) -> tuple[list, torch.nn.Module | None]:
    """Make the policy trainable as ``cfg`` asks; return (parameters to optimize, the frozen reference or None)."""
    net = model.denoiser
    if cfg.finetune == "full":
        if model.dtype != torch.float32:
            # A full fine-tune trains float32 master weights whatever model_dtype (an optimizer step on bf16 weights
            # rounds away the updates below bf16's resolution), read again from the folder the denoiser was loaded
            # from. Its reference is a float32 copy too: a bf16 one computes other errors than the policy from the
            # first step, since autocast rounds the matmul weights but not norm scales or modulation tables
            # (measured: a first DPO loss of 0.49-0.61 instead of log 2 at beta 5000 on the tiny families).
            if getattr(net, "peft_config", None):
                raise UserError(
                    "train.finetune: full on a policy with unfused LoRA adapters needs model_dtype: float32"
                )
            owner, name = model.denoiser_slot()
            net = lora.master_denoiser(model)
            setattr(owner, name, net)
        frozen = copy.deepcopy(net).requires_grad_(False).eval()
        if cfg.ref_offload:
            frozen.to("cpu")
        params = list(net.parameters())
        for p in params:
            p.requires_grad_(True)
    else:
        # attach() freezes the denoiser: only the adapter trains; the reference is the adapter disabled
        frozen, params = None, lora.attach(model, cfg.lora_rank, cfg.lora_alpha, cfg.lora_targets or None, seed=seed)
    if cfg.gradient_checkpointing:
        if not getattr(net, "_supports_gradient_checkpointing", False):
            raise UserError(f"train.gradient_checkpointing: the {model.family} denoiser does not support it")
        net.enable_gradient_checkpointing()
    return params, frozen


def bitsandbytes():
    try:
        import bitsandbytes as bnb
    except ImportError:
        raise UserError(
            "train.optimizer: adamw8bit needs bitsandbytes; `pip install bitsandbytes` or use optimizer: adamw"
        ) from None
    return bnb


def make_optimizer(cfg: TrainConfig, params: list) -> torch.optim.Optimizer:
    if cfg.optimizer == "adamw8bit":
        return bitsandbytes().optim.AdamW8bit(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


class StepContext:
    """What a micro-batch needs besides its data: the model, the config, and how to run the reference."""

    def __init__(self, model: VideoModel, cfg: TrainConfig, frozen: torch.nn.Module | None, device: torch.device):
        self.model, self.cfg, self.frozen, self.device = model, cfg, frozen, device
        self._switch: lora.ReferenceSwitch | None = None  # a LoRA's reference toggle, resolved at first use
        #: the NLL regularizers' factor: T in likelihood units (losses.nll_scale)
        self.nll_scale = losses.nll_scale(cfg.nll_units, model.train_timesteps)
        #: the round's KTO class weights (:func:`kto_weights`); set by the trainer for a KTO round
        self.kto = {
            "lambda_desirable": cfg.lambda_desirable if cfg.lambda_desirable is not None else 1.0,
            "lambda_undesirable": cfg.lambda_undesirable if cfg.lambda_undesirable is not None else 1.0,
        }
        #: under FSDP: a rank with no item of a micro-batch still runs its passes (on a zero-weighted item)
        self.pad = False

    def autocast(self):
        # bf16 matmuls in the forward pass; per_sample_error and the losses upcast to float32. Low-precision frozen
        # weights (model_dtype) always run under autocast in their dtype, whatever mixed_precision says.
        dtype = torch.bfloat16 if self.cfg.mixed_precision == "bf16" else self.model.dtype
        if dtype != torch.float32:
            return torch.autocast(device_type=self.device.type, dtype=dtype)
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def reference(self):
        """The reference in the denoiser's place: the adapter disabled (LoRA) or the frozen copy swapped in."""
        if self.frozen is None:
            if self._switch is None:
                self._switch = lora.ReferenceSwitch(self.model)
            with self._switch.off():
                yield
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

    def real_term(self, real) -> bool:
        """Whether the micro-batches carry the real-video NLL term."""
        return real is not None and self.cfg.real_batch_size > 0 and self.cfg.lambda_real > 0

    def errors(self, x, cond, noise, t) -> torch.Tensor:
        with self.autocast():
            pred, target = self.model.predict_and_target(x, cond, noise, t)
        return losses.per_sample_error(pred, target)


class Metrics(dict):
    """A micro-batch's metrics: detached 0-d tensors on the training device, which the trainer reads back together
    once per step (:func:`read_back`, through ``items()``). Indexing one gives its number, and waits for the device
    to get it: for tests and debugging, not for the step."""

    def __getitem__(self, key):
        v = super().__getitem__(key)
        return v.item() if torch.is_tensor(v) else v


@dataclasses.dataclass
class Terms:
    """A micro-batch's loss in its parts, each already weighted: ``total`` is their sum."""

    preference: torch.Tensor
    winner_nll: torch.Tensor | None = None
    real_nll: torch.Tensor | None = None
    metrics: Metrics = dataclasses.field(default_factory=Metrics)
    #: KTO's implicit rewards of the micro-batch (detached), for the reference-point pool
    rewards: torch.Tensor = dataclasses.field(default_factory=lambda: torch.zeros(0))
    #: this rank's share of the micro-batch and its per-sample errors (detached, CPU), for :func:`_step_metrics`
    record: dict = dataclasses.field(default_factory=dict)

    @property
    def total(self) -> torch.Tensor:
        return sum((t for t in (self.winner_nll, self.real_nll) if t is not None), self.preference)


def grad_norms(terms: Terms, params: list) -> dict[str, float]:
    """The gradient norm of each weighted term apart, and the cosine between the preference and real-video ones.

    Under a launcher each rank holds its share of the micro-batch's terms: the gradients are summed across ranks first
    (a rank with no item of the micro-batch holds zero terms and adds zeros)."""
    out, grads = {}, {}
    for name in ("preference", "winner_nll", "real_nll"):
        term = getattr(terms, name)
        if term is None or (not term.requires_grad and dist.world() == 1):
            continue
        g = (
            torch.autograd.grad(term, params, retain_graph=True, allow_unused=True)
            if term.requires_grad
            else [None] * len(params)
        )
        flat = dist.sum_tensor(
            torch.cat([(x if x is not None else torch.zeros_like(p)).flatten().float() for x, p in zip(g, params)])
        )
        grads[name] = flat
        out[f"grad_norm_{name}"] = flat.norm().item()
    if "preference" in grads and "real_nll" in grads:
        out["grad_cos_preference_real"] = F.cosine_similarity(grads["preference"], grads["real_nll"], dim=0).item()
    return out


def _dropout(ctx: StepContext, conds: list[dict], cache: dict, gen: torch.Generator, n: int) -> list[dict]:
    """Caption dropout: each of ``n`` items keeps its conditioning or (with probability ``caption_dropout``) takes the
    empty prompt's; ``conds`` may hold ``k * n`` entries (a DPO batch: winners then losers), item i's draw applying to
    entries i, i + n, ... so a pair's two samples share it. No draw at all when off (the old random stream)."""
    if ctx.cfg.caption_dropout <= 0:
        return conds
    drop = (torch.rand(n, generator=gen) < ctx.cfg.caption_dropout).tolist()
    return [cache[""] if drop[i % n] else c for i, c in enumerate(conds)]


def inputs(
    ctx: StepContext,
    batch,
    cache,
    latent,
    gen: torch.Generator | None,
    draws: list[refcache.Draw] | None = None,
    mine: list[int] | None = None,
) -> tuple[torch.Tensor, dict, torch.Tensor, torch.Tensor]:
    """A micro-batch's model inputs on the device: latents, conditioning (after caption dropout), noise, timesteps,
    for its items ``mine`` (default: all; under a launcher this rank's share).

    A DPO batch holds its winners, then its losers, each pair sharing noise, timestep and dropout. Noise, timesteps
    and dropout come from ``gen`` (live: one stream for the whole micro-batch, drawn in the one-process order and then
    sliced, so an item's draws are its own whatever rank computes it), or with ``draws`` (one per item of the
    micro-batch) from each item's fixed draw (:mod:`.refcache`)."""
    model, cfg, device = ctx.model, ctx.cfg, ctx.device
    n = len(batch)
    mine = list(range(n)) if mine is None else list(mine)
    key = "chosen" if cfg.method == "dpo" else "sample"
    if cfg.method == "dpo":
        conds = [cache[b["chosen"]["prompt"]] for b in batch] + [cache[b["rejected"]["prompt"]] for b in batch]
    else:
        conds = [cache[b["sample"]["prompt"]] for b in batch]
    if draws is None:
        noise = torch.randn((n,) + tuple(latent(batch[0][key]).shape), generator=gen)
        t = model.sample_timesteps(n, gen, tuple(cfg.timestep_window))
        conds = _dropout(ctx, conds, cache, gen, n)
        noise, t = noise[mine], t[mine]
    else:
        noise, t = torch.stack([draws[i].noise for i in mine]), torch.cat([draws[i].t for i in mine])
        conds = [cache[""] if draws[i % n].drop else c for i, c in enumerate(conds)]
    if cfg.method == "dpo":
        x = torch.cat(
            [
                torch.stack([latent(batch[i]["chosen"]) for i in mine]),
                torch.stack([latent(batch[i]["rejected"]) for i in mine]),
            ]
        )
        conds = [conds[i] for i in mine] + [conds[n + i] for i in mine]
        noise, t = torch.cat([noise, noise]), torch.cat([t, t])
    else:
        x = torch.stack([latent(batch[i]["sample"]) for i in mine])
        conds = [conds[i] for i in mine]
    return to_device(x, device), _cat(conds), to_device(noise, device), to_device(t, device)


def micro_loss(
    ctx: StepContext,
    batch,
    cache,
    latent,
    gen,
    real,
    real_seed,
    z0: float | None = None,
    draws: list[refcache.Draw] | None = None,
    ref: torch.Tensor | None = None,
    mine: list[int] | None = None,
    mine_real: list[int] | None = None,
) -> Terms:
    """A micro-batch's loss terms, computed on its items ``mine`` and real videos ``mine_real`` (default: all; under
    a launcher this rank's share). With ``draws`` and ``ref`` (the reference's cached errors on those draws for the
    whole micro-batch, winners then losers) no reference forward runs.

    Every random draw is made for the whole micro-batch in the one-process order and then sliced (:func:`inputs`).
    Each loss is a plain mean over items, so the terms are scaled by the share (``len(mine) / n``): summed over ranks
    they are the micro-batch's terms, and so are their gradients. ``Terms.record`` keeps the share's per-sample errors
    (detached, on the device) for :func:`_step_metrics`."""
    model, cfg, device = ctx.model, ctx.cfg, ctx.device
    n = len(batch)
    mine = list(range(n)) if mine is None else list(mine)
    # Under FSDP every rank must run the same passes: a rank with no item computes the first one, counted zero times
    share = len(mine) / n  # (exactly 1.0 with one process)
    record: dict = {"idx": mine}
    if not mine and ctx.pad:
        mine = [0]
    if mine:
        x, cond, noise, t = inputs(ctx, batch, cache, latent, gen, draws, mine)
        e = ctx.errors(x, cond, noise, t)
        r = None
        if ref is not None:
            rows = mine + [n + i for i in mine] if cfg.method == "dpo" else mine
            r = to_device(ref[rows], device)
        elif cfg.method != "rwr":  # LiFT's reward-weighted loss has no reference
            with torch.no_grad(), ctx.reference():
                r = ctx.errors(x, cond, noise, t)
        terms = _terms(ctx, [batch[i] for i in mine], e, r, z0)
        if share != 1.0:
            terms.preference = terms.preference * share
            if terms.winner_nll is not None:
                terms.winner_nll = terms.winner_nll * share
        if record["idx"]:
            record.update(e=e.detach().float(), r=None if r is None else r.detach().float())
    else:  # no item of this micro-batch here: zero terms, so that the per-term gradient norms add up across ranks
        if draws is None:  # (the draws of the micro-batch still come off the stream: the real videos' follow them)
            key = "chosen" if cfg.method == "dpo" else "sample"
            torch.randn((n,) + tuple(latent(batch[0][key]).shape), generator=gen)
            model.sample_timesteps(n, gen, tuple(cfg.timestep_window))
            _dropout(ctx, [], cache, gen, n)
        zero = torch.zeros((), device=device)
        terms = Terms(preference=zero, winner_nll=zero if cfg.method == "dpo" and cfg.lambda_winner > 0 else None)
    if ctx.real_term(real):
        nr = cfg.real_batch_size
        mine_real = list(range(nr)) if mine_real is None else list(mine_real)
        real_share = len(mine_real) / nr
        record["real_idx"] = mine_real
        if not mine_real and ctx.pad:
            mine_real = [0]
        if real.encoded:
            prompts, xr = real.draw_latents(nr, real_seed)
            rconds = [cache[p] for p in prompts]
        else:  # the world's renderer: pixels, encoded here (its "VAE" is the identity)
            prompts, clips = real.draw(nr, real_seed)
            xr = model.encode_video(clips)
            with torch.no_grad():
                enc = model.encode_prompts(prompts)
            rconds = [{k: v[i : i + 1] for k, v in enc.items()} for i in range(len(prompts))]
        nz = torch.randn(tuple(xr.shape), generator=gen)
        tr = model.sample_timesteps(len(prompts), gen)
        rc = _dropout(ctx, rconds, cache, gen, len(prompts))
        if mine_real:
            e_real = ctx.errors(
                to_device(xr[mine_real], device),
                _cat([rc[j] for j in mine_real]),
                to_device(nz[mine_real], device),
                to_device(tr[mine_real], device),
            )
            nll = losses.nll(e_real)
            terms.real_nll = cfg.lambda_real * ctx.nll_scale * nll * real_share
            terms.metrics["nll_real"] = nll.detach()
            if record["real_idx"]:
                record["e_real"] = e_real.detach().float()
        else:
            terms.real_nll = torch.zeros((), device=device)
    terms.record = record
    return terms


_micro_loss = micro_loss  # (its earlier name)


def _terms(ctx: StepContext, batch: list, e: torch.Tensor, r: torch.Tensor | None, z0: float | None) -> Terms:
    """A batch's preference terms from its per-sample errors ``e`` (policy) and ``r`` (reference); for DPO the
    winners' rows first, then the losers'."""
    cfg, device = ctx.cfg, e.device
    n = len(batch)
    terms = Terms(preference=e.new_zeros(()))
    if cfg.method == "dpo":
        w = to_device(torch.tensor([b["weight"] for b in batch]), device)
        out = losses.dpo(e[:n], e[n:], r[:n], r[n:], cfg.beta, weight=w)
        terms.preference = out.loss
        if cfg.lambda_winner > 0:
            terms.winner_nll = cfg.lambda_winner * ctx.nll_scale * losses.nll(e[:n])
        out.metrics["nll_winner"] = e[:n].detach().mean()
    elif cfg.method == "kto":
        des = to_device(torch.tensor([b["desirable"] for b in batch]), device)
        out = losses.kto(e, r, des, cfg.beta, ctx.kto["lambda_desirable"], ctx.kto["lambda_undesirable"], z0=z0)
        terms.preference = out.loss
        terms.rewards = losses.kto_rewards(e, r, cfg.beta).detach().float()
    else:
        reward = to_device(torch.tensor([b["score"] for b in batch]), device)
        out = losses.reward_weighted(e, reward)
        terms.preference = out.loss
    terms.metrics = Metrics(out.metrics)
    return terms


def _to_cpu(record: dict) -> dict:
    return {k: v.cpu() if torch.is_tensor(v) else v for k, v in record.items()}


def _step_metrics(
    ctx: StepContext, batches: list, records: list, z0: float | None
) -> tuple[list[Metrics], torch.Tensor]:
    """Each micro-batch's metrics (:class:`Metrics`, read back by :func:`read_back`) and the step's KTO rewards,
    from every rank's per-sample errors (``records[rank][micro]``) put back in item order: the numbers a single
    process computes for the same step, whatever the number of ranks."""
    cfg = ctx.cfg
    out, rewards = [], []
    for m, batch in enumerate(batches):
        n = len(batch)
        rows = 2 * n if cfg.method == "dpo" else n
        parts = [per_rank[m] for per_rank in records]
        scale = 1.0
        for rec in parts:
            scale *= rec["scale"]
        if len(parts) == 1 and parts[0]["idx"] == list(range(n)):  # one process: the errors as they are
            e, r, e_real = parts[0]["e"], parts[0]["r"], parts[0].get("e_real")
        else:
            device = next(rec["e"].device for rec in parts if rec["idx"])
            e = torch.zeros(rows, device=device)
            r = torch.zeros(rows, device=device) if cfg.method != "rwr" else None
            e_real = None
            for rec in parts:
                idx = rec["idx"]
                if idx:
                    at = idx + [n + i for i in idx] if cfg.method == "dpo" else idx
                    e[at] = rec["e"]
                    if r is not None:
                        r[at] = rec["r"]
                if rec.get("real_idx"):
                    if e_real is None:
                        e_real = torch.zeros(cfg.real_batch_size, device=device)
                    e_real[rec["real_idx"]] = rec["e_real"].to(device)
        terms = _terms(ctx, batch, e, r, z0)
        if e_real is not None:
            nll = losses.nll(e_real)
            terms.real_nll = cfg.lambda_real * ctx.nll_scale * nll
            terms.metrics["nll_real"] = nll.detach()
        terms.metrics["loss"] = (terms.total * scale).detach()
        rewards.append(terms.rewards)
        out.append(terms.metrics)
    return out, torch.cat(rewards)


def read_back(
    metrics: list[dict], grad_norm: torch.Tensor, rewards: list[torch.Tensor]
) -> tuple[list[dict[str, float]], float, list[float]]:
    """A step's metrics (one dict per micro-batch), gradient norm and KTO rewards as Python numbers, read back from
    the device in one transfer: each ``.item()`` waits for the accelerator to finish everything queued before it."""
    device = grad_norm.device
    tensors = [{k: v for k, v in m.items() if torch.is_tensor(v)} for m in metrics]  # (items(): the raw values)
    parts = [v.detach().float().reshape(1).to(device) for m in tensors for v in m.values()]
    parts.append(grad_norm.detach().float().reshape(1))
    parts += [r.detach().float().reshape(-1).to(device) for r in rewards if r.numel()]
    flat = torch.cat(parts).tolist()
    out, i = [], 0
    for m, ts in zip(metrics, tensors):
        row = dict(m.items())
        for k in ts:
            row[k], i = flat[i], i + 1
        out.append(row)
    return out, flat[i], flat[i + 1 :]


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``x`` (drawn or stored on the CPU) on ``device``: through pinned memory and without waiting on a CUDA device
    (a pageable copy blocks until the device has run everything queued before it); ``x`` itself on the CPU."""
    if device.type != "cuda":
        return x.to(device)
    return x.pin_memory().to(device, non_blocking=True)


def _sharding(cfg: TrainConfig, net: torch.nn.Module, frozen, device) -> bool:
    """Shard a full fine-tune's denoiser and frozen reference with FSDP2 when the launch asks for FSDP; return whether
    it did. DeepSpeed is refused: FSDP2 shards what ZeRO-3 does, and one engine is what vipo can test."""
    kind = dist.engine()
    if kind == "deepspeed":
        raise UserError(dist.DEEPSPEED_REFUSED)
    if kind != "fsdp":
        return False
    if cfg.finetune != "full":
        raise UserError(
            "train.finetune: lora under an FSDP launch: a LoRA's weights are small and train "
            "data-parallel; launch with torchrun or configs/accelerate/ddp.yaml (FSDP is for "
            "finetune: full)"
        )
    if cfg.ref_offload:
        raise UserError(
            "train.ref_offload: under FSDP the frozen reference is sharded over the GPUs already; "
            "set ref_offload: false"
        )
    n = dist.world()
    if cfg.batch_size % n or (cfg.real_batch_size % n and cfg.lambda_real > 0):
        log.warning(
            "FSDP on %d processes: train.batch_size %d / real_batch_size %d are not multiples of it; ranks "
            "without an item run padding passes (set batch_size to a multiple of %d and divide grad_accum "
            "for the same effective batch, faster)",
            n,
            cfg.batch_size,
            cfg.real_batch_size,
            n,
        )
    dist.fsdp_shard(net, device)
    dist.fsdp_shard(frozen, device)
    log.info("FSDP2: the denoiser and its reference sharded over %d processes", n)
    return True


def _unshard(model: VideoModel, net: torch.nn.Module, cls: type) -> torch.nn.Module:
    """The FSDP-trained denoiser as one plain module in the model's denoiser slot (the main rank: the others keep
    their shard, which nothing reads after training)."""
    weights, _ = dist.fsdp_state(net)
    if not dist.is_main():
        return net
    plain = cls.from_config(net.config)
    plain.load_state_dict(weights)
    owner, name = model.denoiser_slot()
    setattr(owner, name, plain.to(model.device if isinstance(model.device, str) else "cpu"))
    return plain


def _indexed_optimizer_state(osd: dict, names: list[str]) -> dict:
    """A name-keyed optimizer state (FSDP's) in ``torch.optim``'s own layout, parameters by their index."""
    index = {n: i for i, n in enumerate(names)}
    return {
        "state": {index[k]: v for k, v in osd["state"].items()},
        "param_groups": [dict(g, params=[index[k] for k in g["params"]]) for g in osd["param_groups"]],
    }


def _named_optimizer_state(osd: dict, names: list[str]) -> dict:
    """The inverse of :func:`_indexed_optimizer_state`."""
    return {
        "state": {names[int(k)]: v for k, v in osd["state"].items()},
        "param_groups": [dict(g, params=[names[int(i)] for i in g["params"]]) for g in osd["param_groups"]],
    }


def _write_log(path: Path, history: list) -> None:
    atomic.write_text(path, "".join(json.dumps(h) + "\n" for h in history))
