"""The training-step contenders: vipo's own steps, and the same step written as two diffusers examples write it.

Every contender is one optimizer step (zero_grad, forward, backward, clip, read the metrics back, AdamW step) of one
LoRA (rank 16 on the attention projections) on the same 4 pairs, i.e. the same 8 videos and 4 prompts:

- ``sft``: vipo's denoising loss on the 8 videos (the trainer's inputs, errors and read-back; no reference);
- ``dpo``: vipo's Diffusion-DPO step (``trainer.micro_loss``: winner NLL, the reference live); ``dpo_cached``: the same
  with ``ref_cache: 4`` (the reference's errors read from the round's cache); ``kto``, ``kto_cached``: Diffusion-KTO on
  the 8 videos as single examples (reference point from a pool); ``rwr``: LiFT's reward-weighted loss (no reference);
- ``diffusers_lora``: the step of diffusers' ``examples/cogvideo/train_cogvideox_lora.py`` (SFT): videos VAE-encoded
  once before training and a posterior sample drawn per step, the prompts tokenized and run through the text encoder
  every step, rotary tables built every step, the x0 loss with ``1 / (1 - alpha_bar)`` weights, clipping over every
  transformer parameter, ``loss.item()`` each step;
- ``diffusers_dpo``: the step of diffusers' ``examples/research_projects/diffusion_dpo/train_diffusion_dpo.py`` adapted
  to CogVideoX (v-prediction, rotary tables): every video VAE-encoded (a posterior sample) every step, the prompts run
  through the text encoder every step (tokenized beforehand, as its dataset transform does), the reference by
  ``disable_adapters()``/``enable_adapters()`` on the model, four ``.item()`` logs each step.

vipo's steps run inside ``model.pinned()``, as a training round does (the caller enters it). Both examples are
re-implemented here from their published logic (their code is not copied); what they do outside the
step (data loading, video decoding, tokenization in the data loader) is left out, which favours them.
"""

from __future__ import annotations

import dataclasses
import itertools
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from .. import losses
from ..config import TrainConfig
from ..train import lora, trainer
from . import tiny
from .timing import Calls

#: the contenders that are training steps (the rest are their pieces, timed beside them)
STEPS = ("sft", "dpo", "dpo_cached", "kto", "kto_cached", "rwr", "diffusers_lora", "diffusers_dpo")


@dataclass
class StepBench:
    """The model, data and optimizer every contender shares, and the contenders themselves."""

    model: object
    params: list
    opt: torch.optim.Optimizer
    device: torch.device
    pairs: list[dict]
    examples: list[dict]
    cache: dict
    latents: dict
    pixels: torch.Tensor
    epochs: int
    ref_cache: int
    calls: Calls
    contenders: dict = field(default_factory=dict)


def _cfg(method: str, base: TrainConfig | None = None, **over) -> TrainConfig:
    """A step's train config: ``base`` (default: vipo's defaults, micro-batch 4, no real-video term) for ``method``."""
    base = base or TrainConfig(lambda_real=0.0, real_batch_size=0, batch_size=4, grad_accum=1)
    cfg = dataclasses.replace(base, method=method, **over)
    cfg.validate()
    return cfg


