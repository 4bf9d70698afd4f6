"""The real families (CogVideoX, Wan, LTX) on tiny random pipelines of their exact diffusers classes: sampling,
training steps in each objective, and adapters that a plain diffusers pipeline loads to the same videos."""

import json

import diffusers
import numpy as np
import pytest
import tiny_families
import torch
from tiny_families import FAMILIES, VIDEO  # tests/ is on sys.path (rootdir conftest)

from vipo import losses
from vipo.models import detect_family, load_model
from vipo.models import policy as policies
from vipo.train import lora

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


def _pipeline_video(base, adapter, prompt, seed):
    pipe = diffusers.DiffusionPipeline.from_pretrained(str(base))
    if isinstance(pipe, diffusers.CogVideoXPipeline):  # as IPO samples CogVideoX
        pipe.scheduler = diffusers.CogVideoXDPMScheduler.from_config(pipe.scheduler.config, timestep_spacing="trailing")
    pipe.load_lora_weights(str(adapter))
    extra = {"use_dynamic_cfg": True} if isinstance(pipe, diffusers.CogVideoXPipeline) else {}
    frames = pipe(
        prompt=prompt,
        num_frames=VIDEO["frames"],
        height=VIDEO["height"],
        width=VIDEO["width"],
        num_inference_steps=3,
        guidance_scale=3.0,
        generator=torch.Generator().manual_seed(seed),
        max_sequence_length=_max_tokens(pipe),
        output_type="np",
        **extra,
    ).frames
    return (np.clip(frames, 0, 1) * 255).round().astype(np.uint8)


def _max_tokens(pipe) -> int:
    if isinstance(pipe, diffusers.CogVideoXPipeline):
        return pipe.transformer.config.max_text_seq_length
    return 512 if isinstance(pipe, diffusers.WanPipeline) else 128


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
