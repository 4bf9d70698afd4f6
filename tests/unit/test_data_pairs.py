"""Tests of vipo.data.pairs."""

import pytest

from vipo.data import pairs as data_pairs


def test_a_prompt_with_no_consistent_verdict_gets_no_pair():
    v = {}
    for x, y in (("a", "b"), ("a", "c"), ("b", "c")):  # a critic that always answers "A"
        v[(x, y)] = v[(y, x)] = "A"
    pairs, stats = data_pairs.build_pairs({0: ["a", "b", "c"]}, v, {"a": 1.0, "b": 0.5, "c": 0.0})
    assert pairs == [] and stats.dropped_inconsistent == 1 and stats.inconsistent == 3
    # with no pairwise verdict asked at all (pointwise-only judging) the scores still rank the prompt
    pairs, stats = data_pairs.build_pairs({0: ["a", "b", "c"]}, {}, {"a": 1.0, "b": 0.5, "c": 0.0})
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [("a", "c")] and stats.dropped_inconsistent == 0


def both(verdicts, x, y, v):
    """Record a consistent verdict v for (x, y) in both orders."""
    verdicts[(x, y)] = v
    verdicts[(y, x)] = data_pairs.FLIP[v]


def test_consistency_needs_both_orders_to_agree():
    assert data_pairs.consistent_verdict("A", "B") == "A"
    assert data_pairs.consistent_verdict("A", "A") is None  # position bias: always prefers the first shown
    assert data_pairs.consistent_verdict("Tie", "Tie") == "Tie"


def test_top_vs_bottom_by_consistent_wins():
    v = {}
    both(v, "a", "b", "A")
    both(v, "a", "c", "A")
    both(v, "b", "c", "A")
    both(v, "a", "d", "A")
    both(v, "b", "d", "A")
    v[("c", "d")], v[("d", "c")] = "A", "A"  # inconsistent: ignored
    pairs, stats = data_pairs.build_pairs({0: ["a", "b", "c", "d"]}, v, {"a": 0.9, "b": 0.6, "c": 0.2, "d": 0.3})
    assert stats.inconsistent == 1 and stats.consistent == 5
    assert len(pairs) == 1 and pairs[0]["chosen"] == "a"
    # c and d both have 0 wins; the pointwise score breaks the tie: c (0.2) is the bottom
    assert pairs[0]["rejected"] == "c" and pairs[0]["gap"] == pytest.approx(0.7)


def test_pairs_without_verdicts_are_unjudged_not_inconsistent():
    v = {}
    both(v, "a", "b", "A")
    v[("a", "c")] = "A"  # one order only (the other unparseable): inconsistent
    pairs, stats = data_pairs.build_pairs({0: ["a", "b", "c"]}, v, {"a": 0.9, "b": 0.6, "c": 0.2})
    assert (stats.consistent, stats.inconsistent, stats.unjudged) == (1, 1, 1)
    _, stats = data_pairs.build_pairs(
        {0: ["a", "b", "c"]}, {}, {"a": 0.9, "b": 0.6, "c": 0.2}
    )  # pointwise-only judging
    assert (stats.consistent, stats.inconsistent, stats.unjudged) == (0, 0, 3)


def test_prompt_without_clear_winner_is_dropped():
    v = {}
    for x, y in (("a", "b"), ("a", "c"), ("b", "c")):
        both(v, x, y, "Tie")
    pairs, stats = data_pairs.build_pairs({0: ["a", "b", "c"]}, v, {"a": 0.5, "b": 0.5, "c": 0.5})
    assert pairs == [] and stats.dropped_no_winner == 1


def test_alpha_reweighting_and_filter_ratio():
    groups, v, scores = {}, {}, {}
    for pid, gap in enumerate((0.1, 0.2, 0.4, 0.8)):
        w, l = f"w{pid}", f"l{pid}"
        groups[pid] = [w, l]
        both(v, w, l, "A")
        scores[w], scores[l] = 0.5 + gap / 2, 0.5 - gap / 2
    pairs, _ = data_pairs.build_pairs(groups, v, scores)
    assert [p["weight"] for p in pairs] == [1.0] * 4
    pairs, stats = data_pairs.build_pairs(groups, v, scores, filter_ratio=0.5)
    assert sorted(round(p["gap"], 6) for p in pairs) == [0.4, 0.8] and stats.dropped_filter == 2
    pairs, _ = data_pairs.build_pairs(groups, v, scores, alpha=1.0)
    w = {round(p["gap"], 6): p["weight"] for p in pairs}
    assert w[0.8] == pytest.approx(2 * w[0.4]) and sum(w.values()) == pytest.approx(4.0)


def test_kto_labels_take_the_worst_dimension():
    assert data_pairs.combine_labels({"semantic": "Good", "fidelity": "Normal", "motion": "Good"}) == "Normal"
    assert data_pairs.combine_labels({"semantic": "Good", "fidelity": "Good", "motion": "Bad"}) == "Bad"
    samples = [{"id": "x", "prompt_id": 0}, {"id": "y", "prompt_id": 0}]
    pw = {
        "x": {"labels": {"semantic": "Good", "fidelity": "Normal", "motion": "Good"}, "overall": 0.8},
        "y": {"labels": {"semantic": "Bad", "fidelity": "Good", "motion": "Good"}, "overall": 0.6},
    }
    ex, counts = data_pairs.kto_examples(samples, pw)
    assert [e["desirable"] for e in ex] == [True, False] and counts == {"Normal": 1, "Bad": 1}
