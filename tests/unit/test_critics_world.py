"""critics.world: the exact world critic answers pointwise and pairwise consistently."""

import random

import pytest
from learned_helpers import one_thread  # noqa: F401

from vipo.critics import base
from vipo.critics.base import Video
from vipo.critics.world import WorldCritic
from vipo.data import pairs as data_pairs
from vipo.world import grammar, render


def test_world_critic_answers_both_kinds_consistently():
    rng = random.Random(0)
    a = grammar.Attributes("red", "circle", "left")
    good = base.Video(a.prompt(), render.random_clip(a, rng))
    bad = base.Video(a.prompt(), render.random_clip(grammar.Attributes("red", "circle", "right"), rng))
    c = WorldCritic()
    pg, pb = c.pointwise(good), c.pointwise(bad)
    assert pg.labels == {"semantic": "Good", "fidelity": "Good", "motion": "Good"}
    assert pb.labels["semantic"] == "Bad" and "direction" in pb.reasons["semantic"]
    assert pg.overall > pb.overall
    ab, ba = c.pairwise(good, bad), c.pairwise(bad, good)
    assert ab.verdicts["semantic"] == "A" and ba.verdicts["semantic"] == "B"
    assert data_pairs.consistent_verdict(ab.overall, ba.overall) == "A"
    assert "semantic: A" in ab.raw


def test_world_reasons_are_read_back():
    """The learned critic learns from what the world judge's reasons state; read_reason reads exactly the judge's
    formats (pairwise values, pointwise scores, the attributes a clip shows) and nothing else."""
    from vipo.critics.world import WorldCritic, read_reason

    prompt = "a red circle moving left"
    assert read_reason("pairwise", "semantic", "A 2.873 vs B 3.051", prompt) == {"scores": (2.873, 3.051)}
    assert read_reason("pointwise", "motion", "score 0.91: jitter 0.012, area variation 0.05", prompt) == {
        "scores": (0.91,)
    }
    assert read_reason("pointwise", "semantic", "a red circle moving left as asked", prompt) == {
        "shows": {"color": "red", "shape": "circle", "direction": "left"},
        "passes": {"color": True, "shape": True, "direction": True},
    }
    got = read_reason(
        "pointwise",
        "semantic",
        "color is not clearly red: looks blue; direction is not clearly left: moves the opposite way (0.30 of the "
        "frame)",
        prompt,
    )
    assert got == {
        "shows": {"color": "blue", "direction": "right", "shape": "circle"},
        "passes": {"color": False, "shape": True, "direction": False},
    }
    # a reason that names a failure but not what was seen leaves that attribute unsaid
    got = read_reason(
        "pointwise", "semantic", "shape is not clearly circle: a loose circle: fit 0.61 (at least 0.72)", prompt
    )
    assert got == {
        "shows": {"color": "red", "direction": "left"},
        "passes": {"color": True, "shape": False, "direction": True},
    }
    for other in ("looked Good to me", "the circle wobbles", "a blue circle moving left as asked", ""):
        assert read_reason("pointwise", "semantic", other, prompt) == {}
        assert read_reason("pairwise", "motion", other, prompt) == {}
    assert read_reason("pointwise", "semantic", "as asked", "a purple dog") == {}
    # and the judge's own answers on rendered clips read back to the judge's own numbers
    critic = WorldCritic()
    a = grammar.Attributes("red", "circle", "left")
    right = render.random_clip(a, random.Random(1), 32, 9)
    wrong = render.random_clip(grammar.Attributes("blue", "square", "left"), random.Random(2), 32, 9)
    va, vb = Video(a.prompt(), right), Video(a.prompt(), wrong)
    p = critic.pointwise(vb)
    assert read_reason("pointwise", "semantic", p.reasons["semantic"], a.prompt())["shows"] == {
        "color": "blue",
        "shape": "square",
        "direction": "left",
    }
    s = critic.scores(va)
    assert read_reason("pointwise", "fidelity", critic.pointwise(va).reasons["fidelity"], a.prompt()) == {
        "scores": (round(s.fidelity, 2),)
    }
    pair = critic.pairwise(va, vb)
    got = read_reason("pairwise", "semantic", pair.reasons["semantic"], a.prompt())["scores"]
    assert got[0] == pytest.approx(3 + s.semantic, abs=1e-3) and got[0] > got[1]
