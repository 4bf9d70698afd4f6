"""``vipo bench --gpu``: real-size CogVideoX-2B, CogVideoX-5B and Wan 2.1 1.3B on one GPU, in bf16, random weights.

Nothing is downloaded: each transformer and VAE is built from its published configuration (the values of the
checkpoints' ``config.json``, written out below; diffusers' conversion scripts name the same ones), with random
weights, directly on the GPU. The text encoders are not built: a round trains and samples from cached text embeddings,
so random embeddings of the encoder's shape stand in for them (T5-XXL's 226 x 4096 for CogVideoX, UMT5-XXL's 512 x
4096 for Wan).

Per model, under its recipe's settings (``configs/*.yaml``: weights in bf16, bf16 autocast, LoRA rank or full fine-tune,
gradient checkpointing, one pair per micro-batch), at the recipe's clip size:

- DPO (live and with ``ref_cache``), KTO and SFT step seconds and peak memory (``max_memory_allocated``), the steps
  interleaved; an out-of-memory step is reported as OOM and the bench goes on;
- model FLOPs utilization: the step's FLOPs counted by torch's FlopCounterMode on the meta device with gradient
  checkpointing off (model FLOPs, no recomputation), over the median step time and the GPU's dense bf16 peak;
- generation: seconds per sampler step (classifier-free guidance batch) times the recipe's steps, plus one VAE decode
  at the recipe's tiling, per video.

It keeps to ``budget_s`` (default 540 s, inside the 10 minutes a lent GPU gives a command): a measurement that would
start past it is skipped and reported so. The section is appended to the report (``--out``). ``--tiny`` runs the same
code on tiny configurations on the CPU, as ``make test`` does.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import statistics
import time
from pathlib import Path

import torch

from ..config import RunConfig, load
from ..io import atomic
from ..train import trainer
from .timing import Machine, interleave, peak_memory

log = logging.getLogger(__name__)

#: CogVideoX-2B (THUDM/CogVideoX-2b transformer/config.json; the class defaults): 30 layers x 30 heads x 64
COGVIDEOX_2B = dict(
    num_attention_heads=30,
    attention_head_dim=64,
    in_channels=16,
    out_channels=16,
    flip_sin_to_cos=True,
    freq_shift=0,
    time_embed_dim=512,
    text_embed_dim=4096,
    num_layers=30,
    dropout=0.0,
    attention_bias=True,
    sample_width=90,
    sample_height=60,
    sample_frames=49,
    patch_size=2,
    temporal_compression_ratio=4,
    max_text_seq_length=226,
    activation_fn="gelu-approximate",
    timestep_activation_fn="silu",
    norm_elementwise_affine=True,
    norm_eps=1e-5,
    spatial_interpolation_scale=1.875,
    temporal_interpolation_scale=1.0,
    use_rotary_positional_embeddings=False,
    use_learned_positional_embeddings=False,
)
#: CogVideoX-5B (THUDM/CogVideoX-5b): 42 layers x 48 heads x 64, rotary position embeddings
COGVIDEOX_5B = dict(COGVIDEOX_2B, num_attention_heads=48, num_layers=42, use_rotary_positional_embeddings=True)
#: the CogVideoX 3D VAE (both checkpoints; scaling factor 1.15258426 for 2B, 0.7 for 5B)
COGVIDEOX_VAE = dict(
    in_channels=3,
    out_channels=3,
    block_out_channels=(128, 256, 256, 512),
    latent_channels=16,
    layers_per_block=3,
    norm_num_groups=32,
    temporal_compression_ratio=4,
    sample_height=480,
    sample_width=720,
)
#: CogVideoX's scheduler (the checkpoints' scheduler_config.json; vipo samples with its DPM twin)
COGVIDEOX_SCHEDULER = dict(
    snr_shift_scale=3.0,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    beta_start=0.00085,
    clip_sample=False,
    num_train_timesteps=1000,
    prediction_type="v_prediction",
    rescale_betas_zero_snr=True,
    set_alpha_to_one=True,
    timestep_spacing="trailing",
)
#: Wan 2.1 T2V 1.3B (Wan-AI/Wan2.1-T2V-1.3B-Diffusers transformer/config.json): 30 layers, 1536 wide, 12 heads
WAN_1_3B = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=12,
    attention_head_dim=128,
    in_channels=16,
    out_channels=16,
    text_dim=4096,
    freq_dim=256,
    ffn_dim=8960,
    num_layers=30,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    eps=1e-6,
    image_dim=None,
    added_kv_proj_dim=None,
    rope_max_seq_len=1024,
)
#: the Wan 2.1 VAE (the class defaults are the checkpoint's)
WAN_VAE: dict = {}

MODELS = {
    "CogVideoX-2B": {
        "family": "cogvideox",
        "transformer": COGVIDEOX_2B,
        "vae": COGVIDEOX_VAE,
        "text": (226, 4096),
        "recipe": "configs/cogvideox-2b-dpo.yaml",
    },
    "CogVideoX-5B": {
        "family": "cogvideox",
        "transformer": COGVIDEOX_5B,
        "vae": COGVIDEOX_VAE,
        "text": (226, 4096),
        "recipe": "configs/cogvideox-5b-kto.yaml",
    },
    "Wan 2.1 1.3B": {
        "family": "wan",
        "transformer": WAN_1_3B,
        "vae": WAN_VAE,
        "text": (512, 4096),
        "recipe": "configs/wan-1.3b-dpo.yaml",
    },
}
#: tiny twins for --tiny (the CPU check in make test)
TINY = {
    "CogVideoX-2B": {
        "transformer": dict(
            COGVIDEOX_2B,
            num_attention_heads=2,
            attention_head_dim=16,
            num_layers=1,
            time_embed_dim=16,
            text_embed_dim=32,
            sample_width=8,
            sample_height=8,
            sample_frames=9,
            max_text_seq_length=8,
        ),
        "vae": dict(
            COGVIDEOX_VAE,
            block_out_channels=(8, 8, 8, 8),
            layers_per_block=1,
            norm_num_groups=4,
            sample_height=64,
            sample_width=64,
        ),
        "text": (8, 32),
    },
    "CogVideoX-5B": {
        "transformer": dict(
            COGVIDEOX_5B,
            num_attention_heads=2,
            attention_head_dim=16,
            num_layers=1,
            time_embed_dim=16,
            text_embed_dim=32,
            sample_width=8,
            sample_height=8,
            sample_frames=9,
            max_text_seq_length=8,
        ),
        "vae": dict(
            COGVIDEOX_VAE,
            block_out_channels=(8, 8, 8, 8),
            layers_per_block=1,
            norm_num_groups=4,
            sample_height=64,
            sample_width=64,
        ),
        "text": (8, 32),
    },
    "Wan 2.1 1.3B": {
        "transformer": dict(
            WAN_1_3B,
            num_attention_heads=2,
            attention_head_dim=8,
            text_dim=32,
            freq_dim=32,
            ffn_dim=32,
            num_layers=1,
            rope_max_seq_len=32,
        ),
        "vae": dict(base_dim=8, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1),
        "text": (8, 32),
    },
}
TINY_CLIP = {"cogvideox": (9, 64, 64), "wan": (9, 64, 64)}
#: dense bf16 peak FLOP/s by device name (vendor datasheets, without sparsity)
PEAK_BF16 = (
    ("H200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100", 989e12),
    ("H800", 989e12),
    ("A100", 312e12),
    ("A800", 312e12),
    ("L40S", 362e12),
    ("L40", 181e12),
    ("A6000", 155e12),
    ("4090", 165e12),
    ("B200", 2250e12),
    ("GH200", 989e12),
)


def peak_flops(name: str) -> float | None:
    return next((v for k, v in PEAK_BF16 if k in name), None)


def build(name: str, spec: dict, recipe: RunConfig, device: torch.device, tiny: bool):
    """vipo's family model around a pipeline with the real architecture (random weights, bf16 where the recipe asks),
    and the clip size (frames, height, width)."""
    from diffusers import (
        AutoencoderKLCogVideoX,
        AutoencoderKLWan,
        CogVideoXDDIMScheduler,
        CogVideoXPipeline,
        CogVideoXTransformer3DModel,
        UniPCMultistepScheduler,
        WanPipeline,
        WanTransformer3DModel,
    )

    from ..models.cogvideox import CogVideoXModel
    from ..models.wan import WanModel

    arch = TINY[name] if tiny else spec
    dtype = torch.bfloat16 if recipe.model_dtype == "bfloat16" else torch.float32
    cog = spec["family"] == "cogvideox"
    # (schedulers are built on the CPU, as from_pretrained builds them; the networks right on the device)
    scheduler = (
        CogVideoXDDIMScheduler(**COGVIDEOX_SCHEDULER)
        if cog
        else UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    )
    with torch.device(device):
        net = _cast((CogVideoXTransformer3DModel if cog else WanTransformer3DModel)(**arch["transformer"]), dtype)
        vae = _cast((AutoencoderKLCogVideoX if cog else AutoencoderKLWan)(**arch["vae"]), dtype)
    pipe = (CogVideoXPipeline if cog else WanPipeline)(
        tokenizer=None, text_encoder=None, vae=vae, transformer=net, scheduler=scheduler
    )
    cls = CogVideoXModel if cog else WanModel
    size = TINY_CLIP[spec["family"]] if tiny else None
    model = cls(
        pipe, device=str(device), dtype=dtype, **(dict(zip(("frames", "height", "width"), size)) if size else {})
    )
    return model


def _cast(module: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """``module`` in ``dtype`` as ``from_pretrained(..., dtype=dtype)`` loads it: its ``_keep_in_fp32_modules`` (Wan's
    norms, time embedder, modulation table) stay float32."""
    keep = getattr(module, "_keep_in_fp32_modules", None) or []
    for name, p in list(module.named_parameters()) + list(module.named_buffers()):
        if p.is_floating_point():
            p.data = p.data.to(torch.float32 if any(k in name.split(".") for k in keep) else dtype)
    return module


def latent_shape(model, frames: int, height: int, width: int) -> tuple[int, ...]:
    p = model.pipe
    if model.family == "cogvideox":
        return (
            (frames - 1) // p.vae_scale_factor_temporal + 1,
            16,
            height // p.vae_scale_factor_spatial,
            width // p.vae_scale_factor_spatial,
        )
    return (
        16,
        (frames - 1) // p.vae_scale_factor_temporal + 1,
        height // p.vae_scale_factor_spatial,
        width // p.vae_scale_factor_spatial,
    )


def _free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def measure(name: str, spec: dict, device: torch.device, tiny: bool, deadline: float, repeats: int) -> dict:
    """One model under its recipe: step seconds and peak memory, MFU, generation seconds per video."""
    from . import steps as bench_steps

    recipe = load(RunConfig, spec["recipe"])
    tc = dataclasses.replace(recipe.train, lambda_real=0.0, real_batch_size=0, grad_accum=1)
    out: dict = {
        "recipe": spec["recipe"],
        "finetune": tc.finetune,
        "lora_rank": tc.lora_rank,
        "gradient_checkpointing": tc.gradient_checkpointing,
        "mixed_precision": tc.mixed_precision,
        "model_dtype": recipe.model_dtype,
        "pairs_per_micro_batch": tc.batch_size,
        "epochs": tc.epochs,
        "ref_cache_draws": min(4, int(-(-tc.epochs // 1))),
    }
    t0 = time.perf_counter()
    model = build(name, spec, recipe, device, tiny)
    out["build_s"] = round(time.perf_counter() - t0, 1)
    out["clip"] = [model.frames, model.height, model.width]
    out["transformer_params_B"] = round(sum(p.numel() for p in model.denoiser.parameters()) / 1e9, 3)
    params, frozen = trainer.trainable(model, tc, seed=0)
    opt = trainer.make_optimizer(tc, params)
    shape = latent_shape(model, model.frames, model.height, model.width)
    n = tc.batch_size
    g = torch.Generator().manual_seed(0)
    ids = [f"v{i}" for i in range(2 * n)]
    latents = {i: torch.randn(shape, generator=g) for i in ids}
    tokens, width = spec["text"] if not tiny else TINY[name]["text"]
    key = "prompt_embeds"
    emb = {p: {key: torch.randn(1, tokens, width, generator=g).to(device, model.dtype)} for p in ("p", "")}
    pairs, examples = bench_steps.items(ids, ["p"] * n)
    tokens_per_video = _tokens(model, shape)
    out["video_tokens"] = tokens_per_video
    contenders = bench_steps.vipo_contenders(
        model,
        params,
        opt,
        device,
        pairs,
        examples,
        emb,
        lambda s: latents[s["id"]],
        out["ref_cache_draws"],
        tc,
        ("sft", "dpo", "dpo_cached", "kto"),
        frozen,
    )
    timed = {k: contenders[k] for k in ("sft", "dpo", "dpo_cached", "kto", "ref_cache_pass")}
    results: dict = {}
    with model.pinned():
        for k, fn in timed.items():  # memory first, one call each (an OOM shows here, alone)
            if time.perf_counter() > deadline:
                results[k] = "skipped (budget)"
                continue
            try:
                results[k] = peak_memory(fn, device)
            except torch.cuda.OutOfMemoryError as e:
                results[k] = f"OOM ({str(e).splitlines()[0][:120]})"
                _free()
        ok = {k: fn for k, fn in timed.items() if isinstance(results.get(k), dict)}
        if ok and time.perf_counter() < deadline:
            times = interleave(ok, repeats, warmup=0, device=device)
            for k, ts in times.items():
                results[k] = dict(results[k], seconds=ts)
    out["steps"] = results
    del contenders, timed, opt, params, frozen
    _free()
    out["flops"] = _model_flops(name, spec, recipe, tc, tiny, shape, tokens, width)
    peak = peak_flops(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
    for k, fl in out["flops"].items():
        r = results.get(k)
        if isinstance(r, dict) and "seconds" in r:
            r["tflops_achieved"] = fl / statistics.median(r["seconds"]) / 1e12
            if peak:
                r["mfu"] = fl / statistics.median(r["seconds"]) / peak
    if time.perf_counter() < deadline:
        try:
            out["generation"] = _generation(model, recipe, emb, tokens, width, device, tiny)
        except torch.cuda.OutOfMemoryError as e:
            out["generation"] = f"OOM ({str(e).splitlines()[0][:120]})"
    else:
        out["generation"] = "skipped (budget)"
    del model
    _free()
    return out


def _tokens(model, shape) -> int:
    if model.family == "cogvideox":
        f, _, h, w = shape
        return f * (h // 2) * (w // 2)
    _, f, h, w = shape
    return f * (h // 2) * (w // 2)


def _model_flops(name, spec, recipe, tc, tiny, shape, tokens, width) -> dict:
    """Each step's model FLOPs: the step run on the meta device under FlopCounterMode, gradient checkpointing off."""
    from torch.utils.flop_counter import FlopCounterMode

    from . import steps as bench_steps

    meta = torch.device("meta")
    # float32 without autocast: the count does not depend on the precision, and torch has no autocast on meta
    tc = dataclasses.replace(tc, gradient_checkpointing=False, mixed_precision="no")
    model = build(name, spec, dataclasses.replace(recipe, model_dtype="float32"), meta, tiny)
    params, frozen = trainer.trainable(model, tc, seed=0)
    opt = torch.optim.SGD(params, lr=0.0)  # (no optimizer states on meta: their FLOPs are negligible)
    n = tc.batch_size
    ids = [f"v{i}" for i in range(2 * n)]
    latents = {i: torch.zeros(shape) for i in ids}
    emb = {p: {"prompt_embeds": torch.zeros(1, tokens, width, device=meta, dtype=model.dtype)} for p in ("p", "")}
    pairs, examples = bench_steps.items(ids, ["p"] * n)
    out = {}
    for k in ("sft", "dpo", "kto", "forward_nograd"):
        fns = bench_steps.vipo_contenders(
            model,
            params,
            opt,
            meta,
            pairs,
            examples,
            emb,
            lambda s: latents[s["id"]],
            0,
            tc,
            (k,) if k != "forward_nograd" else (),
            frozen,
        )
        with FlopCounterMode(display=False) as fc:
            try:
                fns[k]()
            except (RuntimeError, NotImplementedError) as e:  # the step's read-back cannot read meta tensors; its
                if "meta" not in str(e).lower():  # work is counted by then
                    raise
        out[k] = float(fc.get_total_flops())
    # the cached step is the live one less the reference's no-grad forward; the pass is K such forwards
    out["dpo_cached"] = out["dpo"] - out["forward_nograd"]
    return out


