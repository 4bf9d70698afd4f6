"""A whole one-round ``vipo run`` through the CLI on a tiny random pipeline of each real family (placeholder critic)."""

import json

import numpy as np
import pytest
import torch

from tests.conftest import TINY_RUN
from vipo.cli import main
from vipo.io.hashing import digest


def _count_encoder_calls(monkeypatch) -> dict:
    """Count text-encoder forwards and VAE encodes while the train stage runs."""
    from vipo.run import driver

    calls = {"text": 0, "vae": 0, "steps": 0}
    train_round = driver.train_round

    def counting(policy, *args, **kwargs):
        hook = policy.pipe.text_encoder.register_forward_hook(lambda *_: calls.update(text=calls["text"] + 1))
        encode = policy.vae.encode
        policy.vae.encode = lambda *a, **k: (calls.update(vae=calls["vae"] + 1), encode(*a, **k))[1]
        try:
            out = train_round(policy, *args, **kwargs)
        finally:
            hook.remove()
            del policy.vae.encode
        calls["steps"] = out["steps"]
        return out

    monkeypatch.setattr(driver, "train_round", counting)
    return calls


# CogVideoX (DPO) and Wan (KTO) run their round in tests/integration/test_rehearsal.py, with a served critic
@pytest.mark.parametrize("family,method", [("ltx", "dpo")])
def test_one_round_run_through_cli(tmp_path, tiny_family_dir, monkeypatch, family, method):
    out = tmp_path / "run"
    calls = _count_encoder_calls(monkeypatch)
    assert (
        main(
            [
                "run",
                "--model",
                str(tiny_family_dir(family)),
                "--out",
                str(out),
                "--rounds",
                "1",
                "--method",
                method,
                "--set",
                "judge.critic=pixelstats",
            ]
            + TINY_RUN
        )
        == 0
    )
    # generation stored each prompt's conditioning in the run's text cache and samples train from their latents:
    # the train stage runs neither the text encoder nor the VAE
    assert calls["steps"] > 1 and calls["text"] == 0 and calls["vae"] == 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["rounds"]) == {"0", "1"}
    r1 = out / "round-1"
    samples = [json.loads(line) for line in (r1 / "samples.jsonl").read_text().splitlines()]
    cached = {f.stem for f in (out / "cache" / "text").glob("*/*.safetensors")}
    assert {digest(p)[:32] for p in ["", *(s["prompt"] for s in samples)]} <= cached
    assert len(samples) == 9 and all((r1 / s["file_name"]).is_file() and (r1 / s["latent"]).is_file() for s in samples)
    ckpt = r1 / "checkpoint"
    assert json.loads((ckpt / "policy.json").read_text())["family"] == family
    assert (ckpt / "pytorch_lora_weights.safetensors").is_file()  # diffusers' load_lora_weights(checkpoint)
    log = [json.loads(line) for line in (r1 / "train_log.jsonl").read_text().splitlines()]
    assert log and all(np.isfinite(h["loss"]) for h in log)
    # the trained policy generates through the standalone verb
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle moving left\n")
    assert (
        main(
            [
                "generate",
                "--model",
                str(tiny_family_dir(family)),
                "--lora",
                str(ckpt),
                "--prompts",
                str(prompts),
                "--samples-per-prompt",
                "1",
                "--steps",
                "2",
                "--out",
                str(tmp_path / "gen"),
                "--quiet",
            ]
        )
        == 0
    )
    assert len(list((tmp_path / "gen").glob("*.mp4"))) == 1


def _record_encoder_calls(monkeypatch) -> list:
    """Events ``(round, stage, what)`` for every text-encoder forward, VAE encode and encoder move of any model the
    loop loads."""
    from vipo.models import policy as policies
    from vipo.run import driver

    events, phase = [], {"now": (0, "eval")}
    load_policy = policies.load_policy

    def loading(*args, **kwargs):
        model = load_policy(*args, **kwargs)
        model.pipe.text_encoder.register_forward_hook(lambda *_: events.append((*phase["now"], "text")))
        encode, move = model.vae.encode, model.encoders_to
        model.vae.encode = lambda *a, **k: (events.append((*phase["now"], "vae")), encode(*a, **k))[1]
        model.encoders_to = lambda d: (events.append((*phase["now"], f"to {d}")), move(d))[1]
        return model

    def staged(name):
        method = getattr(driver.Round, name)

        def run(self, *a, **k):
            phase["now"] = (self.k, name)
            return method(self, *a, **k)

        return run

    monkeypatch.setattr(policies, "load_policy", loading)
    for name in ("generate", "train", "evaluate"):
        monkeypatch.setattr(driver.Round, name, staged(name))
    return events


def _real_videos(folder):
    from vipo.io.video import write_mp4

    rng = np.random.default_rng(0)
    folder.mkdir()
    for i, (h, w) in enumerate([(32, 32), (48, 64)]):  # the second one is cropped and resized to the model's clip
        write_mp4(folder / f"clip{i}.mp4", rng.integers(0, 256, (12, h, w, 3)).astype(np.uint8))
        (folder / f"clip{i}.txt").write_text(f"real clip number {i}\n")
    return folder


