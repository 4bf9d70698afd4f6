"""``model_dtype: bfloat16`` on tiny pipelines of the real families: frozen weights load in bf16, LoRA and full
fine-tune weights train in float32, latents and errors stay float32, and a bf16 policy's adapters give the video a
plain diffusers pipeline loaded in bf16 gives."""

import diffusers
import numpy as np
import pytest
import torch
import yaml
from safetensors import safe_open
from tiny_families import FAMILIES, VIDEO, dpo_batch, dpo_loss  # tests/ is on sys.path (rootdir conftest)

from vipo import losses
from vipo.config import RunConfig, TrainConfig, load, to_dict
from vipo.errors import UserError
from vipo.models import load_model
from vipo.models import policy as policies
from vipo.models.pipeline import dtype_kwargs
from vipo.run import driver
from vipo.train import lora, trainer

PROMPTS = ["a red circle moving left", "a blue square moving up"]
BF16 = torch.bfloat16


def _cond(model, prompts):
    with torch.no_grad():
        return model.encode_prompts(prompts)


def _low_precision(module) -> list[str]:
    """Names of ``module``'s float parameters that are not bf16, less those diffusers keeps in float32 on purpose."""
    keep = getattr(module, "_keep_in_fp32_modules", None) or ()
    return [n for n, p in module.named_parameters() if p.dtype != BF16 and not any(k in n.split(".") for k in keep)]


def _batch(model, seed=0):
    return dpo_batch(model, PROMPTS, seed)


_dpo = dpo_loss


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


@pytest.mark.parametrize("family", FAMILIES)
def test_lora_on_bf16_weights_trains_float32_and_lowers_the_dpo_loss(family, tiny_family_dir):
    model = load_model(str(tiny_family_dir(family)), dtype="bfloat16")
    batch = _batch(model)
    cfg = TrainConfig(lr=1e-2, lora_rank=4, lora_alpha=4)  # mixed_precision "no": bf16 weights autocast anyway
    params, frozen = trainer.trainable(model, cfg, seed=0)
    net = model.denoiser
    assert frozen is None and params and all(p.dtype == torch.float32 and p.requires_grad for p in params)
    assert {id(p) for p in params} == {id(p) for n, p in net.named_parameters() if p.requires_grad}
    assert _low_precision(net) == [n for n, p in net.named_parameters() if "lora_" in n]  # the base stays bf16
    ctx = trainer.StepContext(model, cfg, None, torch.device("cpu"))
    with ctx.autocast():  # bf16 base and float32 adapter meet in bf16 matmuls
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == BF16
    e = ctx.errors(*batch)
    assert e.dtype == torch.float32 and torch.isfinite(e).all()
    opt = trainer.make_optimizer(cfg, params)
    first = _dpo(ctx, batch)
    assert first.item() == pytest.approx(np.log(2), abs=1e-6)  # B = 0: the policy is the reference
    for _ in range(6):
        opt.zero_grad()
        _dpo(ctx, batch).backward()
        opt.step()
    assert _dpo(ctx, batch).item() < first.item() - 1e-3
    assert all(p.dtype == torch.float32 for p in params)


def _diffusers_video(base, prompt, seed, adapter=None, transformer=None):
    """The video plain diffusers samples in bf16: the base, with ``load_lora_weights(adapter)`` or ``transformer`` (a
    full fine-tune's folder) in place of its own."""
    pipe = diffusers.DiffusionPipeline.from_pretrained(str(base), **dtype_kwargs(BF16))  # = torch_dtype=bf16
    if isinstance(pipe, diffusers.CogVideoXPipeline):  # as IPO samples CogVideoX
        pipe.scheduler = diffusers.CogVideoXDPMScheduler.from_config(pipe.scheduler.config, timestep_spacing="trailing")
    if adapter is not None:
        pipe.load_lora_weights(str(adapter))
    if transformer is not None:
        pipe.transformer = type(pipe.transformer).from_pretrained(str(transformer), **dtype_kwargs(BF16))
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


