"""``vipo export --merge``: a round checkpoint becomes one plain model folder that samples the same videos; and the GPU
recipes in configs/ load and validate without downloading anything."""

from pathlib import Path

import diffusers
import numpy as np
import pytest
import torch
from tiny_families import FAMILIES, VIDEO  # tests/ is on sys.path (rootdir conftest)

from vipo import config as C
from vipo.cli import main
from vipo.models import load_model
from vipo.models import policy as policies
from vipo.train import lora

ROOT = Path(__file__).resolve().parents[2]
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
    extra = {"use_dynamic_cfg": True} if family == "cogvideox" else {}  # the scheduler (DPM, trailing) is saved
    frames = pipe(
        prompt=PROMPT,
        num_frames=VIDEO["frames"],
        height=VIDEO["height"],
        width=VIDEO["width"],
        num_inference_steps=3,
        guidance_scale=3.0,
        generator=torch.Generator().manual_seed(SEED),
        max_sequence_length={"cogvideox": 32, "wan": 512, "ltx": 128}[family],
        output_type="np",
        **extra,
    ).frames
    theirs = (np.clip(frames, 0, 1) * 255).round().astype(np.uint8)
    assert np.abs(ours.astype(int) - theirs.astype(int)).max() <= 1
    assert main(["export", "--merge", str(ckpt), "--out", str(out)]) == 2  # never overwrites


def test_merged_export_of_the_world_family(tmp_path, tiny_model_dir):
    ckpt = _two_rounds(policies.load_policy(str(tiny_model_dir)), tiny_model_dir, tmp_path)
    out = tmp_path / "merged"
    assert main(["export", "--merge", str(ckpt), "--out", str(out)]) == 0
    assert np.array_equal(
        _video(load_model(str(out)), 4, 2.0), _video(policies.load_policy(str(tiny_model_dir), ckpt), 4, 2.0)
    )


RECIPES = [
    ("cogvideox-2b-dpo.yaml", "THUDM/CogVideoX-2b", "dpo"),
    ("cogvideox-5b-kto.yaml", "THUDM/CogVideoX-5b", "kto"),
    ("wan-1.3b-dpo.yaml", "Wan-AI/Wan2.1-T2V-1.3B-Diffusers", "dpo"),
]


@pytest.mark.parametrize("name,model,method", RECIPES)
def test_gpu_recipes_validate_and_are_documented(name, model, method, monkeypatch):
    cfg = C.load(C.RunConfig, ROOT / "configs" / name)  # validation only: nothing is downloaded
    assert (cfg.model, cfg.train.method, cfg.device) == (model, method, "cuda")
    assert cfg.train.mixed_precision == "bf16" and cfg.train.gradient_checkpointing
    assert cfg.model_dtype == "bfloat16"  # frozen weights in bf16 (docs/models.md: memory)
    assert f"configs/{name}" in (ROOT / "docs" / "models.md").read_text()
    # a prompt-reading critic; evaluation on the suite's held-out prompts and VBench's, never a training prompt
    assert cfg.judge.critic in ("openai", "reward")
    from vipo.data import suites

    monkeypatch.chdir(ROOT)  # the recipes name their prompt files relative to the repository
    got = suites.resolve(cfg)
    assert got.heldout_of == cfg.prompts.source and len(got.splits["heldout"]) >= 30 and len(got.extra["vbench"]) == 66
    assert (cfg.generate.frames, cfg.generate.height) == ((81, 480) if "wan" in name else (49, 480))
