"""models.policy: ``vipo export --merge`` (export_merged) makes a round checkpoint one plain model folder that samples
the same videos."""

from pathlib import Path

import diffusers
import numpy as np
import pytest
import torch
from family_helpers import diffusers_frames
from tiny_families import FAMILIES  # tests/ is on sys.path (rootdir conftest)
from train_helpers import _batch, _errors

from vipo.cli import main
from vipo.models import load_model
from vipo.models import policy as policies
from vipo.train import lora

PROMPT, SEED = "a red circle moving left", 7


def _two_rounds(model, base: Path, tmp_path: Path) -> Path:
    """Two rounds of random adapters, checkpointed as the loop does; returns round 2's checkpoint."""
    for rnd in (1, 2):
        for p in lora.attach(model, rank=4, alpha=8 * rnd):
            torch.nn.init.normal_(p, std=0.1)
        prev = tmp_path / f"round-{rnd - 1}" / "checkpoint" if rnd > 1 else None
        lora.write_checkpoint(model, tmp_path / f"round-{rnd}" / "checkpoint", str(base), prev, rnd)
        model = policies.load_policy(str(base), tmp_path / f"round-{rnd}" / "checkpoint")
    return tmp_path / "round-2" / "checkpoint"


def _video(model, steps=3, guidance=3.0):
    with torch.no_grad():
        return model.decode(
            model.sample(model.encode_prompts([PROMPT]), model.encode_prompts([""]), [SEED], steps, guidance)
        )


@pytest.mark.parametrize("family", FAMILIES)
def test_merged_export_loads_in_diffusers_and_samples_the_same_video(tmp_path, tiny_family_dir, family):
    base = tiny_family_dir(family)
    ckpt = _two_rounds(load_model(str(base)), base, tmp_path)
    ours = _video(policies.load_policy(str(base), ckpt))  # what `vipo generate --lora ckpt` samples
    out = tmp_path / "merged"
    assert main(["export", "--merge", str(ckpt), "--out", str(out)]) == 0
    pipe = diffusers.DiffusionPipeline.from_pretrained(str(out))
    assert not any("lora" in n for n, _ in pipe.transformer.named_parameters())  # fused, not an adapter
    theirs = diffusers_frames(pipe, PROMPT, SEED)  # the scheduler (DPM, trailing) is saved with the merged model
    assert np.abs(ours.astype(int) - theirs.astype(int)).max() <= 1
    assert main(["export", "--merge", str(ckpt), "--out", str(out)]) == 2  # never overwrites


def test_merged_export_of_the_world_family(tmp_path, tiny_model_dir):
    ckpt = _two_rounds(policies.load_policy(str(tiny_model_dir)), tiny_model_dir, tmp_path)
    out = tmp_path / "merged"
    assert main(["export", "--merge", str(ckpt), "--out", str(out)]) == 0
    assert np.array_equal(
        _video(load_model(str(out)), 4, 2.0), _video(policies.load_policy(str(tiny_model_dir), ckpt), 4, 2.0)
    )


def test_round_checkpoint_reloads_to_the_trained_policy(tmp_path, tiny):
    base = tmp_path / "base"
    tiny.save(base)
    model = policies.load_policy(str(base))
    for rnd in (1, 2):
        params = lora.attach(model, rank=4, alpha=4)
        for p in params:
            torch.nn.init.normal_(p, std=0.05)
        w, _, cond = _batch(model, seed=rnd)
        g = torch.Generator().manual_seed(rnd)
        noise, t = torch.randn(w.shape, generator=g), model.sample_timesteps(w.shape[0], g)
        with torch.no_grad():
            want = _errors(model, w, cond, noise, t)
        prev = tmp_path / f"round-{rnd - 1}" / "checkpoint" if rnd > 1 else None
        lora.write_checkpoint(model, tmp_path / f"round-{rnd}" / "checkpoint", str(base), prev, rnd)
        model = policies.load_policy(str(base), tmp_path / f"round-{rnd}" / "checkpoint")
        with torch.no_grad():
            got = _errors(model, w, cond, noise, t)
        assert torch.allclose(got, want, atol=1e-5), rnd
    assert policies.read_policy(tmp_path / "round-2" / "checkpoint")["adapters"] == ["lora-round-1", "lora-round-2"]
