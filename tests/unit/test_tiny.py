"""vipo.bench.tiny: the bench's sizes and what they describe (latents and token counts by CogVideoX's 4x temporal and
8x spatial compression and 2x2 patches), the word-level tokenizer in T5's layout, the seeded pipeline of the TEST
size and its configuration, and the smooth test clips."""

import pytest
import torch

from vipo.bench import tiny


def test_the_bench_size_describes_its_latents_and_tokens():
    # 13 frames: (13 - 1) / 4 + 1 = 4 latent frames; 128 px / 8 = 16; 2x2 patches: 4 * 8 * 8 = 256 video tokens
    text = tiny.BENCH.describe()
    assert "4 layers x 256 wide (4 heads of 64)" in text
    assert "clip 13 x 128 x 128 = latents 4 x 16 x 16 x 16 = 256 video tokens + 16 text tokens" in text
    assert text.endswith("3D VAE widths [8, 16, 16, 16]; T5 encoder 4 x 128")


def test_the_test_size_describes_its_latents_and_tokens():
    # 5 frames -> 2 latent frames; 32 px -> 4; 2 * 2 * 2 = 8 video tokens
    assert "clip 5 x 32 x 32 = latents 2 x 16 x 4 x 4 = 8 video tokens + 16 text tokens" in tiny.TEST.describe()
    d = tiny.TEST.as_dict()
    assert d["layers"] == 1 and d["vae_channels"] == (8, 8, 8, 8) and d["text_tokens"] == 16


def test_the_tokenizer_is_word_level_in_t5s_layout():
    tok = tiny.tokenizer(8)
    words = sorted({w for p in tiny.PROMPTS for w in p.split()})
    assert len(tok) == 3 + len(words)
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2)
    ids = tok("A red BALL zebra").input_ids  # lower-cased; an unknown word is <unk>; </s> closes
    assert ids == [3 + words.index("a"), 3 + words.index("red"), 3 + words.index("ball"), 2, 1]
    padded = tok("a cat", padding="max_length", max_length=8).input_ids
    assert padded == [3 + words.index("a"), 3 + words.index("cat"), 1, 0, 0, 0, 0, 0]
    assert tok.model_max_length == 8


def test_the_pipeline_is_cogvideox_sized_from_the_size_and_seeded():
    state = torch.random.get_rng_state()
    pipe = tiny.cogvideox_pipeline(tiny.TEST, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global generator is left alone
    t = pipe.transformer.config
    assert (t.num_layers, t.num_attention_heads, t.attention_head_dim, t.text_embed_dim) == (1, 2, 16, 32)
    assert (t.sample_frames, t.sample_height, t.sample_width, t.patch_size) == (5, 4, 4, 2)  # 32 px / 2**3
    assert t.max_text_seq_length == 16 and t.use_rotary_positional_embeddings
    assert pipe.vae.config.temporal_compression_ratio == 4 and pipe.vae_scale_factor_spatial == 8
    assert pipe.text_encoder.config.d_model == 32 and pipe.text_encoder.config.num_layers == 1
    s = pipe.scheduler.config
    assert (s.prediction_type, s.rescale_betas_zero_snr, s.timestep_spacing, s.snr_shift_scale) == (
        "v_prediction", True, "trailing", 3.0,
    )  # fmt: skip
    same, other = tiny.cogvideox_pipeline(tiny.TEST, seed=3), tiny.cogvideox_pipeline(tiny.TEST, seed=4)
    w = dict(pipe.transformer.named_parameters())
    assert all(torch.equal(v, w[k]) for k, v in same.transformer.named_parameters())
    assert any(not torch.equal(v, w[k]) for k, v in other.transformer.named_parameters())


def test_videos_are_seeded_smooth_uint8_clips():
    v = tiny.videos(2, tiny.TEST, seed=1)
    assert v.dtype == torch.uint8 and tuple(v.shape) == (2, 5, 32, 32, 3) and v.is_contiguous()
    assert torch.equal(v, tiny.videos(2, tiny.TEST, seed=1)) and not torch.equal(v, tiny.videos(2, tiny.TEST, seed=2))
    # upsampled from 8 x 8: neighbouring pixels differ far less than uniform noise (mean |difference| 85)
    step = (v[:, :, :, 1:].float() - v[:, :, :, :-1].float()).abs().mean()
    assert step < 15
    assert v.float().std() > 20  # and the clip is not flat


@pytest.fixture(scope="module")
def test_model():
    return tiny.cogvideox_model(tiny.TEST)


def test_the_bench_model_is_the_cogvideox_family_at_the_sizes_clip(test_model):
    assert test_model.family == "cogvideox" and test_model.clip_size() == (5, 32, 32)
    assert type(test_model.pipe.scheduler).__name__ == "CogVideoXDPMScheduler"


FRAMES_BUG = (
    "bench/tiny.py:35,62: Size.frames 13 (BENCH) and 5 (TEST) are not 8k+1, the frames the cogvideox family takes "
    "(models/cogvideox.py size_rules: its VAE decodes an even latent count to 8k frames), so `vipo bench` times "
    "CogVideoX generation of 16-frame (8-frame) clips while describing 13 (5), at a size set_size refuses for a run"
)


@pytest.mark.xfail(strict=True, reason=FRAMES_BUG)
@pytest.mark.parametrize("size", [tiny.BENCH, tiny.TEST], ids=["BENCH", "TEST"])
def test_the_bench_sizes_are_clips_the_family_takes(test_model, size):
    step = test_model.size_rules()[0]  # 8: frames are 8k + 1
    assert (size.frames - 1) % step == 0


@pytest.mark.xfail(strict=True, reason=FRAMES_BUG)
def test_the_bench_model_decodes_clips_of_its_size(test_model):
    z = test_model.encode_video(tiny.videos(1, tiny.TEST).numpy())
    assert test_model.decode(z).shape == (1, 5, 32, 32, 3)  # (1, 8, 32, 32, 3): 2 latent frames decode to 8
