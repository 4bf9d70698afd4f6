"""What `vipo run` and `vipo generate` check before they write anything (found by review of #14 x #15's merge): a
clip size the model cannot take leaves no record behind, the evaluating critic must read the evaluation's prompts,
and a base evaluation is adopted only by a run whose evaluation clips (prompts, seeds, size) are the same."""

from __future__ import annotations

from pathlib import Path

from vipo.cli import main
from vipo.config import RunConfig
from vipo.run.driver import base_eval_inputs

REPO = Path(__file__).resolve().parents[2]


def test_a_wrong_clip_size_writes_nothing(tmp_path, capsys):
    out = tmp_path / "g1"
    args = [
        "generate",
        "--model",
        "world",
        "--out",
        str(out),
        "--prompt",
        "a red circle moving left",
        "--samples-per-prompt",
        "1",
        "--steps",
        "1",
        "--quiet",
    ]
    assert main(args + ["--frames", "5"]) == 2
    err = capsys.readouterr().err
    assert "frames" in err and len(err.strip().splitlines()) == 1
    assert not (out / "provenance.json").exists()
    assert main(args) == 0  # the corrected command is not refused as "other inputs"


def test_eval_prompts_the_evaluating_critic_cannot_read_are_refused_at_start(tmp_path, capsys):
    out = tmp_path / "r1"
    code = main(
        [
            "run",
            "--model",
            "world",
            "--out",
            str(out),
            "--rounds",
            "1",
            "--quiet",
            "--set",
            f"eval.vbench={REPO / 'configs' / 'prompts' / 'vbench-subset.txt'}",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "eval.vbench" in err and "world critic" in err, err
    assert not (out / "config.yaml").exists()


def test_base_eval_is_adopted_only_for_the_same_clips(tmp_path):
    a, b = RunConfig(), RunConfig()
    assert base_eval_inputs(a) == base_eval_inputs(b)
    b.eval.seed = a.eval.seed + 1
    assert base_eval_inputs(a) != base_eval_inputs(b)  # other eval seeds: other clips
    prompts = tmp_path / "p.txt"
    prompts.write_text("\n".join(f"a red circle moving {d}" for d in ("left", "right", "up", "down")) + "\n")
    c = RunConfig()
    c.prompts.source = str(prompts)  # eval.prompts auto: the held-out split is drawn from this file
    assert base_eval_inputs(a) != base_eval_inputs(c)
