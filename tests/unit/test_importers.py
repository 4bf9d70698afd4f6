"""Tests of vipo.critics.learn.importers."""

import csv
import json

import pytest
from record_helpers import clip

from vipo.cli import main
from vipo.critics.learn import data as learn_data
from vipo.critics.learn import importers
from vipo.errors import UserError


def test_import_lift_hra_layouts(tmp_path):
    root = tmp_path / "LiFT-HRA"
    clip(root / "videos" / "0.mp4")
    clip(root / "videos" / "1.mp4", seed=1)
    q = {
        "semantic": " Please identify the semantic consistency issues in this video, focusing on the alignment "
        "between the text and the visual content. Specifically, point out any discrepancies.",
        "motion": " Please identify the motion issues in this video, focusing on the continuity and smoothness.",
    }
    items = [  # LiFT's training layout (LLaVA/VILA conversations), one question per item
        {
            "video": "videos/0.mp4",
            "conversations": [
                {"from": "human", "value": "<video>\n A red circle slides left." + q["semantic"]},
                {"from": "gpt", "value": "Bad. The circle is blue."},
            ],
        },
        {
            "video": "videos/0.mp4",
            "conversations": [
                {"from": "human", "value": "<video>\n A red circle slides left." + q["motion"]},
                {"from": "gpt", "value": "Normal. Slight jitter."},
            ],
        },
        # the LiFT-Critic's output layout: a caption and one answer per question
        {
            "video": "videos/1.mp4",
            "caption": "A red circle slides left.",
            "semantic consistency": "Good. Basically correct.",
            "fidelity issues": "Good",
            "motion issues": "Bad. It jumps.",
        },
    ]
    (root / "LiFT-HRA-data.json").write_text(json.dumps(items))
    out = tmp_path / "data" / "lift.jsonl"
    importers.lift(root / "LiFT-HRA-data.json", out, test_fraction=0.0)
    recs = learn_data.read_records(out)
    assert [(r.dimension, r.verdict, r.reasons) for r in recs] == [
        ("semantic", "Bad", ["The circle is blue."]),
        ("motion", "Normal", ["Slight jitter."]),
        ("semantic", "Good", ["Basically correct."]),
        ("fidelity", "Good", []),
        ("motion", "Bad", ["It jumps."]),
    ]
    assert all(
        r.prompt == "A red circle slides left."
        and r.task == "pointwise"
        and r.split == "train"
        and r.votes == {r.verdict: 1}
        for r in recs
    )
    assert recs[0].videos == ["../LiFT-HRA/videos/0.mp4"] and recs[0].paths()[0].is_file()
    items[0]["conversations"][1]["value"] = "Great. Looks fine."
    (root / "LiFT-HRA-data.json").write_text(json.dumps(items))
    with pytest.raises(UserError, match=r"LiFT-HRA-data.json\[0\]: conversations\[1\]: expected an answer"):
        importers.lift(root / "LiFT-HRA-data.json", out)


def test_import_videogen_rewardbench_csv(tmp_path):
    root = tmp_path / "VideoGen-RewardBench"
    for m in ("kling1.5", "minimax"):
        clip(root / "videos" / m / f"{m}_00103.mp4")
    cols = [
        "path_A",
        "path_B",
        "A_model",
        "B_model",
        "prompt",
        "VQ",
        "MQ",
        "TA",
        "Overall",
        "fps_A",
        "num_frames_A",
        "fps_B",
        "num_frames_B",
    ]
    with open(root / "videogen-rewardbench.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(cols)
        w.writerow(
            [
                "videos/kling1.5/kling1.5_00103.mp4",
                "videos/minimax/minimax_00103.mp4",
                "kling1.5",
                "minimax",
                "Static camera, a metal ball rolls on a smooth tabletop.",
                "A",
                "same",
                "B",
                "A",
                24,
                120,
                25,
                150,
            ]
        )
    out = tmp_path / "vgrb.jsonl"
    importers.videogen_rewardbench(root / "videogen-rewardbench.csv", out)
    recs = learn_data.read_records(out)
    assert {(r.dimension, r.verdict) for r in recs} == {("fidelity", "A"), ("motion", "Tie"), ("semantic", "B")}
    assert all(r.task == "pairwise" and len(r.videos) == 2 and r.videos[0].endswith("kling1.5_00103.mp4") for r in recs)
    text = (root / "videogen-rewardbench.csv").read_text().replace(",same,", ",maybe,")
    (root / "videogen-rewardbench.csv").write_text(text)
    with pytest.raises(UserError, match=r"videogen-rewardbench.csv:2: MQ: 'maybe' is not A, B or same"):
        importers.videogen_rewardbench(root / "videogen-rewardbench.csv", out)


def test_import_world_judgments_through_the_cli(tmp_path, capsys):
    from tests.critic_helpers import video_folder

    folder = tmp_path / "videos"
    video_folder(folder)
    assert (
        main(["judge", str(folder), "--critic", "world", "--pairwise", "--out", str(tmp_path / "j.jsonl"), "--quiet"])
        == 0
    )
    capsys.readouterr()
    assert (
        main(
            [
                "critic",
                "import",
                "judgments",
                str(tmp_path / "j.jsonl"),
                "--videos",
                str(folder),
                "--out",
                str(tmp_path / "d" / "w.jsonl"),
                "--test-fraction",
                "0",
            ]
        )
        == 0
    )
    assert "24 records (24 train, 0 test)" in capsys.readouterr().out  # (4 videos + 2 pairs x 2 orders) x 3
    recs = learn_data.read_records(tmp_path / "d" / "w.jsonl")
    assert sum(r.task == "pairwise" for r in recs) == 12 and recs[0].videos[0].startswith("../videos/")
