"""A whole one-round ``vipo run`` through the CLI on a tiny random pipeline of each real family (placeholder critic)."""
import json

import numpy as np
import pytest

from tests.conftest import TINY_RUN
from vipo.cli import main


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


@pytest.mark.parametrize("family,method", [("cogvideox", "dpo"), ("wan", "kto"), ("ltx", "dpo")])
def test_one_round_run_through_cli(tmp_path, tiny_family_dir, monkeypatch, family, method):
    out = tmp_path / "run"
    calls = _count_encoder_calls(monkeypatch)
    assert main(["run", "--model", str(tiny_family_dir(family)), "--out", str(out), "--rounds", "1", "--method",
                 method, "--set", "judge.critic=metric"] + TINY_RUN) == 0
    # training encodes each prompt once (3 prompts: one batch) and never the videos: samples train from latents
    assert calls["steps"] > 1 and calls["text"] == 1 and calls["vae"] == 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["rounds"]) == {"0", "1"}
    r1 = out / "round-1"
    samples = [json.loads(line) for line in (r1 / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 9 and all((r1 / s["file_name"]).is_file() and (r1 / s["latent"]).is_file()
                                     for s in samples)
    ckpt = r1 / "checkpoint"
    assert json.loads((ckpt / "policy.json").read_text())["family"] == family
    assert (ckpt / "pytorch_lora_weights.safetensors").is_file()  # diffusers' load_lora_weights(checkpoint)
    log = [json.loads(line) for line in (r1 / "train_log.jsonl").read_text().splitlines()]
    assert log and all(np.isfinite(h["loss"]) for h in log)
    # the trained policy generates through the standalone verb
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle moving left\n")
    assert main(["generate", "--model", str(tiny_family_dir(family)), "--lora", str(ckpt), "--prompts",
                 str(prompts), "--samples-per-prompt", "1", "--steps", "2", "--out", str(tmp_path / "gen"),
                 "--quiet"]) == 0
    assert len(list((tmp_path / "gen" / "samples").glob("*.mp4"))) == 1
