"""Tests of vipo.world.annotators."""

import numpy as np
from learned_helpers import one_thread  # noqa: F401

from vipo.annotate.items import Item
from vipo.critics.base import DIMENSIONS


def test_simulated_annotators_flip_at_the_error_rate():
    from vipo.world.annotators import simulate

    items = [Item(f"pointwise:{i}", "pointwise", "p", (f"{i}",)) for i in range(400)]
    truth = {it.id: ({d: "Good" for d in DIMENSIONS}, {d: "fine" for d in DIMENSIONS}) for it in items}
    assert all(a.verdicts == truth[a.item][0] for a in simulate(items, truth, 3, 0.0))
    answers = simulate(items, truth, 3, 0.2, seed=1)
    flips = [a.verdicts[d] != "Good" for a in answers for d in DIMENSIONS]
    assert len(answers) == 1200 and abs(np.mean(flips) - 0.2) < 0.02  # 3600 draws: sd 0.007
    assert {a.reasons["semantic"] for a in answers if a.verdicts["semantic"] != "Good"} <= {
        "looked Normal to me",
        "looked Bad to me",
    }
    assert simulate(items, truth, 3, 0.2, seed=1) == answers  # seeded per item and annotator
