"""The whole loop through the CLI at tiny size: layout, records, resumption, standalone generate."""

import json
import sqlite3
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import TINY_RUN
from vipo.cli import main


def rows(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.parametrize("method", ["dpo", "kto"])
def test_one_round_run_through_cli(tmp_path, tiny_model_dir, method, request):
    if method == "dpo":
        out = request.getfixturevalue("tiny_run_dir")  # the session's shared tiny run
    else:
        out = tmp_path / "run"
        # a KTO micro-batch of one item: the reference point comes from a pool of rewards, never from the item itself
        assert (
            main(
                ["run", "--model", str(tiny_model_dir), "--out", str(out), "--rounds", "1", "--method", method]
                + TINY_RUN
                + ["--set", "train.batch_size=1", "--set", "train.kto_kl_pool=8"]
            )
            == 0
        )
    assert (out / "config.yaml").is_file() and (out / "report.md").is_file() and (out / "report.png").is_file()
    report = (out / "report.md").read_text()
    assert "Change of semantic pass from the base, paired over the same 3 clips" in report and "## Training" in report
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["rounds"]) == {"0", "1"}
    for k in (0, 1):
        ev = out / f"round-{k}" / "eval"
        meta = rows(ev / "metadata.jsonl")
        assert {m["split"] for m in meta} == {"indist", "heldout"} and len(meta) == 6
        for m in meta:
            assert (ev / m["file_name"]).is_file() and m["prompt"] and m["seed"] >= 2**31
    r1 = out / "round-1"
    samples = rows(r1 / "samples.jsonl")
    assert len(samples) == 9 and all((r1 / s["file_name"]).is_file() for s in samples)
    assert all(s["seed"] < 2**31 for s in samples)
    judgments = rows(r1 / "judgments.jsonl")
    kinds = {j["kind"] for j in judgments}
    assert "pointwise" in kinds and all(j["raw"] for j in judgments)
    if method == "dpo":
        assert sum(j["kind"] == "pairwise" for j in judgments) == 3 * 6  # 3 prompts x 3*2 ordered pairs
    assert (r1 / "checkpoint" / "policy.json").is_file()
    assert (r1 / "checkpoint" / "lora-round-1" / "pytorch_lora_weights.safetensors").is_file()
    log = rows(r1 / "train_log.jsonl")
    for key in ("loss", "lr", "grad_norm", "implicit_acc"):
        assert key in log[0]
    if method == "dpo":
        for key in ("reward_margin", "err_policy_chosen", "err_ref_rejected", "nll_real"):
            assert key in log[0]
    # what each term weighs, measured apart at the round's first step
    assert {"grad_norm_preference", "grad_norm_real_nll"} <= set(log[0]) and "grad_norm_preference" not in log[1]
    from vipo.data.ledger import Ledger

    with Ledger(out / "ledger.sqlite") as ledger:
        info = ledger.stage_info(1, "train")
    assert info["grad_norm_preference"] == log[0]["grad_norm_preference"] and info["nll_scale"] == 1000.0
    if method == "dpo":
        assert log[0]["grad_norm_winner_nll"] > 0
    else:
        assert all("kto_z0" in h for h in log) and log[0]["kto_z0"] == 0.0  # the pool starts at policy = reference
        assert info["n_desirable"] + info["n_undesirable"] == info["items"]
        assert {"lambda_desirable", "lambda_undesirable"} <= set(info)
    # the ledger is queryable and the exports load with datasets
    db = sqlite3.connect(out / "ledger.sqlite")
    assert db.execute("select count(*) from samples where round=1").fetchone()[0] == 9
    datasets = pytest.importorskip("datasets")
    ds = datasets.load_dataset("json", data_files=str(r1 / "samples.jsonl"), split="train")
    assert len(ds) == 9 and "seed" in ds.column_names