def _generation(model, recipe: RunConfig, emb: dict, tokens: int, width: int, device, tiny: bool) -> dict:
    steps = 2 if tiny else 3
    if not tiny:  # (tiling a tiny clip only costs)
        model.vae_memory(recipe.generate.vae_tiling, recipe.generate.vae_slicing)
    cond, uncond = emb["p"], emb[""]
    torch.manual_seed(0)
    t_steps = []
    for k in (1, steps):  # the difference removes what a call costs beside its sampler steps
        best = float("inf")
        for _ in range(2):  # the faster of two calls: a busy machine only ever adds time
            torch.cuda.synchronize() if device.type == "cuda" else None
            t0 = time.perf_counter()
            latents = model.sample(cond, uncond, [0], k, recipe.generate.guidance)
            torch.cuda.synchronize() if device.type == "cuda" else None
            best = min(best, time.perf_counter() - t0)
        t_steps.append(best)
    per_step = (t_steps[1] - t_steps[0]) / (steps - 1)
    upper_bound = per_step <= 0  # noise larger than a step: say so, and bound a step by the whole call instead
    if upper_bound:
        per_step = t_steps[1] / steps
    t0 = time.perf_counter()
    model.decode(latents)
    torch.cuda.synchronize() if device.type == "cuda" else None
    decode = time.perf_counter() - t0
    n = recipe.generate.num_steps
    return {
        "s_per_sampler_step": per_step,
        "per_step_is_upper_bound": upper_bound,
        "decode_s": decode,
        "num_steps": n,
        "s_per_video": per_step * n + max(0.0, t_steps[0] - per_step) + decode,
        "vae_tiling": recipe.generate.vae_tiling,
    }


