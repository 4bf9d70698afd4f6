"""vipo.models.ltx's own logic (sampling and training end to end: test_models_base.py, test_lora.py, tests/integration/test_families_cli.py): LTX-Video's published size
and size rules (LTXPipeline's multiples of 32), the latent grid of a clip, the sampler's resolution-dependent shift
(``exp(mu)``, mu linear in the token count) and the shifted logit-normal training timesteps, what sampling hands the
pipeline and the unpacking of its tokens, and on a tiny pipeline: the prompt's attention mask, the latents'
normalisation and its undoing, and the packed flow noising with its RoPE scale and velocity target."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import tiny_families  # tests/ is on sys.path (rootdir conftest)
import torch
from diffusers import LTXPipeline

from vipo.models.ltx import LTXModel

DYNAMIC = {
    "use_dynamic_shifting": True,
    "base_image_seq_len": 1024,
    "max_image_seq_len": 4096,
    "base_shift": 0.95,
    "max_shift": 2.05,
}


def bare(scheduler=None, t=8, s=32, pt=1, ps=1, size=None):
    """An LTXModel over a stand-in pipeline with LTX-Video's compression (8x in time, 32x in space, 1x1x1 patches)."""
    m = LTXModel.__new__(LTXModel)
    m.pipe = SimpleNamespace(
        vae_temporal_compression_ratio=t,
        vae_spatial_compression_ratio=s,
        transformer_temporal_patch_size=pt,
        transformer_spatial_patch_size=ps,
        scheduler=SimpleNamespace(config=DYNAMIC if scheduler is None else scheduler),
        _pack_latents=LTXPipeline._pack_latents,
        _unpack_latents=LTXPipeline._unpack_latents,
    )
    m.frames, m.height, m.width = size or m.default_size()
    return m


def test_the_published_size_is_161_x_512_x_704():
    m = bare()
    assert m.default_size() == (161, 512, 704) and m.max_tokens == 128 and m.frame_rate == 25
    m.set_size()  # 161 = 8 * 20 + 1; 512 and 704 multiples of 32
    assert m.clip_size() == (161, 512, 704)


def test_sides_are_multiples_of_32_and_of_the_vae_times_the_patch():
    step, mult, most, why = bare().size_rules()
    assert (step, mult, most) == (8, 32, (None, None, None))
    assert why == "VAE 8x in time, 32x in space, patch 1x1x1; LTXPipeline takes multiples of 32"
    assert bare(s=8).size_rules()[1] == 32  # lcm(32, 8)
    assert bare(s=32, ps=2).size_rules()[1] == 64  # lcm(32, 64)
    assert bare(t=4, pt=2, s=24).size_rules()[:2] == (8, 96)  # frames 4 * 2 k + 1; lcm(32, 24)


def test_the_latent_grid_of_a_clip():
    # (161 - 1) / 8 + 1 = 21 frames; 512 / 32 = 16; 704 / 32 = 22
    assert bare()._latent_size(161, 512, 704) == (21, 16, 22)
    assert bare()._latent_size(9, 64, 96) == (2, 2, 3)


def test_the_dynamic_shift_grows_with_the_clips_token_count():
    # 21 * 16 * 22 = 7392 tokens; mu = 0.95 + (7392 - 1024) * (2.05 - 0.95) / (4096 - 1024)
    assert math.isclose(bare().shift, math.exp(0.95 + (7392 - 1024) * 1.1 / 3072))
    small = bare(size=(9, 1024, 1024))  # 2 * 32 * 32 = 2048 tokens
    assert math.isclose(small.shift, math.exp(0.95 + (2048 - 1024) * 1.1 / 3072))
    assert math.isclose(bare(size=(9, 32 * 32, 32 * 16)).shift, math.exp(0.95 + 0 * 1.1))  # 1024 tokens: base_shift


def test_a_fixed_shift_is_the_schedulers():
    assert bare({"use_dynamic_shifting": False, "shift": 2.5}).shift == 2.5
    assert bare({}).shift == 1.0


def test_training_timesteps_are_a_shifted_logit_normal():
    m = bare({"shift": 4.0})
    t = m.sample_timesteps(1000, torch.Generator().manual_seed(1))
    u = torch.sigmoid(torch.randn(1000, generator=torch.Generator().manual_seed(1)))
    assert torch.allclose(t, 1000 * 4 * u / (1 + 3 * u))
    # the logit-normal's median u = 1/2 lands at 4 * 0.5 / 2.5 = 0.8 of the schedule
    assert abs(t.median().item() - 800) < 20 and t.min() > 0 and t.max() < 1000
    full = m.sample_timesteps(1000, torch.Generator().manual_seed(1), (0.0, 1.0))
    assert torch.equal(full, t)  # the whole schedule as a window is the family's own draw


def test_a_window_is_uniform_inside_it():
    u = torch.rand(6, generator=torch.Generator().manual_seed(2))
    t = bare().sample_timesteps(6, torch.Generator().manual_seed(2), (0.5, 0.75))
    assert torch.allclose(t, 1000 * (0.5 + 0.25 * u))


