"""Tests of vipo.critics.learn.accuracy."""

import json

import numpy as np
import pytest

from vipo.critics.base import DIMENSIONS, CriticParseError, Pairwise, Pointwise, Video
from vipo.critics.learn.accuracy import Question, table6
from vipo.stats import wilson


class Scripted:
    """Answers fixed in advance per video (pointwise) and per ordered pair (pairwise); missing = unparseable."""

    name = "scripted"

    def __init__(self, point, pair):
        self.point, self.pair = point, pair

    def pointwise_many(self, videos):
        return [
            Pointwise(dict(self.point[v.path]), {}, "") if v.path in self.point else CriticParseError("x")
            for v in videos
        ]

    def pairwise_many(self, pairs):
        return [
            Pairwise(dict(self.pair[(a.path, b.path)]), {}, "")
            if (a.path, b.path) in self.pair
            else CriticParseError("x")
            for a, b in pairs
        ]


def lab(s, f, m):
    return dict(zip(DIMENSIONS, (s, f, m)))


def test_table6_equals_hand_computed_accuracies():
    videos = [Video("p", np.zeros((1, 2, 2, 3), np.uint8), name) for name in "abcd"]
    critic = Scripted(
        point={"a": lab("Good", "Good", "Good"), "b": lab("Bad", "Normal", "Good"), "c": lab("Good", "Bad", "Bad")},
        pair={
            ("a", "b"): lab("A", "A", "Tie"),
            ("b", "a"): lab("B", "A", "Tie"),  # fidelity flips with order
            ("c", "d"): lab("B", "Tie", "A"),
            ("d", "c"): lab("A", "Tie", "B"),
        },
    )  # consistent
    questions = [
        Question("pointwise", (0,), lab("Good", "Good", "Normal")),  # semantic ok, fidelity ok, motion wrong
        Question("pointwise", (1,), {"semantic": "Bad", "motion": "Bad"}),  # semantic ok, motion wrong (2 dims only)
        Question("pointwise", (2,), lab("Bad", "Bad", "Bad")),  # semantic wrong, fidelity ok, motion ok
        Question("pointwise", (3,), lab("Good", "Good", "Good")),  # the critic cannot answer d: unanswered
        Question("pairwise", (0, 1), lab("A", "A", "Tie")),
        Question("pairwise", (2, 3), lab("B", "B", "A")),
    ]
    res = table6(critic, videos, questions)
    pw = res["pointwise"]
    assert pw["n"] == 3 and pw["unanswered"] == 1
    # semantic: a right, b right, c wrong -> 2/3; fidelity: a right, c right -> 2/2; motion: a, b wrong, c right -> 1/3
    assert pw["accuracy"] == pytest.approx({"semantic": 2 / 3, "fidelity": 1.0, "motion": 1 / 3})
    assert pw["rates"]["semantic"]["ci95"] == pytest.approx(list(wilson(2, 3)))
    assert pw["all"]["rate"] == pytest.approx(5 / 8) and pw["all"]["n"] == 8
    assert pw["all_dimensions"] == 0.0 and pw["all_dimensions_rate"]["n"] == 2  # a and c have all three; none right
    assert pw["confusion"]["motion"] == {"Normal": {"Good": 1}, "Bad": {"Good": 1, "Bad": 1}}
    pr = res["pairwise"]
    assert pr["n"] == 4 and pr["unanswered"] == 0
    # (a, b): semantic A=A, fidelity A=A, motion Tie=Tie; (b, a) vs flipped truth (B, B, Tie): B=B, A!=B, Tie=Tie
    # (c, d): B=B, Tie!=B, A=A; (d, c) vs (A, A, B): A=A, Tie!=A, B=B
    assert pr["accuracy"] == pytest.approx({"semantic": 1.0, "fidelity": 1 / 4, "motion": 1.0})
    assert pr["all"]["rate"] == pytest.approx(9 / 12)
    # overall (semantic decides): A vs A, B vs B, B vs B, A vs A -> 4/4
    assert pr["overall"] == 1.0 and pr["overall_rate"]["n"] == 4
    pc = pr["position_consistency"]
    # (a, b) / (b, a): semantic A / B consistent, fidelity A / A not, motion Tie / Tie consistent; (c, d): all three
    assert pc["semantic"]["rate"] == 1.0 and pc["fidelity"]["rate"] == 0.5 and pc["motion"]["rate"] == 1.0
    assert pc["overall"]["rate"] == 1.0 and pc["fidelity"]["n"] == 2


def test_critic_eval_on_records_against_labels_and_the_world_judge(tmp_path, capsys):
    import random

    from vipo.cli import main
    from vipo.critics.learn.data import write_records
    from vipo.io.video import write_mp4
    from vipo.world import grammar, render

    (tmp_path / "videos").mkdir()
    a = grammar.parse("a red circle moving left")
    wrong = grammar.Attributes("red", "circle", "right")
    for name, attrs in (("ok.mp4", a), ("bad.mp4", wrong)):
        write_mp4(tmp_path / "videos" / name, render.random_clip(attrs, random.Random(1), 32, 9))
    base = {
        "prompt": "a red circle moving left",
        "question": "",
        "votes": {},
        "reasons": [],
        "annotators": 3,
        "split": "test",
    }
    rows = [
        dict(base, id="p1#semantic", task="pointwise", dimension="semantic", videos=["videos/ok.mp4"], verdict="Good"),
        dict(
            base, id="p2#semantic", task="pointwise", dimension="semantic", videos=["videos/bad.mp4"], verdict="Good"
        ),  # a wrong human label: the world judge says Bad
        dict(
            base,
            id="q#semantic",
            task="pairwise",
            dimension="semantic",
            videos=["videos/ok.mp4", "videos/bad.mp4"],
            verdict="A",
        ),
    ]
    write_records(tmp_path / "d.jsonl", rows)
    assert main(["critic", "eval", str(tmp_path / "d.jsonl"), "--critic", "world"]) == 0
    out = capsys.readouterr()
    res = json.loads(out.out)
    assert res["pointwise"]["accuracy"]["semantic"] == 0.5 and res["pairwise"]["accuracy"]["semantic"] == 1.0
    assert res["pairwise"]["position_consistency"]["semantic"]["rate"] == 1.0
    assert "pointwise semantic" in out.err and "50.0% [" in out.err
    assert main(["critic", "eval", str(tmp_path / "d.jsonl"), "--critic", "world", "--against", "world"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["pointwise"]["all"]["rate"] == 1.0 and res["pointwise"]["all"]["n"] == 6  # all three dimensions
    assert main(["critic", "eval", str(tmp_path / "d.jsonl"), "--critic", "world", "--split", "train"]) == 2
    assert "no records in the train split" in capsys.readouterr().err