def test_text_and_real_video_caches_are_reused_across_rounds_and_runs(tmp_path, tiny_family_dir, monkeypatch):
    """Round 2 (same prompts) runs neither the text encoder nor the VAE encoder; a second run with the same real
    videos encodes none of them again; during training the encoders sit on the CPU and are not called."""
    events = _record_encoder_calls(monkeypatch)
    prompts, cache = tmp_path / "prompts.txt", tmp_path / "latents"
    prompts.write_text("a cat surfing a wave\na red balloon over a city\nwaves on a beach at dusk\n")
    args = [
        "--model",
        str(tiny_family_dir("ltx")),
        "--method",
        "dpo",
        "--set",
        "judge.critic=pixelstats",
        "--set",
        f"prompts.source={prompts}",
        "--set",
        f"train.real_videos={_real_videos(tmp_path / 'real')}",
        "--set",
        f"train.real_cache={cache}",
    ] + TINY_RUN
    assert main(["run", "--out", str(tmp_path / "a"), "--rounds", "2"] + args) == 0
    r1 = [e[1:] for e in events if e[0] == 1]
    assert r1.count(("train", "vae")) == 2  # each real video once, before training
    assert r1.count(("generate", "text")) == 1 and r1.count(("train", "text")) == 1  # prompts, then the captions
    for k in (1, 2):  # the encoders leave for the CPU around the training steps and are not used there
        train = [e[2] for e in events if e[:2] == (k, "train")]
        i = train.index("to cpu")
        assert train[i + 1 :] == ["to cpu"] and "text" not in train[i:]
    assert not [e for e in events if e[0] == 2 and e[2] in ("text", "vae")]  # round 2: everything cached
    assert len(list(cache.glob("*/*.safetensors"))) == 2
    log = [json.loads(line) for line in (tmp_path / "a" / "round-2" / "train_log.jsonl").read_text().splitlines()]
    assert all(np.isfinite(h["nll_real"]) for h in log)
    events.clear()
    assert main(["run", "--out", str(tmp_path / "b"), "--rounds", "1"] + args) == 0
    assert not [e for e in events if e[2] == "vae"]  # another run: the real videos come from the shared cache


def test_full_fine_tune_checkpoint_is_the_next_rounds_policy_and_reference(tmp_path, tiny_family_dir):
    from vipo.models import load_model
    from vipo.models import policy as policies

    base, out = tiny_family_dir("wan"), tmp_path / "run"
    assert (
        main(
            [
                "run",
                "--model",
                str(base),
                "--out",
                str(out),
                "--rounds",
                "2",
                "--method",
                "dpo",
                "--set",
                "judge.critic=pixelstats",
                "--set",
                "train.finetune=full",
                "--set",
                "train.ref_offload=true",
            ]
            + TINY_RUN
        )
        == 0
    )
    ckpt = out / "round-1" / "checkpoint"
    policy = json.loads((ckpt / "policy.json").read_text())
    assert policy["denoiser"] == "transformer" and policy["adapters"] == []
    assert (ckpt / "transformer" / "config.json").is_file()  # a diffusers model folder
    trained, plain = policies.load_policy(str(base), ckpt).denoiser.state_dict(), load_model(str(base)).denoiser
    changed = [k for k, v in plain.state_dict().items() if not torch.equal(v, trained[k])]
    assert len(changed) > len(trained) // 2  # every weight trains, not an adapter
    # round 2 starts from round 1's weights as both policy and reference: its first step is at log 2 exactly
    first = json.loads((out / "round-2" / "train_log.jsonl").read_text().splitlines()[0])
    assert first["dpo_loss"] == pytest.approx(np.log(2), abs=1e-6)
    assert first["err_ref_chosen"] == pytest.approx(first["err_policy_chosen"], abs=1e-7)


def test_clip_size_through_the_cli(tmp_path, capsys, tiny_model_dir):
    """A Wan folder saved by plain diffusers (no vipo.json) at its published 81 x 480 x 832 does not fit the tiny
    transformer's rotary table: one line naming the nearest size, exit 2; at a chosen size it generates. The world's
    clips have one size only."""
    import tiny_families

    from vipo.io.video import read_mp4

    torch.manual_seed(0)
    tiny_families.build("wan").save_pretrained(tmp_path / "wan")
    args = [
        "generate",
        "--model",
        str(tmp_path / "wan"),
        "--prompt",
        "a cat surfing a wave",
        "--samples-per-prompt",
        "1",
        "--steps",
        "2",
        "--out",
        str(tmp_path / "gen"),
        "--quiet",
    ]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("vipo: error: generate.width=832 (the default): above 512 (nearest: 512).")
    assert main(args + ["--frames", "13", "--height", "32", "--width", "48"]) == 0
    (video,) = (tmp_path / "gen").glob("*.mp4")  # the videofolder layout: mp4s straight in --out
    assert read_mp4(video).shape == (13, 64, 96, 3)  # (small clips are written upscaled by an integer)
    capsys.readouterr()
    assert (
        main(
            ["run", "--model", str(tiny_model_dir), "--out", str(tmp_path / "run"), "--set", "eval.frames=25"]
            + TINY_RUN
        )
        == 2
    )
    assert "eval.frames=25: the world model's clips are always 9 x 32 x 32" in capsys.readouterr().err
