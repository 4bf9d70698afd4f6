"""Tests of vipo.train.lora."""

import json

import numpy as np
import pytest
import torch
from family_helpers import PROMPTS, _bf16_batch, _cond, _diffusers_video, diffusers_frames, diffusers_pipeline
from safetensors import safe_open
from tiny_families import (  # tests/ is on sys.path (rootdir conftest)  # tests/ is on sys.path (rootdir conftest)
    FAMILIES,
)
from train_helpers import _batch, _errors

from vipo import losses
from vipo.models import load_model
from vipo.models import policy as policies
from vipo.models.world import WorldModel
from vipo.train import lora


def _pipeline_video(base, adapter, prompt, seed):
    return diffusers_frames(diffusers_pipeline(base, adapter=adapter), prompt, seed)


def test_our_adapters_load_into_a_plain_diffusers_pipeline(tmp_path, family, tiny_family_dir):
    """Two rounds of (random) adapters: each round's checkpoint, loaded with ``load_lora_weights``, samples the same
    video for the same seed as our fused policy."""
    base = tiny_family_dir(family)
    model = load_model(str(base))
    prompt, seed = PROMPTS[0], 7
    for rnd in (1, 2):
        for p in lora.attach(model, rank=4, alpha=8 * rnd):
            torch.nn.init.normal_(p, std=0.1)
        prev = tmp_path / f"round-{rnd - 1}" / "checkpoint" if rnd > 1 else None
        ckpt = tmp_path / f"round-{rnd}" / "checkpoint"
        lora.write_checkpoint(model, ckpt, str(base), prev, rnd)
        model = policies.load_policy(str(base), ckpt)
        ours = model.decode(model.sample(_cond(model, [prompt]), _cond(model, [""]), [seed], 3, 3.0))
        theirs = _pipeline_video(base, ckpt, prompt, seed)
        assert np.abs(ours.astype(int) - theirs.astype(int)).max() <= 1, rnd  # fused vs unfused: rounding only
        base_video = _pipeline_video(base, ckpt / "lora-round-1", prompt, seed) if rnd == 2 else None
        if base_video is not None:
            assert np.abs(base_video.astype(int) - theirs.astype(int)).max() > 1  # round 2 is not round 1
    meta = json.loads((tmp_path / "round-2" / "checkpoint" / "policy.json").read_text())
    assert meta["family"] == family and meta["adapters"] == ["lora-round-1", "lora-round-2"]


@pytest.mark.parametrize("family", FAMILIES)
def test_bf16_adapter_chain_stays_unfused_and_matches_diffusers_in_bf16(tmp_path, family, tiny_family_dir):
    """Two rounds of (random) adapters trained on bf16 weights: each round's policy keeps its chain as one frozen
    unfused adapter, the next round's adapter trains beside it against it, and ``load_lora_weights(checkpoint)`` on
    a pipeline loaded in bf16 samples the same video for the same seed, bit for bit."""
    base = tiny_family_dir(family)
    model = load_model(str(base), dtype="bfloat16")
    prompt, seed = PROMPTS[0], 7
    for rnd in (1, 2):
        x, cond, noise, t = _bf16_batch(model)
        with torch.no_grad():
            before = losses.per_sample_error(*model.predict_and_target(x, cond, noise, t))
        params = lora.attach(model, rank=4, alpha=8 * rnd, seed=rnd)
        net = model.denoiser
        assert net.active_adapters() == ([lora.TRAINED_ADAPTER] if rnd == 1 else [policies.CHAIN, lora.TRAINED_ADAPTER])
        assert all(p.dtype == torch.float32 for p in params)
        assert {id(p) for p in params} == {id(p) for p in net.parameters() if p.requires_grad}
        for p in params:
            torch.nn.init.normal_(p, std=0.1)
        with torch.no_grad(), lora.without(model):  # the reference: the round's starting policy, chain included
            ref = losses.per_sample_error(*model.predict_and_target(x, cond, noise, t))
        assert torch.equal(ref, before) and {id(p) for p in params} == {
            id(p) for p in net.parameters() if p.requires_grad
        }
        prev = tmp_path / f"round-{rnd - 1}" / "checkpoint" if rnd > 1 else None
        ckpt = tmp_path / f"round-{rnd}" / "checkpoint"
        lora.write_checkpoint(model, ckpt, str(base), prev, rnd)
        with safe_open(str(ckpt / f"lora-round-{rnd}" / "pytorch_lora_weights.safetensors"), "pt") as f:
            assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F32"}
        model = policies.load_policy(str(base), ckpt, dtype="bfloat16")
        assert model.denoiser.active_adapters() == [policies.CHAIN]
        assert not any(p.requires_grad for p in model.denoiser.parameters())
        ours = model.decode(model.sample(_cond(model, [prompt]), _cond(model, [""]), [seed], 3, 3.0))
        assert np.array_equal(ours, _diffusers_video(base, prompt, seed, adapter=ckpt)), rnd  # measured: bit-exact


def test_reference_is_the_adapter_disabled_network(tiny):
    w, _, cond = _batch(tiny)
    g = torch.Generator().manual_seed(1)
    noise, t = torch.randn(w.shape, generator=g), tiny.sample_timesteps(w.shape[0], g)
    with torch.no_grad():
        before = _errors(tiny, w, cond, noise, t)
    params = lora.attach(tiny, rank=4, alpha=4)
    for p in params:
        torch.nn.init.normal_(p, std=0.05)
    with torch.no_grad():
        policy = _errors(tiny, w, cond, noise, t)
        tiny.denoiser.disable_adapters()
        ref = _errors(tiny, w, cond, noise, t)
        tiny.denoiser.enable_adapters()
    assert torch.allclose(ref, before) and not torch.allclose(policy, before)
    base_params = [n for n, p in tiny.denoiser.named_parameters() if p.requires_grad and "lora_" not in n]
    assert base_params == []  # only the adapter trains


def test_lora_init_depends_only_on_its_seed_not_on_the_global_generator():
    inits = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        model = WorldModel.fresh(widths=(16, 32, 32), text_width=32, seed=0)
        torch.manual_seed(global_seed)
        lora.attach(model, rank=4, alpha=4, seed=123)
        inits.append(lora.lora_state(model))
        after = torch.rand(1)
        torch.manual_seed(global_seed)
        assert torch.equal(after, torch.rand(1))  # the global stream is left where it was
    assert inits[0].keys() == inits[1].keys()
    assert all(torch.equal(inits[0][k], inits[1][k]) for k in inits[0])
