"""vipo.models.cogvideox's own logic (sampling and training end to end: test_models_base.py, test_lora.py, tests/integration/test_families_cli.py): the published sizes
of 1.0 and 1.5 from their transformer configs, the size rules (4x in time decoding odd latent counts, 8x in space,
2x2 patches, 1.5's rotary table), 1.5's front padding, the uniform integer timesteps and their windows, what sampling
hands the pipeline, and on a tiny pipeline: the DPM scheduler swapped in, the deterministic frames-first latents, the
velocity target at the scheduler's noising, rotary tables built once per pinned stretch."""

from types import SimpleNamespace

import numpy as np
import pytest
import tiny_families  # tests/ is on sys.path (rootdir conftest)
import torch
from family_helpers import PROMPTS, _cond
from tiny_families import VIDEO  # tests/ is on sys.path (rootdir conftest)

from vipo import losses
from vipo.errors import UserError
from vipo.models import load_model
from vipo.models.cogvideox import CogVideoXModel


def bare(patch_size_t=None, sample_frames=49, sample_height=60, sample_width=90, size=None, num_train_timesteps=1000):
    """A CogVideoXModel over a stand-in pipeline holding only the configs its size logic reads (CogVideoX-2B's by
    default: 49 x 480 x 720 at 8x space, 60 x 90 latents)."""
    m = CogVideoXModel.__new__(CogVideoXModel)
    config = SimpleNamespace(
        patch_size=2, patch_size_t=patch_size_t, sample_frames=sample_frames, sample_height=sample_height,
        sample_width=sample_width, max_text_seq_length=226,
    )  # fmt: skip
    m.pipe = SimpleNamespace(
        transformer=SimpleNamespace(config=config),
        vae_scale_factor_temporal=4,
        vae_scale_factor_spatial=8,
        scheduler=SimpleNamespace(config=SimpleNamespace(num_train_timesteps=num_train_timesteps)),
    )
    m.frames, m.height, m.width = size or m.default_size()
    return m


def test_the_published_size_of_1_0_is_the_transformers_sample_size():
    m = bare()
    assert m.default_size() == (49, 480, 720) and m.max_tokens == 226


def test_the_published_size_of_1_5_is_81_x_768_x_1360_within_its_rotary_table():
    # CogVideoX1.5-5B: patch_size_t 2, a 300 x 300 rotary table (2400 px): the published 768 x 1360
    assert bare(patch_size_t=2, sample_frames=81, sample_height=300, sample_width=300).default_size() == (81, 768, 1360)
    # a smaller table caps the default at the table
    assert bare(patch_size_t=2, sample_height=40, sample_width=60).default_size() == (81, 320, 480)


def test_1_0_takes_8k_plus_1_frames_and_multiples_of_16_at_any_size():
    step, mult, most, why = bare().size_rules()
    assert (step, mult, most) == (8, 16, (None, None, None))
    assert why == "VAE 4x in time decoding an odd number of latent frames, 8x in space, patch 2"


def test_1_5_is_limited_by_its_rotary_table():
    # 96 x 170 patches' table: 96 // 2 * 2 * 8 = 768 high, 170 // 2 * 2 * 8 = 1360 wide
    step, mult, most, why = bare(patch_size_t=2, sample_height=96, sample_width=170).size_rules()
    assert (step, mult, most) == (8, 16, (None, 768, 1360)) and why.endswith(", rotary table 768 x 1360 pixels")
    # an odd number of table rows rounds down to whole patches: 97 // 2 * 2 * 8 = 768
    assert bare(patch_size_t=2, sample_height=97, sample_width=170).size_rules()[2] == (None, 768, 1360)


def test_the_published_sizes_fit_their_own_rules():
    m = bare()
    m.set_size()
    assert m.clip_size() == (49, 480, 720)  # 49 = 8 * 6 + 1; 480 and 720 multiples of 16
    m15 = bare(patch_size_t=2, sample_frames=81, sample_height=96, sample_width=170)
    m15.set_size()
    assert m15.clip_size() == (81, 768, 1360)


def test_a_size_past_1_5s_table_is_one_line_naming_the_nearest_that_fits():
    m = bare(patch_size_t=2, sample_frames=81, sample_height=96, sample_width=170)
    with pytest.raises(UserError) as e:
        m.set_size(width=1376, frames=45, where="eval")
    msg = str(e.value)
    assert msg.startswith("eval.frames=45: not 8k+1 (nearest: 41 or 49); eval.width=1376: above 1360 (nearest: 1360).")
    assert "multiples of 16, at most 768 high, at most 1360 wide (VAE 4x" in msg and "\n" not in msg
    assert m.clip_size() == (81, 768, 1360)