@pytest.mark.parametrize("family", FAMILIES)
def test_full_fine_tune_of_bf16_weights_trains_float32_master_weights(tmp_path, tiny_family_dir, family):
    base = tiny_family_dir(family)
    model = load_model(str(base), dtype="bfloat16")
    batch = _batch(model)
    loaded = model.denoiser
    cfg = TrainConfig(finetune="full", lr=1e-3, ref_offload=True)
    params, frozen = trainer.trainable(model, cfg)
    net = model.denoiser
    # the policy is a float32 copy read from the base's folder, and the reference a float32 copy of it; the text
    # encoder and VAE stay bf16
    assert net is not loaded and frozen is not net and len(params) == len(list(net.parameters()))
    assert all(p.dtype == torch.float32 and p.requires_grad for p in net.parameters())
    assert all(p.dtype == torch.float32 and not p.requires_grad for p in frozen.parameters())
    assert _low_precision(model.pipe.text_encoder) == _low_precision(model.pipe.vae) == []
    ctx, opt = trainer.StepContext(model, cfg, frozen, torch.device("cpu")), trainer.make_optimizer(cfg, params)
    first = _dpo(ctx, batch)
    assert first.item() == pytest.approx(np.log(2), abs=1e-6)  # policy = reference at the start
    for _ in range(6):
        opt.zero_grad()
        _dpo(ctx, batch).backward()
        opt.step()
    assert _dpo(ctx, batch).item() < first.item() - 1e-3 and model.denoiser is net
    trained = {k: v.clone() for k, v in net.state_dict().items()}
    ckpt = tmp_path / "round-1" / "checkpoint"
    lora.write_checkpoint(model, ckpt, str(base), None, 1, full=True)
    with safe_open(str(next((ckpt / "transformer").glob("*.safetensors"))), "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F32"}  # the checkpoint holds the master weights
    # the next round samples with it in bf16, as diffusers loads it, and trains from the float32 weights unrounded
    policy = policies.load_policy(str(base), ckpt, dtype="bfloat16")
    assert _low_precision(policy.denoiser) == [] and policy.denoiser_source == ckpt / "transformer"
    master = lora.master_denoiser(policy).state_dict()
    assert all(torch.equal(master[k], v) for k, v in trained.items())
    ours = policy.decode(policy.sample(_cond(policy, PROMPTS[:1]), _cond(policy, [""]), [7], 3, 3.0))
    assert np.array_equal(ours, _diffusers_video(base, PROMPTS[0], 7, transformer=ckpt / "transformer"))


@pytest.mark.parametrize("family", FAMILIES)
def test_bf16_adapter_chain_stays_unfused_and_matches_diffusers_in_bf16(tmp_path, family, tiny_family_dir):
    """Two rounds of (random) adapters trained on bf16 weights: each round's policy keeps its chain as one frozen
    unfused adapter, the next round's adapter trains beside it against it, and ``load_lora_weights(checkpoint)`` on
    a pipeline loaded in bf16 samples the same video for the same seed, bit for bit."""
    base = tiny_family_dir(family)
    model = load_model(str(base), dtype="bfloat16")
    prompt, seed = PROMPTS[0], 7
    for rnd in (1, 2):
        x, cond, noise, t = _batch(model)
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


def test_model_dtype_is_validated_and_old_snapshots_load(tmp_path, tiny_model_dir, tiny_family_dir):
    for over, msg in (
        ({"model_dtype": "fp8"}, "model_dtype must be float32 or bfloat16"),
        ({"model_dtype": "float16"}, "model_dtype must be float32 or bfloat16 .float16 trains without"),
        ({"model_dtype": "bfloat16"}, "model_dtype: the embedded world model loads in float32 only"),
    ):
        with pytest.raises(UserError, match=msg):
            load(RunConfig, None, over)
    with pytest.raises(UserError, match="model_dtype: the world family loads in float32 only, got 'bfloat16'"):
        load_model(str(tiny_model_dir), dtype="bfloat16")
    with pytest.raises(UserError, match="model_dtype must be one of float32, bfloat16, float16, got 'half'"):
        load_model(str(tiny_family_dir("wan")), dtype="half")
    cfg = load(RunConfig, None, {"model": str(tiny_family_dir("wan")), "model_dtype": "bfloat16"})
    assert cfg.model_dtype == "bfloat16" and RunConfig().model_dtype == "float32"
    assert driver.Round(cfg, tmp_path, 1, None).policy().dtype == BF16  # the loop loads in it
    old = to_dict(RunConfig(model=cfg.model))  # a run folder started before the option existed resumes unchanged
    del old["model_dtype"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    driver.snapshot(RunConfig(model=cfg.model), tmp_path)
    with pytest.raises(UserError, match="model_dtype: 'float32' then, 'bfloat16' now"):
        driver.snapshot(cfg, tmp_path)