def test_rerun_continues_and_never_duplicates(tmp_path, tiny_model_dir):
    out = tmp_path / "run"
    args = ["run", "--model", str(tiny_model_dir), "--out", str(out), "--rounds", "1"] + TINY_RUN
    assert main(args) == 0
    before = (out / "ledger.sqlite").stat().st_size, sorted(p.name for p in (out / "round-1" / "samples").iterdir())
    eval_before = (out / "round-1" / "eval" / "eval.json").read_text()
    assert main(args) == 0  # everything done: nothing redone
    assert sorted(p.name for p in (out / "round-1" / "samples").iterdir()) == before[1]
    assert (out / "round-1" / "eval" / "eval.json").read_text() == eval_before


def test_changed_config_is_refused(tmp_path, tiny_model_dir, capsys):
    out = tmp_path / "run"
    args = ["run", "--model", str(tiny_model_dir), "--out", str(out), "--rounds", "1"] + TINY_RUN
    assert main(args) == 0
    assert main(args + ["--set", "train.beta=7"]) == 2
    assert "train.beta" in capsys.readouterr().err


def test_kill_mid_run_and_resume(tmp_path, tiny_model_dir):
    """SIGKILL the process during training, re-run the same command: it finishes with the same records."""
    out = tmp_path / "run"
    cmd = (
        [sys.executable, "-m", "vipo.cli", "run", "--model", str(tiny_model_dir), "--out", str(out), "--rounds", "1"]
        + TINY_RUN
        + ["--set", "train.epochs=8"]
    )
    import os
    import signal
    import time

    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    state = out / "round-1" / "train_state" / "COMPLETE"
    while time.time() < deadline and not state.exists() and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    n_samples = len(list((out / "round-1" / "samples").glob("*.mp4")))
    assert n_samples == 9
    assert subprocess.run(cmd, capture_output=True).returncode == 0
    assert len(list((out / "round-1" / "samples").glob("*.mp4"))) == 9
    log = rows(out / "round-1" / "train_log.jsonl")
    assert [h["step"] for h in log] == list(range(1, len(log) + 1))


def test_standalone_generate(tmp_path, tiny_model_dir):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle moving left\na blue square moving up\n")
    out = tmp_path / "gen"
    assert (
        main(
            [
                "generate",
                "--model",
                str(tiny_model_dir),
                "--prompts",
                str(prompts),
                "--samples-per-prompt",
                "2",
                "--seed",
                "5",
                "--steps",
                "2",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    meta = rows(out / "metadata.jsonl")  # the videofolder layout: mp4s and metadata.jsonl straight in --out
    assert len(meta) == 4 and {m["prompt"] for m in meta} == {"a red circle moving left", "a blue square moving up"}
    from vipo.io.video import read_mp4

    frames = read_mp4(out / meta[0]["file_name"])
    assert frames.shape[0] == 9 and frames.dtype == np.uint8
    # same seed, same video
    out2 = tmp_path / "gen2"
    assert (
        main(
            [
                "generate",
                "--model",
                str(tiny_model_dir),
                "--prompts",
                str(prompts),
                "--samples-per-prompt",
                "2",
                "--seed",
                "5",
                "--steps",
                "2",
                "--out",
                str(out2),
                "--quiet",
            ]
        )
        == 0
    )
    assert np.array_equal(read_mp4(out2 / meta[0]["file_name"]), frames)


def test_bad_input_fails_with_one_line(tmp_path, tiny_model_dir, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  beta: [oops\n")
    assert main(["run", "--config", str(bad), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "bad.yaml" in err and "line" in err
    good = tmp_path / "unknown.yaml"
    good.write_text("train:\n  betta: 5\n")
    assert main(["run", "--config", str(good), "--out", str(tmp_path / "r")]) == 2
    assert "train.betta" in capsys.readouterr().err
    assert main(["run", "--out", str(tmp_path / "r"), "--set", "generate.samples_per_prompt=2"]) == 2
    assert "samples_per_prompt" in capsys.readouterr().err
