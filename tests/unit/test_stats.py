"""Tests of vipo.stats: Wilson and paired (Newcombe) intervals against hand-computed values."""

import math

import pytest

from vipo.stats import fmt, rate, wilson


def test_wilson_against_hand_computed_values():
    # 51 of 96 (53.1%): p = 0.53125, z^2/n = 3.8415/96 = 0.040016; centre = (0.53125 + 0.020008) / 1.040016
    # = 0.530048; half = 1.959964 / 1.040016 * sqrt(0.53125 * 0.46875 / 96 + 3.8415 / 36864)
    # = 1.884551 * sqrt(0.0025940 + 0.0001042) = 0.097892
    lo, hi = wilson(51, 96)
    assert lo == pytest.approx(0.432156, abs=1e-5) and hi == pytest.approx(0.627939, abs=1e-5)
    # the ends do not collapse to zero width: 0 of 10 -> [0, z^2/(n + z^2)] = [0, 0.277533]
    assert wilson(0, 10) == pytest.approx((0.0, 0.277533), abs=1e-5)
    assert wilson(10, 10) == pytest.approx((0.722467, 1.0), abs=1e-5)


def test_rate_and_format():
    r = rate(51, 96)
    assert r["rate"] == 51 / 96 and r["n"] == 96 and r["ci95"][0] < r["rate"] < r["ci95"][1]
    assert fmt(r["rate"], r["ci95"]) == "53.1% [43.2, 62.8]"
    assert math.isnan(rate(0, 0)["rate"]) and fmt(float("nan")) == "n/a"
    with pytest.raises(ValueError):
        wilson(5, 4)


def test_paired_difference_newcombe_method_10():
    # a=12 both, b=9 first only, c=2 second only, d=21 neither (n=44): p1 = 21/44 = 0.477273, p2 = 14/44 = 0.318182;
    # Wilson(21, 44) = [0.337550, 0.620645], Wilson(14, 44) = [0.199993, 0.465569];
    # phi = (12*21 - 9*2) / sqrt(21*23*14*30) = 234 / 450.40 = 0.519538;
    # lower = 0.159091 - sqrt(0.139723^2 - 2*0.519538*0.139723*0.147387 + 0.147387^2) = 0.018210
    # upper = 0.159091 + sqrt(0.143373^2 - 2*0.519538*0.143373*0.118189 + 0.118189^2) = 0.289157
    from vipo.stats import paired_difference

    first = [True] * 12 + [True] * 9 + [False] * 2 + [False] * 21
    second = [True] * 12 + [False] * 9 + [True] * 2 + [False] * 21
    r = paired_difference(first, second)
    assert r["diff"] == pytest.approx(7 / 44) and r["discordant"] == [9, 2]
    assert r["ci95"] == pytest.approx([0.018210, 0.289157], abs=2e-6)
    # narrower than the unpaired comparison of the two Wilson intervals, which overlap
    assert wilson(21, 44)[0] < wilson(14, 44)[1]
    same = paired_difference([True, False] * 10, [True, False] * 10)
    assert same["diff"] == 0 and same["ci95"][0] <= 0 <= same["ci95"][1]
