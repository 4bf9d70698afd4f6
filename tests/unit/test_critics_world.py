"""critics.world: the exact world critic answers pointwise and pairwise consistently."""

import random

from vipo.critics import base
from vipo.critics.world import WorldCritic
from vipo.data import pairs as P
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
    assert P.consistent_verdict(ab.overall, ba.overall) == "A"
    assert "semantic: A" in ab.raw