def run(
    out: Path,
    tiny: bool = False,
    budget_s: float = 540.0,
    command: str = "vipo bench --gpu",
    models: tuple[str, ...] = tuple(MODELS),
    repeats: int = 3,
) -> dict:
    """Measure every model within ``budget_s`` and append the section to ``out``."""
    if not tiny and not torch.cuda.is_available():
        from ..errors import UserError

        raise UserError("bench --gpu: no CUDA device here (--tiny runs the same code on tiny models on the CPU)")
    device = torch.device("cpu" if tiny else "cuda")
    start = time.perf_counter()
    deadline = start + budget_s
    machine = Machine.here(device)
    results: dict = {"command": command, "machine": machine.facts, "tiny": tiny, "models": {}}
    for name in models:
        if time.perf_counter() > deadline:
            results["models"][name] = "skipped (budget)"
            continue
        log.info("bench --gpu: %s", name)
        try:
            results["models"][name] = measure(name, MODELS[name], device, tiny, deadline, 1 if tiny else repeats)
        except torch.cuda.OutOfMemoryError as e:
            results["models"][name] = f"OOM ({str(e).splitlines()[0][:120]})"
            _free()
        log.info("bench --gpu: %s: %s", name, json.dumps(results["models"][name], default=str)[:400])
    results["elapsed_s"] = round(time.perf_counter() - start, 1)
    machine.note_end()
    append(Path(out), results)
    return results


def append(out: Path, results: dict) -> None:
    from .report import gpu_section

    text = out.read_text(encoding="utf-8") if out.is_file() else "# Benchmarks\n"
    atomic.write_text(out, text.rstrip() + "\n\n" + gpu_section(results))
    raw = out.with_suffix(".gpu.json")
    previous = json.loads(raw.read_text()) if raw.is_file() else []
    atomic.write_text(raw, json.dumps(previous + [results], indent=1, default=str) + "\n")