def vipo_contenders(
    model,
    params: list,
    opt,
    device: torch.device,
    pairs: list[dict],
    examples: list[dict],
    cache: dict,
    latent,
    ref_cache: int = 4,
    base: TrainConfig | None = None,
    methods: tuple[str, ...] = ("sft", "dpo", "dpo_cached", "kto", "kto_cached", "rwr"),
    frozen=None,
) -> dict:
    """vipo's steps as zero-argument calls: ``sft`` (the denoising loss on ``examples``' videos), ``dpo`` on
    ``pairs``, ``kto`` and ``rwr`` on ``examples``, ``*_cached`` with the reference errors cached (``ref_cache``
    draws), and the pieces ``ref_cache_pass`` (building the DPO cache) and ``forward_nograd`` (the reference's work in
    a live step). Each step is the trainer's own: ``trainer.inputs``/``micro_loss``, backward, clipping, one
    ``read_back``, AdamW; ``frozen`` is a full fine-tune's reference (None: the LoRA's adapter-disabled network)."""
    seeds = itertools.count()

    def step(loss_fn) -> None:
        opt.zero_grad(set_to_none=True)
        metrics, rewards, loss = loss_fn()
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, 1.0)
        trainer.read_back([metrics], grad_norm, [rewards])
        opt.step()

    def vipo(cfg: TrainConfig, items: list[dict], cached=None):
        ctx = trainer.StepContext(model, cfg, frozen, device)
        pool = losses.RewardPool(cfg.kto_kl_pool) if cfg.method == "kto" else None
        k = itertools.count()

        def loss_fn():
            gen = torch.Generator().manual_seed(next(seeds))
            draws = ref = None
            if cached is not None:
                errors, draws_for = cached
                j = next(k) % errors.shape[1]
                idx = list(range(len(items)))
                draws, ref = draws_for(idx, [j] * len(idx)), errors[idx, j].T.reshape(-1)
            terms = trainer.micro_loss(
                ctx, items, cache, latent, gen, None, 0, pool.z0() if pool is not None else None, draws, ref
            )
            return terms.metrics, terms.rewards, terms.total

        return lambda: step(loss_fn)

    sft_ctx = trainer.StepContext(model, _cfg("rwr", base), frozen, device)

    def sft_loss():
        x, cond, noise, t = trainer.inputs(sft_ctx, examples, cache, latent, torch.Generator().manual_seed(next(seeds)))
        loss = losses.nll(sft_ctx.errors(x, cond, noise, t))
        return {"loss": loss.detach()}, torch.zeros(0), loss

    def reference_cache(method: str, items: list[dict]):
        cfg = _cfg(method, base, ref_cache=ref_cache)
        ctx = trainer.StepContext(model, cfg, frozen, device)
        with tempfile.TemporaryDirectory() as tmp:
            return trainer.reference_cache(ctx, items, cache, latent, Path(tmp), 0, 1, method, progress=False)

    def forward_nograd():
        with torch.no_grad(), sft_ctx.reference():
            x, cond, noise, t = trainer.inputs(sft_ctx, examples, cache, latent, torch.Generator().manual_seed(0))
            sft_ctx.errors(x, cond, noise, t)

    out = {}
    for name in methods:
        method, _, cached = name.partition("_")
        if name == "sft":
            out[name] = lambda: step(sft_loss)
        elif cached:
            items = pairs if method == "dpo" else examples
            out[name] = vipo(_cfg(method, base, ref_cache=ref_cache), items, reference_cache(method, items))
        else:
            out[name] = vipo(_cfg(method, base), pairs if method == "dpo" else examples)
    out["ref_cache_pass"] = lambda: reference_cache("dpo", pairs)
    out["forward_nograd"] = forward_nograd
    return out


def build(
    size: tiny.Size = tiny.BENCH,
    device: str = "cpu",
    pairs: int = 4,
    epochs: int = 32,
    ref_cache: int = 4,
    rank: int = 16,
) -> StepBench:
    """The bench model with a fresh LoRA, ``pairs`` pairs of videos (pixels and their latents) and every contender."""
    device = torch.device(device)
    model = tiny.cogvideox_model(size, str(device))
    params = lora.attach(model, rank, rank, seed=0)
    opt = torch.optim.AdamW(params, lr=1e-4)
    pixels = tiny.videos(2 * pairs, size)
    prompts = [tiny.PROMPTS[i % len(tiny.PROMPTS)] for i in range(pairs)]
    with torch.no_grad():
        lat = model.encode_video(pixels.numpy())
        enc = model.encode_prompts(sorted(set(prompts)) + [""])
    ids = [f"v{i}" for i in range(2 * pairs)]
    latents = dict(zip(ids, lat))
    cache = {p: {k: v[i : i + 1] for k, v in enc.items()} for i, p in enumerate(sorted(set(prompts)) + [""])}
    pair_items, examples = items(ids, prompts)
    calls = Calls(text_encoder=model.pipe.text_encoder, vae=(model.pipe.vae, "encode"))
    b = StepBench(model, params, opt, device, pair_items, examples, cache, latents, pixels, epochs, ref_cache, calls)
    b.contenders.update(
        vipo_contenders(model, params, opt, device, pair_items, examples, cache, lambda s: latents[s["id"]], ref_cache)
    )
    b.contenders["diffusers_lora"] = diffusers_lora_step(b)
    b.contenders["diffusers_dpo"] = diffusers_dpo_step(b)
    # the encoders' pieces: a VAE encode of the 8 clips, the text encoder on the 4 prompts
    b.contenders["vae_encode"] = lambda: _posterior(model, pixels)
    b.contenders["text_encode"] = lambda: model.encode_prompts(prompts)
    return b


