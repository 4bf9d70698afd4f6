"""vipo.critics.agreement: a critic's agreement with a truth critic on a known table of answers, each unordered
pair asked of the truth once, and the truth's unanswered questions counted as unanswered."""

import pytest
from unit_helpers import ScriptedCritic, answer, video

from vipo.critics.agreement import agreement

VIDEOS = [video("v0"), video("v1"), video("v2")]


def truth():
    # v0 all Good, v1 all Bad, v2 unanswerable; (v0, v1): A on every dimension, (v0, v2) unanswerable
    return ScriptedCritic("truth", point={"v0": answer("Good"), "v1": answer("Bad")}, pair={("v0", "v1"): answer("A")})


def critic():
    return ScriptedCritic(
        "critic",
        point={"v0": answer("Good", "Normal", "Good"), "v1": answer("Bad"), "v2": answer("Good")},
        pair={("v0", "v1"): answer("A", "A", "Tie"), ("v1", "v0"): answer("B")},
    )


def test_pointwise_agreement_on_a_known_table():
    c, t = critic(), truth()
    out = agreement(c, t, VIDEOS, [])
    p = out["pointwise"]
    # v2 has no truth: not asked of the critic, counted unanswered; v0 wrong on fidelity only, v1 right
    assert p["n"] == 2 and p["unanswered"] == 1
    assert p["accuracy"] == {"semantic": 1.0, "fidelity": 0.5, "motion": 1.0}
    assert p["all"]["rate"] == pytest.approx(5 / 6) and p["all"]["n"] == 6
    assert p["all_dimensions"] == 0.5
    assert p["confusion"]["fidelity"] == {"Good": {"Normal": 1}, "Bad": {"Bad": 1}}
    assert ("point", "v2") not in c.asked
    assert sorted(t.asked) == [("point", "v0"), ("point", "v1"), ("point", "v2")]
    assert "pairwise" not in out  # no pairs and none missing


def test_pairwise_agreement_each_unordered_pair_asked_of_the_truth_once():
    c, t = critic(), truth()
    # (v1, v0) repeats (v0, v1): the truth is asked in the orientation listed first, once
    out = agreement(c, t, VIDEOS, [(0, 1), (1, 0), (0, 2)])
    assert [q for q in t.asked if q[0] == "pair"] == [("pair", "v0", "v1"), ("pair", "v0", "v2")]
    # the critic is asked the one pair with truth in both orders
    assert sorted(q for q in c.asked if q[0] == "pair") == [("pair", "v0", "v1"), ("pair", "v1", "v0")]
    p = out["pairwise"]
    # (v0, v1): truth A,A,A, critic A,A,Tie; (v1, v0): truth flipped B,B,B, critic B,B,B; (v0, v2): 2 unanswered
    assert p["n"] == 2 and p["unanswered"] == 2
    assert p["accuracy"] == {"semantic": 1.0, "fidelity": 1.0, "motion": 0.5}
    assert p["all"]["rate"] == pytest.approx(5 / 6)
    assert p["overall"] == 1.0  # semantic decides both overall verdicts
    assert p["confusion"]["motion"] == {"A": {"Tie": 1}, "B": {"B": 1}}
    pc = p["position_consistency"]
    # motion: Tie against B flipped back (A) disagrees; every other dimension and the overall verdict agree
    assert {k: r["rate"] for k, r in pc.items()} == {"semantic": 1.0, "fidelity": 1.0, "motion": 0.0, "overall": 1.0}
    assert all(r["n"] == 1 for r in pc.values())


def test_truth_without_any_pairwise_answer_still_reports_the_unanswered():
    c, t = critic(), truth()
    out = agreement(c, t, VIDEOS, [(0, 2), (2, 0), (1, 2)])
    # two unordered pairs, neither answered by the truth: two questions (both orders) each
    assert out["pairwise"] == {"n": 0, "unanswered": 4}
    assert not [q for q in c.asked if q[0] == "pair"]


def test_critic_failures_and_truth_failures_add_up():
    t = truth()
    c = ScriptedCritic("critic", point={"v0": answer("Good")}, pair={("v0", "v1"): answer("A")})  # v1 and (v1, v0) fail
    out = agreement(c, t, VIDEOS, [(0, 1)])
    assert out["pointwise"]["n"] == 1 and out["pointwise"]["unanswered"] == 2  # v1 by the critic, v2 by the truth
    assert out["pointwise"]["accuracy"] == {"semantic": 1.0, "fidelity": 1.0, "motion": 1.0}
    assert out["pairwise"]["n"] == 1 and out["pairwise"]["unanswered"] == 1
    assert out["pairwise"]["position_consistency"] is None  # no pair answered in both orders
