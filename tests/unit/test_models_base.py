"""vipo.models.base.VideoModel's shared behaviour, on a minimal family: the clip size, a fixed-size family's one-line
refusal of any other size, the denoiser's slot and the default hooks."""

import numpy as np
import pytest
import tiny_families
import torch
from family_helpers import BF16, PROMPTS, _cond, _low_precision
from tiny_families import (  # tests/ is on sys.path (rootdir conftest)  # tests/ is on sys.path (rootdir conftest)
    FAMILIES,
    VIDEO,
)

from vipo import losses
from vipo.errors import UserError
from vipo.models import detect_family, load_model
from vipo.models.base import VideoModel
from vipo.train import lora


class Fixed(VideoModel):
    """A family whose network is built for 9 x 32 x 48 clips (the base class's default set_size refuses others)."""

    family, parameterization, lora_targets = "fixed", "eps", ("proj",)
    frames, height, width = 9, 32, 48

    def __init__(self, net=None, pipe=None):
        self.net = net if net is not None else torch.nn.Linear(2, 2)
        if pipe is not None:
            self.pipe = pipe

    @property
    def denoiser(self):
        return self.pipe.transformer if hasattr(self, "pipe") else self.net

    load = encode_prompts = sample = decode = encode_video = sample_timesteps = predict_and_target = save = None
    train_timesteps = 1000


def test_clip_size_is_frames_height_width():
    assert Fixed().clip_size() == (9, 32, 48)


def test_set_size_keeps_the_size_it_has_and_zero_means_keep():
    m = Fixed()
    m.set_size()
    m.set_size(9, 32, 48)
    m.set_size(0, 32, 0)
    assert m.clip_size() == (9, 32, 48)


@pytest.mark.parametrize(
    "kw, field, value",
    [({"frames": 17}, "frames", 17), ({"height": 64}, "height", 64), ({"frames": 9, "width": 40}, "width", 40)],
)
def test_any_other_size_is_refused_naming_the_field(kw, field, value):
    with pytest.raises(UserError) as e:
        Fixed().set_size(**kw, where="eval")
    assert str(e.value) == (
        f"eval.{field}={value}: the fixed model's clips are always 9 x 32 x 48 (frames x height x width); "
        f"leave eval.{field} at 0"
    )


def test_the_first_wrong_field_is_named():
    with pytest.raises(UserError, match=r"^generate\.frames=5: "):
        Fixed().set_size(5, 7, 3)


def test_denoiser_slot_finds_the_attribute_on_the_model_or_its_pipeline():
    m = Fixed()
    assert m.denoiser_slot() == (m, "net")

    class Pipe:
        pass

    pipe = Pipe()
    pipe.transformer = torch.nn.Linear(3, 3)
    p = Fixed(pipe=pipe)
    assert p.denoiser_slot() == (pipe, "transformer")
    # swapping the denoiser through its slot is what a full fine-tune's checkpoint does
    owner, name = p.denoiser_slot()
    new = torch.nn.Linear(3, 3)
    setattr(owner, name, new)
    assert p.denoiser is new


def test_a_denoiser_held_nowhere_visible_is_an_error():
    class Hidden(Fixed):
        @property
        def denoiser(self):
            return torch.nn.Linear(1, 1)  # a new module each time: held by no attribute

    with pytest.raises(RuntimeError, match="Hidden: cannot find its denoiser's attribute"):
        Hidden().denoiser_slot()


def test_a_family_without_caches_refuses_a_cache_key():
    m = Fixed()
    for part in ("text", "vae"):
        with pytest.raises(ValueError, match=f"^the fixed family caches no {part}$"):
            m.cache_key(part)


def test_generation_returns_latents_and_each_seed_stands_alone(tmp_path, model, family, tiny_family_dir):
    assert model.family == family == detect_family(tiny_family_dir(family))
    model.save(tmp_path / "copy")  # a diffusers folder that loads back as the same family, clip size included
    copy = load_model(str(tmp_path / "copy"))
    assert copy.family == family and (copy.frames, copy.height, copy.width) == (model.frames, model.height, model.width)
    assert (model.frames, model.height, model.width) == (VIDEO["frames"], VIDEO["height"], VIDEO["width"])
    cond, uncond = _cond(model, PROMPTS), _cond(model, [""])
    assert all(v.shape[0] == 2 for v in cond.values())
    latents = model.sample(cond, uncond, [11, 12], num_steps=2, guidance=3.0)
    assert latents.dtype == torch.float32 and latents.device.type == "cpu" and latents.shape[0] == 2
    alone = model.sample({k: v[1:] for k, v in cond.items()}, uncond, [12], num_steps=2, guidance=3.0)
    assert torch.allclose(alone[0], latents[1], atol=1e-5)
    frames = model.decode(latents)
    assert frames.dtype == np.uint8 and frames.shape == (2, VIDEO["frames"], VIDEO["height"], VIDEO["width"], 3)
    assert model.encode_video(frames).shape == latents.shape  # real videos land in the same latent space
    # training timesteps (on the transformer's 0-1000 scale): the family's density, or uniform inside a window
    g = torch.Generator().manual_seed(0)
    t, hi = model.sample_timesteps(2000, g).float(), model.sample_timesteps(2000, g, (0.8, 1.0)).float()
    assert 0 <= t.min() < 200 and 800 < t.max() <= 1000 and 800 <= hi.min() and hi.max() <= 1000


