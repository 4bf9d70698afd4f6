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
