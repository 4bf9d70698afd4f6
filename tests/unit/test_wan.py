"""vipo.models.wan's own logic (sampling and training end to end: test_models_base.py, test_lora.py, tests/integration/test_families_cli.py): Wan 2.1's published size
and size rules (4x in time, 8x in space, 1x2x2 patches, the rotary table's positions per axis), the sampler's flow
shift, training timesteps under that shift (or uniform in a window), what sampling hands the pipeline, and on a tiny
pipeline: latents normalised per channel by the VAE's mean and std (undone before decoding), the rectified-flow
noising and its velocity target ``noise - x0``."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import tiny_families  # tests/ is on sys.path (rootdir conftest)
import torch

from vipo.models.wan import WanModel


def bare(scheduler=None, rope=1024, size=None):
    """A WanModel over a stand-in pipeline with Wan 2.1's VAE factors and transformer config."""
    m = WanModel.__new__(WanModel)
    m.pipe = SimpleNamespace(
        transformer=SimpleNamespace(config=SimpleNamespace(patch_size=(1, 2, 2), rope_max_seq_len=rope)),
        vae_scale_factor_temporal=4,
        vae_scale_factor_spatial=8,
        scheduler=SimpleNamespace(config={"flow_shift": 3.0} if scheduler is None else scheduler),
    )
    m.frames, m.height, m.width = size or m.default_size()
    return m


def test_the_published_size_is_480p_81_frames():
    m = bare()
    assert m.default_size() == (81, 480, 832) and m.max_tokens == 512
    m.set_size()  # 81 = 4 * 20 + 1; 480 and 832 multiples of 16
    assert m.clip_size() == (81, 480, 832)


def test_the_size_rules_follow_the_vae_patch_and_rotary_table():
    step, mult, most, why = bare().size_rules()
    # 1024 positions per axis: (1024 * 1 - 1) * 4 + 1 = 4093 frames, 1024 * 8 * 2 = 16384 px
    assert (step, mult, most) == (4, 16, (4093, 16384, 16384))
    assert why == "VAE 4x in time, 8x in space, patch 1x2x2, rope_max_seq_len 1024"
    assert bare(rope=32).size_rules()[2] == (125, 512, 512)


@pytest.mark.parametrize(
    "config, shift",
    [({"flow_shift": 3.0}, 3.0), ({"shift": 5.0}, 5.0), ({"flow_shift": None, "shift": 2.0}, 2.0), ({}, 1.0)],
)
def test_the_shift_is_the_schedulers(config, shift):
    assert bare(config).shift == shift


def test_training_timesteps_are_shifted_uniform_as_the_sampler_spends_its_steps():
    g, ref = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    t = bare().sample_timesteps(1000, g)
    u = torch.rand(1000, generator=ref)
    assert torch.allclose(t, 1000 * 3 * u / (1 + 2 * u))  # s = shift u / (1 + (shift - 1) u), shift 3
    assert t.dtype == torch.float32 and t.min() >= 0 and t.max() <= 1000
    # shift 3 puts the median u = 1/2 at s = 1.5 / 2 = 0.75
    assert abs(t.median().item() - 750) < 30


def test_shift_1_is_plain_uniform_and_the_full_window_is_the_shifted_draw():
    u = torch.rand(5, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(bare({}).sample_timesteps(5, torch.Generator().manual_seed(0)), 1000 * u)
    full = bare().sample_timesteps(5, torch.Generator().manual_seed(0), (0.0, 1.0))
    assert torch.allclose(full, 1000 * 3 * u / (1 + 2 * u))


def test_a_window_is_uniform_inside_it_unshifted():
    u = torch.rand(5, generator=torch.Generator().manual_seed(0))
    t = bare().sample_timesteps(5, torch.Generator().manual_seed(0), (0.2, 0.4))
    assert torch.allclose(t, 1000 * (0.2 + 0.2 * u))


def test_sampling_hands_the_pipeline_the_guidance_size_and_one_generator_per_seed():
    m = bare(size=(9, 32, 48))
    got = {}
    m.run_pipeline = lambda **kw: got.update(kw) or torch.ones(2, 4, 3, 4, 6, dtype=torch.bfloat16)
    cond, uncond = {"prompt_embeds": torch.randn(2, 5, 8)}, {"prompt_embeds": torch.randn(1, 5, 8)}
    out = m.sample(cond, uncond, [7, 8], num_steps=3, guidance=5.0)
    assert out.dtype == torch.float32 and out.shape == (2, 4, 3, 4, 6)
    assert torch.equal(got["negative_prompt_embeds"], uncond["prompt_embeds"].expand(2, 5, 8))
    assert (got["num_frames"], got["height"], got["width"], got["num_inference_steps"], got["guidance_scale"]) == (
        9, 32, 48, 3, 5.0,
    )  # fmt: skip
    assert "use_dynamic_cfg" not in got and [g.initial_seed() for g in got["generator"]] == [7, 8]


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return WanModel(tiny_families.wan(), frames=9, height=32, width=32)


MEAN = torch.tensor([0.1, -0.2, 0.0, 0.3]).view(1, 4, 1, 1, 1)  # the tiny VAE's latents_mean and latents_std
STD = torch.tensor([1.5, 0.8, 1.0, 2.0]).view(1, 4, 1, 1, 1)


def test_real_videos_encode_to_per_channel_normalised_latents(tiny):
    frames = np.random.default_rng(0).integers(0, 256, (1, 9, 32, 32, 3), dtype=np.uint8)
    z = tiny.encode_video(frames)
    # channels first; 9 frames: (9 - 1) / 4 + 1 = 3 latent frames; 32 / 8 = 4
    assert z.shape == (1, 4, 3, 4, 4)
    with torch.no_grad():
        mode = tiny.vae.encode(tiny.pixels(frames)).latent_dist.mode()
    assert torch.allclose(z, (mode - MEAN) / STD, atol=1e-6)  # the posterior mean (a draw would differ)


def test_decode_undoes_the_normalisation_before_the_vae(tiny, monkeypatch):
    seen = []
    decode = tiny.vae.decode
    monkeypatch.setattr(tiny.vae, "decode", lambda x, return_dict: seen.append(x) or decode(x, return_dict=return_dict))
    z = torch.randn(1, 4, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    frames = tiny.decode(z)
    assert torch.allclose(seen[0], z * STD + MEAN, atol=1e-6)
    assert frames.shape == (1, 9, 32, 32, 3) and frames.dtype == np.uint8


def test_the_denoiser_sees_the_flow_noising_at_1000_s_and_learns_noise_minus_x0(tiny):
    seen = {}
    x0, noise = torch.randn(2, 4, 3, 4, 4), torch.randn(2, 4, 3, 4, 4)
    t = torch.tensor([250.0, 900.0])
    hook = tiny.pipe.transformer.register_forward_pre_hook(lambda m, a, kw: seen.update(kw), with_kwargs=True)
    try:
        with torch.no_grad():
            pred, target = tiny.predict_and_target(x0, tiny.encode_prompts(["a", "b"]), noise, t)
    finally:
        hook.remove()
    s = torch.tensor([0.25, 0.9]).view(2, 1, 1, 1, 1)
    assert torch.allclose(seen["hidden_states"], (1 - s) * x0 + s * noise, atol=1e-6)
    assert torch.equal(seen["timestep"], t) and torch.equal(target, noise - x0) and pred.shape == x0.shape


def test_the_tiny_pipelines_shift_is_its_flow_shift(tiny):
    assert (
        tiny.shift == 3.0 and tiny.train_timesteps == 1000 and math.isclose(tiny.pipe.scheduler.config.flow_shift, 3.0)
    )