def test_a_plain_diffusers_folder_generates_at_the_size_it_is_given(tmp_path, family):
    """No vipo.json: the family's published size, checked against the model (the tiny Wan's rotary table is 32
    positions per axis, so 832 wide does not fit); a chosen small size samples and encodes in seconds."""
    from vipo.errors import UserError

    torch.manual_seed(0)
    tiny_families.build(family).save_pretrained(tmp_path / "plain")
    model = load_model(str(tmp_path / "plain"))
    assert model.clip_size() == {"cogvideox": (9, 64, 64), "wan": (81, 480, 832), "ltx": (161, 512, 704)}[family]
    if family == "wan":
        with pytest.raises(UserError, match=r"generate.width=832 \(the default\): above 512 \(nearest: 512\)"):
            model.set_size()
    step = {"cogvideox": 16, "wan": 16, "ltx": 32}[family]
    with pytest.raises(UserError) as bad:
        model.set_size(11, 42, 8 * step + 1, where="eval")
    frames = "8k+1 (nearest: 9 or 17)" if family == "cogvideox" else "4k+1 (nearest: 9 or 13)"
    assert str(bad.value).startswith(f"eval.frames=11: not {frames}; eval.height=42: not a multiple of {step}")
    assert f"eval.width={8 * step + 1}: not a multiple of {step} (nearest: {8 * step} or {9 * step})" in str(bad.value)
    assert "\n" not in str(bad.value) and model.clip_size()[0] != 11  # refused: nothing changed
    model.set_size(9, 32, 2 * step)
    latents = model.sample(_cond(model, PROMPTS[:1]), _cond(model, [""]), [3], num_steps=2, guidance=3.0)
    frames = model.decode(latents)
    assert frames.shape == (1, 9, 32, 2 * step, 3) and model.encode_video(frames).shape == latents.shape


@pytest.mark.parametrize("method", ["dpo", "kto", "rwr"])
def test_each_objective_lowers_its_loss_on_a_fixed_batch(model, method):
    cond1 = _cond(model, PROMPTS)
    w = model.sample(cond1, _cond(model, [""]), [1, 2], num_steps=2, guidance=3.0)
    l_ = torch.randn(w.shape, generator=torch.Generator().manual_seed(3))
    params = lora.attach(model, rank=4, alpha=4)
    opt = torch.optim.AdamW(params, lr=1e-2)
    g = torch.Generator().manual_seed(0)
    n = w.shape[0]
    noise, t = torch.randn(w.shape, generator=g), model.sample_timesteps(n, g)
    x, cond = torch.cat([w, l_]), {k: torch.cat([v, v]) for k, v in cond1.items()}
    noise2, t2 = torch.cat([noise, noise]), torch.cat([t, t])
    net = model.denoiser

    def loss_now():
        e = losses.per_sample_error(*model.predict_and_target(x, cond, noise2, t2))
        with torch.no_grad():
            net.disable_adapters()
            r = losses.per_sample_error(*model.predict_and_target(x, cond, noise2, t2))
            net.enable_adapters()
        if method == "dpo":
            return losses.dpo(e[:n], e[n:], r[:n], r[n:], beta=500.0).loss
        if method == "kto":
            return losses.kto(e, r, torch.tensor([True] * n + [False] * n), beta=500.0).loss
        return losses.reward_weighted(e, torch.tensor([1.0] * n + [0.1] * n)).loss

    first = loss_now()
    if method == "dpo":
        assert first.item() == pytest.approx(np.log(2), abs=1e-6)  # policy = reference at the start
    for _ in range(8):
        opt.zero_grad()
        loss_now().backward()
        opt.step()
    assert loss_now().item() < first.item() - 1e-3


@pytest.mark.parametrize("family", FAMILIES)
def test_bf16_weights_sample_float32_latents(family, tiny_family_dir):
    model = load_model(str(tiny_family_dir(family)), dtype="bfloat16")
    full = load_model(str(tiny_family_dir(family)))
    assert model.dtype == BF16 and full.dtype == torch.float32
    for part in ("text_encoder", "vae", "transformer"):
        assert _low_precision(getattr(model.pipe, part)) == [], part
    cond, uncond = _cond(model, PROMPTS), _cond(model, [""])
    assert cond["prompt_embeds"].dtype == BF16
    latents = model.sample(cond, uncond, [11, 12], num_steps=2, guidance=3.0)
    want = full.sample(_cond(full, PROMPTS), _cond(full, [""]), [11, 12], num_steps=2, guidance=3.0)
    assert latents.dtype == torch.float32 and latents.device.type == "cpu" and latents.shape == want.shape
    # bf16 rounding, not another video: measured 0.5-1.2% (relative L2) after 2 steps on these tiny models
    assert ((latents - want).norm() / want.norm()).item() < 0.05
    frames = model.decode(latents)
    assert frames.dtype == np.uint8 and frames.shape == (2, VIDEO["frames"], VIDEO["height"], VIDEO["width"], 3)
    encoded = model.encode_video(frames)
    assert encoded.dtype == torch.float32 and encoded.shape == latents.shape