def test_sampling_hands_the_pipeline_the_masks_and_unpacks_its_tokens():
    m = bare(t=4, s=8, size=(9, 16, 24))  # latents 3 x 2 x 3: 18 tokens
    got = {}
    tokens = torch.arange(2 * 18 * 4, dtype=torch.float64).view(2, 18, 4)  # [B, tokens, channels]
    m.run_pipeline = lambda **kw: got.update(kw) or tokens
    cond = {
        "prompt_embeds": torch.randn(2, 5, 8),
        "prompt_attention_mask": torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 0]]),
    }
    uncond = {"prompt_embeds": torch.randn(1, 5, 8), "prompt_attention_mask": torch.tensor([[1, 0, 0, 0, 0]])}
    out = m.sample(cond, uncond, [4, 5], num_steps=2, guidance=3.0)
    assert torch.equal(got["prompt_attention_mask"], cond["prompt_attention_mask"])
    assert torch.equal(got["negative_prompt_attention_mask"], torch.tensor([[1, 0, 0, 0, 0]] * 2))
    assert got["negative_prompt_embeds"].shape == (2, 5, 8) and got["frame_rate"] == 25
    assert (got["num_frames"], got["height"], got["width"], got["guidance_scale"]) == (9, 16, 24, 3.0)
    assert [g.initial_seed() for g in got["generator"]] == [4, 5]
    # token (f, h, w) = f * 6 + h * 3 + w of video b, channel c -> latents[b, c, f, h, w]
    assert out.shape == (2, 4, 3, 2, 3) and out.dtype == torch.float32
    assert out[1, 2, 2, 1, 0].item() == tokens[1, 2 * 6 + 1 * 3 + 0, 2].item()
    assert torch.equal(m._pack(out.double()), tokens)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = LTXModel(tiny_families.ltx(), frames=9, height=32, width=32)
    model.vae.latents_mean.copy_(torch.linspace(-0.4, 0.3, 8))  # (the tiny VAE's are 0 and 1: no normalisation)
    model.vae.latents_std.copy_(torch.linspace(0.5, 2.0, 8))
    return model


def test_the_tiny_pipelines_compression(tiny):
    # the tiny VAE scales twice in space and time: 4x each; 1x1 patches
    p = tiny.pipe
    assert (p.vae_temporal_compression_ratio, p.vae_spatial_compression_ratio) == (4, 4)
    assert tiny._latent_size(9, 32, 32) == (3, 8, 8)


def test_prompts_come_with_their_attention_mask(tiny):
    with torch.no_grad():
        cond = tiny.encode_prompts(["ab", "abcd"])
    # the char-level tokenizer: one token a character, then </s>; padded to max_tokens
    assert cond["prompt_embeds"].shape == (2, 128, 32)
    assert cond["prompt_attention_mask"].shape == (2, 128)
    assert cond["prompt_attention_mask"].sum(1).tolist() == [3, 5] and cond["prompt_attention_mask"][0, :3].all()


def test_real_videos_encode_to_normalised_latents_and_decode_undoes_it(tiny, monkeypatch):
    frames = np.random.default_rng(0).integers(0, 256, (1, 9, 32, 32, 3), dtype=np.uint8)
    z = tiny.encode_video(frames)
    assert z.shape == (1, 8, 3, 8, 8)
    mean, std = tiny.vae.latents_mean.view(1, -1, 1, 1, 1), tiny.vae.latents_std.view(1, -1, 1, 1, 1)
    sf = tiny.vae.config.scaling_factor
    with torch.no_grad():
        mode = tiny.vae.encode(tiny.pixels(frames)).latent_dist.mode()
    assert torch.allclose(z, (mode - mean) * sf / std, atol=1e-5)
    seen = []
    decode = tiny.vae.decode
    monkeypatch.setattr(
        tiny.vae, "decode", lambda x, t, return_dict: seen.append((x, t)) or decode(x, t, return_dict=return_dict)
    )
    out = tiny.decode(z)
    assert torch.allclose(seen[0][0], mode, atol=1e-5)  # denormalised back to the VAE's own latents
    assert out.shape == (1, 9, 32, 32, 3) and out.dtype == np.uint8


def test_the_denoiser_sees_packed_flow_noising_with_the_mask_and_rope_scale(tiny):
    seen = {}
    x0, noise = torch.randn(2, 8, 3, 8, 8), torch.randn(2, 8, 3, 8, 8)
    t = torch.tensor([100.0, 600.0])
    with torch.no_grad():
        cond = tiny.encode_prompts(["ab", "abcd"])
    hook = tiny.pipe.transformer.register_forward_pre_hook(lambda m, a, kw: seen.update(kw), with_kwargs=True)
    try:
        with torch.no_grad():
            pred, target = tiny.predict_and_target(x0, cond, noise, t)
    finally:
        hook.remove()
    s = torch.tensor([0.1, 0.6]).view(2, 1, 1, 1, 1)
    noisy = (1 - s) * x0 + s * noise
    assert seen["hidden_states"].shape == (2, 3 * 8 * 8, 8)  # 192 tokens of 8 channels
    assert torch.allclose(seen["hidden_states"], LTXPipeline._pack_latents(noisy), atol=1e-6)
    assert torch.equal(seen["encoder_attention_mask"], cond["prompt_attention_mask"]) and torch.equal(
        seen["timestep"], t
    )
    assert (seen["num_frames"], seen["height"], seen["width"]) == (3, 8, 8)
    assert seen["rope_interpolation_scale"] == (4 / 25, 4, 4)  # VAE time factor / frame rate, space factors
    assert torch.equal(target, noise - x0) and pred.shape == x0.shape