@pytest.mark.parametrize(
    "patch_size_t, frames, latent_frames, pad",
    [
        (None, 49, 13, 0),  # 1.0 never pads
        (2, 81, 22, 1),  # 1.5: 81 frames are (81 - 1) / 4 + 1 = 21 latent frames, padded to 22
        (2, 81, 21, 0),
        (2, 49, 14, 1),  # 13 -> 14
    ],
)
def test_the_front_padding_of_1_5_is_dropped_before_decoding(patch_size_t, frames, latent_frames, pad):
    m = bare(patch_size_t=patch_size_t, size=(frames, 480, 720))
    assert m._padding(latent_frames) == pad


def test_decode_hands_the_vae_the_unpadded_latents():
    m = bare(patch_size_t=2, size=(81, 480, 720))
    seen = []
    m.device = "cpu"
    m.pipe.vae = SimpleNamespace(dtype=torch.float32)
    m.pipe.decode_latents = lambda x: seen.append(x) or torch.zeros(1)
    m.pipe.video_processor = SimpleNamespace(postprocess_video=lambda video, output_type: np.full((1, 2, 2, 2, 3), 0.5))
    latents = torch.arange(22.0).view(1, 22, 1, 1, 1).expand(1, 22, 2, 3, 3)
    out = m.decode(latents)
    assert seen[0].shape == (1, 21, 2, 3, 3) and torch.equal(seen[0][0, :, 0, 0, 0], torch.arange(1.0, 22.0))
    assert out.dtype == np.uint8 and (out == 128).all()  # 0.5 * 255 = 127.5 rounds to 128


def test_training_timesteps_are_uniform_integers_over_the_schedule():
    t = bare().sample_timesteps(4000, torch.Generator().manual_seed(0))
    assert t.dtype == torch.int64 and t.min() >= 0 and t.max() <= 999
    assert t.min() < 10 and t.max() > 989 and abs(t.float().mean() - 499.5) < 15  # uniform: mean 499.5, sd 289 / 63


def test_a_window_draws_from_that_fraction_of_the_schedule():
    g = torch.Generator().manual_seed(0)
    t = bare().sample_timesteps(2000, g, (0.25, 0.5))
    assert t.min() == 250 and t.max() == 499  # int(0.25 * 1000) up to round(0.5 * 1000), exclusive
    assert (bare().sample_timesteps(5, g, (0.5, 0.5)) == 500).all()  # an empty window is its lower edge
    assert (bare(num_train_timesteps=10).sample_timesteps(50, g, (0.95, 1.0)) == 9).all()


def test_sampling_hands_the_pipeline_the_guidance_size_and_one_generator_per_seed():
    m = bare(size=(9, 32, 48))
    got = {}
    m.run_pipeline = lambda **kw: got.update(kw) or torch.ones(2, 3, 4, 4, 6, dtype=torch.float64)
    cond, uncond = {"prompt_embeds": torch.randn(2, 5, 8)}, {"prompt_embeds": torch.randn(1, 5, 8)}
    out = m.sample(cond, uncond, [7, 8], num_steps=3, guidance=6.0)
    assert out.dtype == torch.float32 and out.shape == (2, 3, 4, 4, 6)
    assert got["prompt_embeds"] is cond["prompt_embeds"]
    assert got["negative_prompt_embeds"].shape == (2, 5, 8) and torch.equal(
        got["negative_prompt_embeds"][1], uncond["prompt_embeds"][0]
    )
    assert (got["num_frames"], got["height"], got["width"], got["num_inference_steps"], got["guidance_scale"]) == (
        9,
        32,
        48,
        3,
        6.0,
    )
    assert got["use_dynamic_cfg"] is True  # CogVideoX's dynamic CFG, as IPO samples
    assert [g.initial_seed() for g in got["generator"]] == [7, 8]


@pytest.fixture(scope="module")
def tiny():
    from diffusers import CogVideoXDDIMScheduler

    torch.manual_seed(0)
    pipe = tiny_families.cogvideox()
    ddim = CogVideoXDDIMScheduler.from_config(pipe.scheduler.config, timestep_spacing="leading")
    pipe.scheduler = ddim  # a checkpoint's DDIM config, as the published folders have
    return CogVideoXModel(pipe, frames=9, height=32, width=32), ddim


def test_loading_swaps_in_the_dpm_sampler_with_trailing_spacing_and_the_same_schedule(tiny):
    model, ddim = tiny
    s = model.pipe.scheduler
    assert type(s).__name__ == "CogVideoXDPMScheduler" and s.config.timestep_spacing == "trailing"
    assert torch.equal(s.alphas_cumprod, ddim.alphas_cumprod) and s.config.prediction_type == "v_prediction"
    assert model.train_timesteps == 1000


