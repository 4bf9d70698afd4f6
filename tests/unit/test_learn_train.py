"""Tests of vipo.critics.learn.train."""

import random

import numpy as np
import pytest
from learned_helpers import one_thread  # noqa: F401

from vipo.io.video import write_mp4
from vipo.world import grammar, render


def test_world_example_learns_what_the_reasons_state(tmp_path):
    """world_example fills each clip's stated scores and shown attributes from the records' reasons (any voter's
    reason the world judge wrote), and nothing from reasons in other words."""
    from vipo.critics.learn import data as learn_data
    from vipo.critics.learn.train import world_example

    a = grammar.Attributes("red", "circle", "left")
    for name, seed in (("x.mp4", 1), ("y.mp4", 2)):
        write_mp4(tmp_path / name, render.random_clip(a, random.Random(seed), 32, 9))

    def rec(i, task, dim, videos, verdict, reasons):
        return {
            "id": f"r{i}",
            "task": task,
            "dimension": dim,
            "prompt": a.prompt(),
            "videos": videos,
            "question": "?",
            "verdict": verdict,
            "votes": {verdict: 2},
            "reasons": reasons,
            "annotators": 3,
            "split": "train",
        }

    rows = [
        rec(0, "pairwise", "semantic", ["x.mp4", "y.mp4"], "A", ["looked A to me", "A 3.900 vs B 2.500"]),
        rec(1, "pointwise", "motion", ["x.mp4"], "Good", ["score 0.93: jitter 0.004"]),
        rec(2, "pointwise", "semantic", ["y.mp4"], "Bad", ["color is not clearly red: looks blue"]),
        rec(3, "pointwise", "fidelity", ["y.mp4"], "Good", ["crisp edges"]),  # a person's words: nothing stated
    ]
    path = tmp_path / "data.jsonl"
    learn_data.write_records(path, rows)
    ex = world_example(learn_data.read_records(path))
    x, y = 0, 1  # first-seen order
    assert ex.stated[x, 0] == pytest.approx(3.9) and ex.stated[y, 0] == pytest.approx(2.5)
    assert ex.stated[x, 2] == pytest.approx(0.93)
    assert np.isnan(ex.stated[y, 1]) and np.isnan(ex.stated[y, 2]) and np.isnan(ex.stated[x, 1])
    from vipo.critics.learn import worldnet

    assert ex.shows[y].tolist() == [
        worldnet.COLORS.index("blue"),
        worldnet.SHAPES.index("circle"),
        worldnet.DIRECTIONS.index("left"),
    ]
    assert ex.shows[x].tolist() == [-1, -1, -1]
    # the reason names the attribute that failed: the colour; the shape and direction passed
    assert ex.passes[y].tolist() == [0, 1, 1] and ex.passes[x].tolist() == [-1, -1, -1]
    assert len(ex.point) == 3 and len(ex.pair) == 1
    # a vote is explained when one of its reasons states a measurement: all but the person's "crisp edges"
    assert ex.pair_explained == [True] and ex.point_explained == [True, True, False]
