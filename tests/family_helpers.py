"""Helpers shared by unit tests of several modules (the diffusers families, bf16 weights, plain diffusers sampling)."""

import diffusers
import numpy as np
import pytest
import torch
from tiny_families import (  # tests/ is on sys.path (rootdir conftest)
    FAMILIES,
    VIDEO,
    dpo_batch,
)

from vipo.models import load_model
from vipo.models.pipeline import dtype_kwargs

PROMPTS = ["a red circle moving left", "a blue square moving up"]


@pytest.fixture(params=FAMILIES)
def family(request):
    return request.param


@pytest.fixture()
def model(family, tiny_family_dir):
    return load_model(str(tiny_family_dir(family)))


def _cond(model, prompts):
    with torch.no_grad():
        return model.encode_prompts(prompts)


BF16 = torch.bfloat16


def _low_precision(module) -> list[str]:
    """Names of ``module``'s float parameters that are not bf16, less those diffusers keeps in float32 on purpose."""
    keep = getattr(module, "_keep_in_fp32_modules", None) or ()
    return [n for n, p in module.named_parameters() if p.dtype != BF16 and not any(k in n.split(".") for k in keep)]


def _bf16_batch(model, seed=0):
    return dpo_batch(model, PROMPTS, seed)


def diffusers_pipeline(base, dtype=None, adapter=None, transformer=None):
    """Plain diffusers' pipeline of the folder ``base`` (in ``dtype``), sampling CogVideoX as IPO does, with
    ``load_lora_weights(adapter)`` or ``transformer`` (a full fine-tune's folder) in place of its own."""
    dtype_arg = dtype_kwargs(dtype) if dtype is not None else {}
    pipe = diffusers.DiffusionPipeline.from_pretrained(str(base), **dtype_arg)
    if isinstance(pipe, diffusers.CogVideoXPipeline):  # as IPO samples CogVideoX
        pipe.scheduler = diffusers.CogVideoXDPMScheduler.from_config(pipe.scheduler.config, timestep_spacing="trailing")
    if adapter is not None:
        pipe.load_lora_weights(str(adapter))
    if transformer is not None:
        pipe.transformer = type(pipe.transformer).from_pretrained(str(transformer), **dtype_arg)
    return pipe


def diffusers_frames(pipe, prompt, seed):
    """The clip (uint8 [F, H, W, 3]) plain diffusers samples for ``prompt`` and ``seed`` at the test size, 3 steps."""
    extra = {"use_dynamic_cfg": True} if isinstance(pipe, diffusers.CogVideoXPipeline) else {}
    tokens = (
        pipe.transformer.config.max_text_seq_length
        if isinstance(pipe, diffusers.CogVideoXPipeline)
        else 512
        if isinstance(pipe, diffusers.WanPipeline)
        else 128
    )
    frames = pipe(
        prompt=prompt,
        num_frames=VIDEO["frames"],
        height=VIDEO["height"],
        width=VIDEO["width"],
        num_inference_steps=3,
        guidance_scale=3.0,
        generator=torch.Generator().manual_seed(seed),
        max_sequence_length=tokens,
        output_type="np",
        **extra,
    ).frames
    return (np.clip(frames, 0, 1) * 255).round().astype(np.uint8)


def _diffusers_video(base, prompt, seed, adapter=None, transformer=None):
    """The video plain diffusers samples in bf16: the base, with ``load_lora_weights(adapter)`` or ``transformer`` (a
    full fine-tune's folder) in place of its own."""
    return diffusers_frames(diffusers_pipeline(base, BF16, adapter, transformer), prompt, seed)