def test_real_videos_encode_to_the_deterministic_frames_first_latents(tiny):
    model, _ = tiny
    frames = np.random.default_rng(0).integers(0, 256, (2, 9, 32, 32, 3), dtype=np.uint8)
    z = model.encode_video(frames)
    # 9 frames: (9 - 1) / 4 + 1 = 3 latent frames; 32 / 8 = 4; the tiny VAE's 4 channels after the frames
    assert z.shape == (2, 3, 4, 4, 4) and z.dtype == torch.float32
    assert torch.equal(z, model.encode_video(frames))  # the posterior mean, not a draw
    with torch.no_grad():
        mode = model.vae.encode(model.pixels(frames)).latent_dist.mode()
    want = (mode * model.pipe.vae_scaling_factor_image).permute(0, 2, 1, 3, 4)
    assert torch.allclose(z, want, atol=1e-6)


def test_the_denoiser_sees_the_schedulers_noising_and_learns_the_velocity(tiny):
    model, _ = tiny
    sched, seen = model.pipe.scheduler, {}
    x0, noise = torch.randn(2, 3, 4, 4, 4), torch.randn(2, 3, 4, 4, 4)
    t = torch.tensor([100, 900])
    hook = model.pipe.transformer.register_forward_pre_hook(lambda m, a, kw: seen.update(kw), with_kwargs=True)
    try:
        with torch.no_grad():
            pred, target = model.predict_and_target(x0, model.encode_prompts(["a", "b"]), noise, t)
    finally:
        hook.remove()
    ac = sched.alphas_cumprod[t].float().view(-1, 1, 1, 1, 1)
    assert torch.allclose(seen["hidden_states"], ac.sqrt() * x0 + (1 - ac).sqrt() * noise, atol=1e-5)
    assert torch.allclose(target, ac.sqrt() * noise - (1 - ac).sqrt() * x0, atol=1e-5)
    assert torch.equal(seen["timestep"], t) and pred.shape == x0.shape


def test_rotary_tables_are_built_once_per_pinned_stretch(tiny, monkeypatch):
    model, _ = tiny
    built = []
    make = model.pipe._prepare_rotary_positional_embeddings
    monkeypatch.setattr(model.pipe, "_prepare_rotary_positional_embeddings", lambda *a: built.append(a) or make(*a))
    x0, cond = torch.zeros(1, 3, 4, 4, 4), model.encode_prompts(["a"])
    with torch.no_grad():
        for _ in range(2):
            model.predict_and_target(x0, cond, x0, torch.tensor([5]))
        assert len(built) == 2
        with model.pinned():
            for _ in range(2):
                model.predict_and_target(x0, cond, x0, torch.tensor([5]))
    # once more, for the pinned stretch; the table is for 4 x 4 latents at 8x: 32 x 32 pixels, 3 latent frames
    assert len(built) == 3 and built[-1][:3] == (32, 32, 3)


def test_cogvideox_velocity_target_with_and_without_rotary_embeddings(tmp_path, tiny_family_dir):
    """The scheduler's velocity is the losses' v target; 2B-style (sincos positions) and 5B-style (rotary)
    transformers both train."""
    import tiny_families

    rotary = load_model(str(tiny_family_dir("cogvideox")))
    assert rotary.pipe.transformer.config.use_rotary_positional_embeddings
    assert type(rotary.pipe.scheduler).__name__ == "CogVideoXDPMScheduler"
    assert rotary.pipe.scheduler.config.timestep_spacing == "trailing"
    sched = rotary.pipe.scheduler
    x0, noise, t = torch.randn(3, 3, 4, 4, 4), torch.randn(3, 3, 4, 4, 4), torch.tensor([0, 400, 999])
    ac = sched.alphas_cumprod[t].float().view(-1, 1, 1, 1, 1)  # the scheduler keeps float64
    want = losses.target("v_prediction", x0, noise, ac.sqrt(), (1 - ac).sqrt())
    assert torch.allclose(sched.get_velocity(x0, noise, t), want, atol=1e-6)
    tiny_families.cogvideox(rotary=False).save_pretrained(tmp_path / "plain")
    plain = load_model(str(tmp_path / "plain"))
    assert not plain.pipe.transformer.config.use_rotary_positional_embeddings
    plain.frames, plain.height, plain.width = VIDEO["frames"], VIDEO["height"], VIDEO["width"]
    for model in (rotary, plain):
        cond = _cond(model, PROMPTS + PROMPTS[:1])
        pred, target = model.predict_and_target(x0, cond, noise, t)
        assert pred.shape == target.shape == x0.shape and torch.allclose(target, want, atol=1e-6)
