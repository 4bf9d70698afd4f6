"""Memory options (full fine-tune with a frozen reference, bf16 autocast, gradient checkpointing, 8-bit AdamW, VAE
tiling) on tiny real-family pipelines, and the caches and real-video dataset loader they train from."""

import json
import sys

import numpy as np
import pytest
import torch
import yaml
from tiny_families import dpo_batch, dpo_loss  # tests/ is on sys.path (rootdir conftest)

from vipo.config import RunConfig, TrainConfig, load, to_dict
from vipo.data.cache import LatentCache, TextCache
from vipo.data.real import EncodedRealVideos, load_clip, read_dataset
from vipo.errors import UserError
from vipo.io.video import write_mp4
from vipo.models import load_model
from vipo.run import driver
from vipo.train import trainer

PROMPTS = ["a red circle moving left", "a blue square moving up"]


@pytest.fixture()
def wan(tiny_family_dir):
    return load_model(str(tiny_family_dir("wan")))


def _batch(model, seed=0):
    return dpo_batch(model, PROMPTS, seed)


_dpo = dpo_loss


def test_full_fine_tune_lowers_the_loss_and_leaves_the_reference_unchanged(wan):
    cfg = TrainConfig(finetune="full", ref_offload=True, lr=1e-3)
    net = wan.denoiser
    params, frozen = trainer.trainable(wan, cfg)
    assert len(params) == len(list(net.parameters())) and all(p.requires_grad for p in params)
    assert frozen is not net and not any(p.requires_grad for p in frozen.parameters())
    ref_before = {k: v.clone() for k, v in frozen.state_dict().items()}
    ctx, opt, batch = (
        trainer.StepContext(wan, cfg, frozen, torch.device("cpu")),
        trainer.make_optimizer(cfg, params),
        _batch(wan),
    )
    first = _dpo(ctx, batch)
    assert first.item() == pytest.approx(np.log(2), abs=1e-6)  # policy = reference at the start
    for _ in range(6):
        opt.zero_grad()
        _dpo(ctx, batch).backward()
        opt.step()
    assert _dpo(ctx, batch).item() < first.item() - 1e-3
    assert wan.denoiser is net  # the reference was swapped in and out again
    assert all(torch.equal(v, ref_before[k]) for k, v in frozen.state_dict().items())
    assert any(not torch.equal(v, ref_before[k]) for k, v in net.state_dict().items())


def test_bf16_autocast_step_runs_on_cpu_with_float32_errors(wan):
    batch = _batch(wan)
    plain = trainer.StepContext(wan, TrainConfig(), None, torch.device("cpu"))
    cfg = TrainConfig(mixed_precision="bf16")
    params, _ = trainer.trainable(wan, cfg)
    ctx = trainer.StepContext(wan, cfg, None, torch.device("cpu"))
    e = ctx.errors(*batch)
    with torch.no_grad():
        e32 = plain.errors(*batch)
    assert e.dtype == torch.float32 and not torch.equal(e.detach(), e32)  # bf16 matmuls, float32 errors
    assert torch.allclose(e.detach(), e32, rtol=5e-2)
    _dpo(ctx, batch).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in params)


def test_gradient_checkpointing_gives_the_same_gradients(tiny_family_dir):
    grads = []
    for checkpointing in (False, True):
        model = load_model(str(tiny_family_dir("cogvideox")))
        torch.manual_seed(0)  # the same LoRA init
        params, _ = trainer.trainable(model, TrainConfig(gradient_checkpointing=checkpointing, lora_rank=4))
        for p in params:
            torch.nn.init.normal_(p, std=0.05)
        assert model.denoiser.gradient_checkpointing is checkpointing
        model.denoiser.train()
        ctx = trainer.StepContext(model, TrainConfig(), None, torch.device("cpu"))
        ctx.errors(*_batch(model)).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in params]))
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_adamw8bit_needs_bitsandbytes(monkeypatch, wan):
    cfg = TrainConfig(optimizer="adamw8bit")
    params = [torch.nn.Parameter(torch.zeros(4))]
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # as if not installed
    with pytest.raises(UserError, match="pip install bitsandbytes"):
        trainer.make_optimizer(cfg, params)
    with pytest.raises(UserError, match="pip install bitsandbytes"):  # `vipo run` says so before generating
        driver.check(RunConfig(model="x", train=cfg))
    monkeypatch.undo()
    pytest.importorskip("bitsandbytes")
    params, _ = trainer.trainable(wan, cfg)
    opt = trainer.make_optimizer(cfg, params)
    ctx = trainer.StepContext(wan, cfg, None, torch.device("cpu"))
    _dpo(ctx, _batch(wan)).backward()
    opt.step()


