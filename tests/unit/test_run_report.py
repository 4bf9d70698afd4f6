"""Tests of vipo.run.report."""

import json

import pytest
from cli_helpers import one_line

from vipo.cli import main
from vipo.run import report


def test_report_gallery_file_name_stays_in_the_eval_folder(tiny_run_dir, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run_dir, run)
    meta = run / "round-0" / "eval" / "metadata.jsonl"
    rows = [json.loads(x) for x in meta.read_text().splitlines()]
    rows[0]["file_name"] = "../../../ledger.sqlite"
    meta.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["report", str(run)]) == 2
    assert f"{meta}:1: file_name: '../../../ledger.sqlite': '..' is refused" in one_line(capsys)


@pytest.mark.parametrize(
    "row, expected",
    [
        (
            {"passed": True, "color_ok": True, "shape_ok": True, "direction_ok": True, "raw": "ok"},
            ("pass", "pass", "ok"),
        ),
        (
            {"passed": False, "color_ok": False, "shape_ok": True, "direction_ok": False, "raw": "r"},
            ("fail", "fail: wrong color, direction", "r"),
        ),
        (
            {"labels": {"semantic": "Good", "fidelity": "Normal", "motion": "Bad"}, "raw": "The video shows"},
            ("pass", "semantic Good, fidelity Normal, motion Bad", "The video shows"),
        ),
        ({"labels": {"semantic": "Bad"}}, ("fail", "semantic Bad", "")),
        ({"error": "no verdict in the answer", "raw": "?"}, ("fail", "unparseable answer", "no verdict in the answer")),
        (None, ("", "not judged", "")),
    ],
)
def test_a_gallery_verdict_says_why(row, expected):
    assert report.verdict(row) == expected


@pytest.fixture
def figures(monkeypatch):
    made = []

    def keep(fig, path):
        fig.tight_layout()
        fig.canvas.draw()
        made.append(fig)
        return b""

    monkeypatch.setattr(report, "_save", keep)
    return made


def _legends_clear_of_their_axes(fig):
    for ax in fig.axes:
        leg = ax.get_legend()
        if leg is not None:
            assert leg.get_window_extent().x0 >= ax.get_window_extent().x1  # beside the plot, never over it


def test_a_one_step_round_shows_its_point_and_legends_sit_beside_the_plots(tmp_path, figures):
    for k, steps in ((1, 1), (2, 4)):
        (tmp_path / f"round-{k}").mkdir()
        (tmp_path / f"round-{k}" / "train_log.jsonl").write_text(
            "".join(
                json.dumps({"step": i + 1, "implicit_acc": 0.5, "reward_margin": 0.1 * i}) + "\n" for i in range(steps)
            )
        )
        (tmp_path / f"round-{k}" / "pairs.jsonl").write_text(json.dumps({"gap": 1.0}) + "\n")
    report._train_plot(tmp_path, [0, 1, 2])
    report._gap_plot(tmp_path, [1, 2])
    evals = {k: {"indist": {"n": 4, "semantic_pass": 0.25 * k, "color": 0.5}} for k in (0, 1, 2)}
    report._plot(tmp_path / "report.png", evals)
    train, gaps, metrics = figures
    one = [line for line in train.axes[0].get_lines() if line.get_label() == "round 1"]
    assert len(one) == 1 and len(one[0].get_xdata()) == 1 and one[0].get_marker() == "o"
    for fig in figures:
        _legends_clear_of_their_axes(fig)
