"""Two-round ``vipo run`` with ``model_dtype: bfloat16`` through the CLI on a tiny real family: LoRA (round 2 trains
beside the frozen, unfused chain) and full fine-tune (float32 master weights across rounds)."""

import json

import numpy as np
import pytest
from safetensors import safe_open

from tests.conftest import TINY_RUN
from vipo.cli import main


def _dtypes(path) -> set:
    with safe_open(str(path), "pt") as f:
        return {f.get_slice(k).get_dtype() for k in f.keys()}


@pytest.mark.parametrize("finetune", ["lora", "full"])
def test_two_bf16_rounds_through_cli(tmp_path, tiny_family_dir, finetune):
    out = tmp_path / "run"
    assert (
        main(
            [
                "run",
                "--model",
                str(tiny_family_dir("wan")),
                "--out",
                str(out),
                "--rounds",
                "2",
                "--method",
                "dpo",
                "--set",
                "judge.critic=pixelstats",
                "--set",
                "model_dtype=bfloat16",
                "--set",
                f"train.finetune={finetune}",
            ]
            + TINY_RUN
        )
        == 0
    )
    texts = list((out / "cache" / "text").glob("*/*.safetensors"))
    assert texts and all(_dtypes(f) == {"BF16"} for f in texts)  # the bf16 text encoder's conditioning
    for k in (1, 2):
        ckpt = out / f"round-{k}" / "checkpoint"
        weights = (
            ckpt / f"lora-round-{k}" / "pytorch_lora_weights.safetensors"
            if finetune == "lora"
            else next((ckpt / "transformer").glob("*.safetensors"))
        )
        assert _dtypes(weights) == {"F32"}  # trained weights are saved as they trained: float32
        log = [json.loads(line) for line in (out / f"round-{k}" / "train_log.jsonl").read_text().splitlines()]
        assert log and all(np.isfinite(h["loss"]) and not h.get("skipped") for h in log)
    # round 2 starts from round 1's policy as both policy and reference: its first step is at log 2 (LoRA: the chain
    # plus a zero adapter against the chain alone; full: float32 master weights against a float32 copy)
    first = json.loads((out / "round-2" / "train_log.jsonl").read_text().splitlines()[0])
    assert first["dpo_loss"] == pytest.approx(np.log(2), abs=1e-6)
    assert json.loads((out / "summary.json").read_text())["rounds"].keys() == {"0", "1", "2"}
    # the trained policy samples in bf16 through the standalone verb
    assert (
        main(
            [
                "generate",
                "--model",
                str(tiny_family_dir("wan")),
                "--lora",
                str(out / "round-2" / "checkpoint"),
                "--model-dtype",
                "bfloat16",
                "--prompt",
                "a red circle moving left",
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