def items(ids: list[str], prompts: list[str]) -> tuple[list[dict], list[dict]]:
    """DPO pairs (ids 2i, 2i+1 on prompt i) and the same videos as KTO/RWR examples (even ids desirable)."""
    pairs = [
        {"chosen": {"id": ids[2 * i], "prompt": p}, "rejected": {"id": ids[2 * i + 1], "prompt": p}, "weight": 1.0}
        for i, p in enumerate(prompts)
    ]
    examples = [
        {
            "sample": {"id": ids[i], "prompt": prompts[i // 2]},
            "desirable": i % 2 == 0,
            "score": 0.9 if i % 2 == 0 else 0.05,
        }
        for i in range(2 * len(prompts))
    ]
    return pairs, examples


def _rotary(model, latents: torch.Tensor):
    """The rotary tables, built from scratch as the examples build them in every step."""
    s = model.pipe.vae_scale_factor_spatial
    return model.pipe._prepare_rotary_positional_embeddings(
        latents.shape[-2] * s, latents.shape[-1] * s, latents.shape[1], latents.device
    )


def _posterior(model, pixels: torch.Tensor):
    """The VAE's posterior for uint8 clips [B, F, H, W, 3] (``vae.encode(video).latent_dist``)."""
    return model.vae.encode(model.pixels(pixels.numpy())).latent_dist


def diffusers_lora_step(b: StepBench):
    """train_cogvideox_lora.py's step (SFT) on the bench's 8 videos."""
    model, pipe = b.model, b.model.pipe
    net, sched = pipe.transformer, pipe.scheduler
    with torch.no_grad():
        posteriors = [_posterior(model, b.pixels[i : i + 1]) for i in range(len(b.pixels))]  # once, before training
    prompts = [e["sample"]["prompt"] for e in b.examples]
    scaling = model.vae.config.scaling_factor

    def step() -> None:
        b.opt.zero_grad(set_to_none=True)
        # collate: a posterior sample per video, [B, C, F, H, W] -> [B, F, C, H, W]
        videos = torch.cat([p.sample() * scaling for p in posteriors]).permute(0, 2, 1, 3, 4).float()
        # compute_prompt_embeddings: tokenize and encode every step
        ids = pipe.tokenizer(
            prompts,
            padding="max_length",
            max_length=net.config.max_text_seq_length,
            truncation=True,
            add_special_tokens=True,
            return_tensors="pt",
        ).input_ids
        with torch.no_grad():
            prompt_embeds = pipe.text_encoder(ids.to(b.device))[0]
        noise = torch.randn_like(videos)
        t = torch.randint(0, sched.config.num_train_timesteps, (len(videos),), device=videos.device).long()
        rotary = _rotary(model, videos)
        noisy = sched.add_noise(videos, noise, t)
        out = net(
            hidden_states=noisy,
            encoder_hidden_states=prompt_embeds,
            timestep=t,
            image_rotary_emb=rotary,
            return_dict=False,
        )[0]
        pred = sched.get_velocity(out, noisy, t)
        weights = 1 / (1 - sched.alphas_cumprod[t])
        while weights.dim() < pred.dim():
            weights = weights.unsqueeze(-1)
        loss = torch.mean((weights * (pred - videos) ** 2).reshape(len(videos), -1), dim=1).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        b.opt.step()
        loss.detach().item()

    return step


def diffusers_dpo_step(b: StepBench, beta: float = 2500.0):
    """train_diffusion_dpo.py's step, adapted to CogVideoX, on the bench's 4 pairs."""
    model, pipe = b.model, b.model.pipe
    net, sched = pipe.transformer, pipe.scheduler
    n = len(b.pairs)
    # the dataset holds each pair's two clips; winners first, then losers, as the example's chunk(2) splits them
    order = [2 * i for i in range(n)] + [2 * i + 1 for i in range(n)]
    pixels = b.pixels[order]
    ids = pipe.tokenizer(
        [p["chosen"]["prompt"] for p in b.pairs],
        padding="max_length",
        max_length=net.config.max_text_seq_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids
    scaling = model.vae.config.scaling_factor

    def step() -> None:
        b.opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            latents = torch.cat([_posterior(model, pixels[i : i + 8]).sample() for i in range(0, len(pixels), 8)])
            latents = (latents * scaling).permute(0, 2, 1, 3, 4).float()
        noise = torch.randn_like(latents).chunk(2)[0].repeat(2, 1, 1, 1, 1)
        t = torch.randint(0, sched.config.num_train_timesteps, (n,), device=latents.device).long().repeat(2)
        noisy = sched.add_noise(latents, noise, t)
        with torch.no_grad():
            hidden = pipe.text_encoder(ids.to(b.device))[0].repeat(2, 1, 1)
        rotary = _rotary(model, latents)
        pred = net(
            hidden_states=noisy, encoder_hidden_states=hidden, timestep=t, image_rotary_emb=rotary, return_dict=False
        )[0]
        target = sched.get_velocity(latents, noise, t)
        model_losses = F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=[1, 2, 3, 4])
        model_w, model_l = model_losses.chunk(2)
        raw_model_loss = 0.5 * (model_w.mean() + model_l.mean())
        net.disable_adapters()
        with torch.no_grad():
            ref = net(
                hidden_states=noisy,
                encoder_hidden_states=hidden,
                timestep=t,
                image_rotary_emb=rotary,
                return_dict=False,
            )[0].detach()
            ref_losses = F.mse_loss(ref.float(), target.float(), reduction="none").mean(dim=[1, 2, 3, 4])
            ref_w, ref_l = ref_losses.chunk(2)
            raw_ref_loss = ref_losses.mean()
        net.enable_adapters()
        logits = (ref_w - ref_l) - (model_w - model_l)
        loss = -F.logsigmoid(beta * logits).mean()
        acc = (logits > 0).sum().float() / logits.size(0) + 0.5 * (logits == 0).sum().float() / logits.size(0)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(b.params, 1.0)
        b.opt.step()
        for v in (loss, raw_model_loss, raw_ref_loss, acc):
            v.detach().item()

    return step


#: (figure, numerator, denominator, per): the ratios of the step table; ``per`` scales both to the same unit
RATIOS = [
    ("DPO / SFT, live reference", "dpo", "sft"),
    ("DPO / SFT, ref_cache 4 (step)", "dpo_cached", "sft"),
    ("KTO / SFT, live reference", "kto", "sft"),
    ("KTO / SFT, ref_cache 4 (step)", "kto_cached", "sft"),
    ("RWR / SFT", "rwr", "sft"),
    ("vipo SFT / diffusers CogVideoX-LoRA example (per video)", "sft", "diffusers_lora"),
    ("vipo DPO / diffusers CogVideoX-LoRA example (per video)", "dpo", "diffusers_lora"),
    ("vipo DPO, ref_cache 4 / diffusers CogVideoX-LoRA example (per video)", "dpo_cached", "diffusers_lora"),
    ("vipo DPO / diffusers Diffusion-DPO example (per pair)", "dpo", "diffusers_dpo"),
    ("vipo DPO, ref_cache 4 / diffusers Diffusion-DPO example (per pair)", "dpo_cached", "diffusers_dpo"),
]


def encoder_calls(b: StepBench) -> dict[str, dict[str, float]]:
    """Text-encoder and VAE rows per training sample inside one step of each contender (hooks on both encoders)."""
    out = {}
    for name in STEPS:
        fn = b.contenders[name]
        samples = 2 * len(b.pairs)  # every contender trains on the 8 videos
        with b.calls.counting() as c:
            fn()
        out[name] = {"text_encoder": c.rows["text_encoder"] / samples, "vae": c.rows["vae"] / samples}
    return out