def test_memory_options_are_validated():
    for bad, msg in (
        ({"finetune": "qlora"}, "finetune"),
        ({"mixed_precision": "fp16"}, "mixed_precision"),
        ({"optimizer": "sgd"}, "optimizer"),
        ({"ref_offload": True}, "ref_offload"),
    ):
        with pytest.raises(UserError, match=msg):
            load(TrainConfig, None, bad)
    assert load(TrainConfig, None, {"finetune": "full", "ref_offload": "true"}).ref_offload is True


def test_run_checks_and_old_snapshots(tmp_path):
    with pytest.raises(UserError, match="train.real_videos: the world family draws its real videos from its renderer"):
        driver.check(RunConfig(train=TrainConfig(real_videos=str(tmp_path))))
    with pytest.raises(UserError, match="nothing: real videos not found"):
        driver.check(RunConfig(model="x", train=TrainConfig(real_videos=str(tmp_path / "nothing"))))
    old = to_dict(RunConfig())  # a run folder started before the memory options existed resumes unchanged
    del old["train"]["finetune"], old["generate"]["vae_tiling"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    driver.snapshot(RunConfig(), tmp_path)
    with pytest.raises(UserError, match="train.finetune: 'lora' then, 'full' now"):
        driver.snapshot(RunConfig(train=TrainConfig(finetune="full")), tmp_path)


def test_vae_tiling_and_slicing_decode(tiny_family_dir):
    for family in ("cogvideox", "wan", "ltx"):
        model = load_model(str(tiny_family_dir(family)))
        with torch.no_grad():
            lat = model.sample(model.encode_prompts(PROMPTS), model.encode_prompts([""]), [1, 2], 2, 3.0)
        want = model.decode(lat)
        model.vae_memory(tiling=True, slicing=True)
        assert model.vae.use_tiling and model.vae.use_slicing
        if family != "cogvideox":  # its tiles scale with the VAE's sample size: at 32 pixels they overlap wrongly
            assert np.abs(model.decode(lat).astype(int) - want.astype(int)).max() <= 1, family  # under a tile


def test_text_cache_encodes_each_prompt_once(tmp_path, wan):
    calls = []
    wan.pipe.text_encoder.register_forward_hook(lambda m, a, out: calls.append(a[0].shape[0]))
    cache = TextCache(tmp_path, wan.cache_key("text"))
    cond = cache.conditioning(wan, PROMPTS + PROMPTS[:1], torch.device("cpu"))
    assert calls == [2]  # the two distinct prompts, in one batch
    with torch.no_grad():
        want = wan.encode_prompts(PROMPTS)
    assert torch.allclose(cond["prompt_embeds"][:2], want["prompt_embeds"], atol=1e-6)
    calls.clear()
    again = TextCache(tmp_path, wan.cache_key("text")).conditioning(wan, PROMPTS[::-1], torch.device("cpu"))
    assert calls == [] and torch.equal(again["prompt_embeds"][0], cond["prompt_embeds"][1])
    with torch.no_grad():
        wan.pipe.text_encoder.shared.weight.mul_(2)  # a different text encoder: a different cache
    assert wan.cache_key("text") != cache.folder.name


def _videos(folder, n=2, frames=12):
    rng = np.random.default_rng(0)
    folder.mkdir(exist_ok=True)
    for i in range(n):
        write_mp4(folder / f"v{i}.mp4", rng.integers(0, 256, (frames, 32, 48, 3)).astype(np.uint8), upscale_to=32)
    return folder


def test_dataset_layouts_folder_vidgen_jsonl_and_openvid_csv(tmp_path):
    d = _videos(tmp_path / "d")
    for i in range(2):
        (d / f"v{i}.txt").write_text(f" caption {i}\n")
    assert [(c.video.name, c.caption) for c in read_dataset(d)] == [("v0.mp4", "caption 0"), ("v1.mp4", "caption 1")]
    vidgen = d / "vidgen.jsonl"  # VidGen-1M: {"vid": id, "caption": ...}, videos named id.mp4
    vidgen.write_text(
        json.dumps({"vid": "v1", "caption": "one"}) + "\n\n" + json.dumps({"vid": "v0.mp4", "caption": "zero"}) + "\n"
    )
    assert [(c.video.name, c.caption) for c in read_dataset(vidgen)] == [("v1.mp4", "one"), ("v0.mp4", "zero")]
    openvid = d / "openvid.csv"  # OpenVid-1M: video,caption,aesthetic score,...
    openvid.write_text('video,caption,aesthetic score\nv0.mp4,"a cat, sleeping",5.1\n')
    assert [(c.video.name, c.caption, c.where) for c in read_dataset(openvid)] == [
        ("v0.mp4", "a cat, sleeping", f"{openvid}: line 2")
    ]


@pytest.mark.parametrize(
    "name,text,message",
    [
        (
            "m.jsonl",
            '{"video": "v0.mp4", "caption": "ok"}\n{"video": "v1.mp4"}\n',
            r"m.jsonl: line 2: no caption column",
        ),
        ("m.jsonl", '{"video": "v0.mp4", "caption": "ok"}\n{"video": \n', r"m.jsonl: line 2: invalid JSON"),
        ("m.jsonl", '["v0.mp4", "ok"]\n', r"m.jsonl: line 1: expected a JSON object"),
        ("m.csv", "file,caption\nv0.mp4,ok\n", r"m.csv: line 2: no video column \(one of video, video_path"),
        (
            "m.csv",
            "video,caption\nv0.mp4,ok\nmissing.mp4,gone\n",
            r"m.csv: line 3: video 'missing.mp4': file not found",
        ),
        ("m.txt", "v0.mp4\n", r"m.txt: real videos must be a folder of videos or a .jsonl/.csv manifest"),
    ],
)
def test_manifest_errors_name_file_line_and_field(tmp_path, name, text, message):
    _videos(tmp_path)
    (tmp_path / name).write_text(text)
    with pytest.raises(UserError, match=message):
        read_dataset(tmp_path / name)


def test_dataset_errors_for_missing_files_captions_and_unreadable_videos(tmp_path):
    with pytest.raises(UserError, match="nowhere.jsonl: real videos not found"):
        read_dataset(tmp_path / "nowhere.jsonl")
    d = _videos(tmp_path / "d", n=1)
    with pytest.raises(UserError, match=r"v0.mp4: no caption file v0.txt beside it"):
        read_dataset(d)
    (d / "v0.txt").write_text("fine")
    (d / "v1.mp4").write_bytes(b"not a video")
    (d / "v1.txt").write_text("broken")
    clips = read_dataset(d)
    clip = load_clip(clips[0], 9, 32, 32)
    assert clip.shape == (9, 32, 32, 3) and clip.dtype == np.uint8  # 32x48 centre-cropped to square
    with pytest.raises(UserError, match=r"v1.txt: .*v1.mp4: unreadable video"):
        load_clip(clips[1], 9, 32, 32)
    with pytest.raises(UserError, match=r"v0.mp4: 12 frames, the model needs 13"):
        load_clip(clips[0], 13, 32, 32)


def test_real_videos_are_encoded_once_per_model(tmp_path, wan):
    d = _videos(tmp_path / "d", n=3)
    for i in range(3):
        (d / f"v{i}.txt").write_text(f"caption {i}")
    calls = []
    encode = wan.vae.encode
    wan.vae.encode = lambda *a, **k: (calls.append(1), encode(*a, **k))[1]
    real = EncodedRealVideos(read_dataset(d), LatentCache(tmp_path / "cache", wan.cache_key("vae")))
    draws = [real.indices(2, seed) for seed in range(4)]
    assert real.prepare(wan, [i for d_ in draws for i in d_]) == len(calls) == len({i for d_ in draws for i in d_})
    again = EncodedRealVideos(read_dataset(d), LatentCache(tmp_path / "cache", wan.cache_key("vae")))
    assert again.prepare(wan, [0, 1, 2]) == 3 - len(calls)  # only the clip no draw needed yet
    captions, latents = again.draw_latents(2, 0)
    assert captions == real.captions(draws[0]) and latents.shape[0] == 2
    want = wan.encode_video(load_clip(real.clips[draws[0][0]], wan.frames, wan.height, wan.width)[None])[0]
    assert torch.allclose(latents[0], want, atol=1e-5)
