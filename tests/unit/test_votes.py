"""Tests of vipo.annotate.votes."""

import math

import pytest

from vipo.annotate.votes import Answer, agreement, krippendorff_alpha, percent_agreement, position_bias, vote, votes

# four pairwise questions, three annotators x, y, z (one dimension)
UNITS = {
    "u1": {"x": "A", "y": "A", "z": "A"},
    "u2": {"x": "A", "y": "A", "z": "B"},
    "u3": {"x": "B", "y": "B", "z": "B"},
    "u4": {"x": "A", "y": "B", "z": "Tie"},
}
CATS = ("A", "B", "Tie")


def test_vote_plurality_and_ties():
    assert vote(["A", "A", "B"]).verdict == "A" and vote(["A", "A", "B"]).counts == {"A": 2, "B": 1}
    assert vote(["Tie", "Tie", "B"]).verdict == "Tie"  # a winning Tie is a decided verdict
    for split in (["A", "B", "Tie"], ["Good", "Bad"], ["A", "A", "B", "B"]):
        v = vote(split)
        assert v.verdict is None and v.tied and v.n == len(split)
    assert vote([]).verdict is None and not vote([]).tied and vote([]).n == 0


def test_percent_agreement_hand_computed():
    # P_u = sum_c n_c (n_c - 1) / (n (n - 1)): u1 6/6, u2 2/6, u3 6/6, u4 0/6 -> mean 7/12
    assert percent_agreement(UNITS) == pytest.approx(7 / 12)
    # a unit with one rating does not count; none pairable -> NaN
    assert percent_agreement({**UNITS, "u5": {"x": "A"}}) == pytest.approx(7 / 12)
    assert math.isnan(percent_agreement({"u": {"x": "A"}}))


def test_krippendorff_alpha_hand_computed():
    # coincidences (each ordered pair in a unit weighs 1 / (m_u - 1)): o_AA 4, o_BB 3, o_AB = o_BA 1.5,
    # o_AT = o_TA 0.5, o_BT = o_TB 0.5; n_A 6, n_B 5, n_T 1, n 12.
    # D_o = 5 / 12; D_e = 2 (6*5 + 6*1 + 5*1) / (12 * 11) = 82 / 132; alpha = 1 - D_o / D_e = 27 / 82
    assert krippendorff_alpha(UNITS, CATS) == pytest.approx(27 / 82)
    # without z: o_AA 4, o_BB 2, o_AB = o_BA 1; n_A 5, n_B 3; D_o 2/8, D_e 30/56 -> alpha = 8/15
    no_z = {u: {a: c for a, c in by.items() if a != "z"} for u, by in UNITS.items()}
    assert krippendorff_alpha(no_z, CATS) == pytest.approx(8 / 15)
    assert math.isnan(krippendorff_alpha({"u": {"x": "A", "y": "A"}}, CATS))  # no variation: undefined


def _answers():
    out = []
    for u, by in UNITS.items():
        for who, c in by.items():
            # x sees every pair A-left, y every pair A-right, z alternates
            swapped = {"x": False, "y": True, "z": u in ("u2", "u4")}[who]
            out.append(Answer(u, who, "pairwise", {"motion": c}, {"motion": f"{who} on {u}"}, swapped))
    return out


def test_agreement_report_per_dimension_and_annotator():
    rep = agreement(_answers())["pairwise"]
    m = rep["dimensions"]["motion"]
    assert m["items"] == 4 and m["ratings"] == 12
    assert m["percent_agreement"] == pytest.approx(7 / 12) and m["alpha"] == pytest.approx(27 / 82)
    x, z = rep["annotators"]["x"]["motion"], rep["annotators"]["z"]["motion"]
    # x agrees with y on 3 of 4, with z on 2 of 4; z with x 2 of 4, with y 2 of 4
    assert x["agreement_with_others"]["rate"] == pytest.approx(5 / 8) and x["agreement_with_others"]["n"] == 8
    assert z["agreement_with_others"]["rate"] == pytest.approx(4 / 8)
    assert z["alpha_without"] == pytest.approx(8 / 15) and x["answers"] == 4
    assert rep["dimensions"]["semantic"]["alpha"] is None  # nobody answered it


def test_votes_and_position_bias():
    vs = votes(_answers())
    assert vs[("u1", "motion")].verdict == "A" and vs[("u2", "motion")].verdict == "A"
    assert vs[("u3", "motion")].verdict == "B" and vs[("u4", "motion")].tied
    pb = position_bias(_answers())
    # x (A left): A,A,B,A -> left 3, right 1; y (A right): A,A,B,B -> right 2, left 2;
    # z: u1 A unswapped -> left; u2 B swapped -> left; u3 B unswapped -> right; u4 Tie
    assert pb["annotators"]["x"] == {"left": 3, "right": 1, "tie": 0, "left_share": pb["annotators"]["x"]["left_share"]}
    assert (pb["annotators"]["y"]["left"], pb["annotators"]["y"]["right"]) == (2, 2)
    assert (pb["annotators"]["z"]["left"], pb["annotators"]["z"]["right"], pb["annotators"]["z"]["tie"]) == (2, 1, 1)
    assert (pb["all"]["left"], pb["all"]["right"], pb["all"]["tie"]) == (7, 4, 1)
    assert pb["all"]["left_share"]["rate"] == pytest.approx(7 / 11) and pb["all"]["left_share"]["n"] == 11
    assert pb["dimensions"]["motion"]["left"] == 7


def test_answer_checks_its_verdicts():
    with pytest.raises(ValueError, match="motion"):
        Answer("i", "x", "pairwise", {"motion": "Good"})
    with pytest.raises(ValueError, match="dimension"):
        Answer("i", "x", "pointwise", {"colour": "Good"})
