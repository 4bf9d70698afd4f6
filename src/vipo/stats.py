"""Intervals for the rates vipo reports: every pass rate, Good rate, accuracy and win rate carries its noise.

:func:`wilson` is the Wilson score interval for a binomial proportion (Wilson 1927; Agresti & Coull 1998 recommend
it over the normal approximation, which collapses to zero width at 0% and 100%): with ``p = k / n`` and ``z`` the
normal quantile (1.96 for 95%),

    centre = (p + z^2 / 2n) / (1 + z^2 / n)
    half   = z / (1 + z^2 / n) * sqrt(p (1 - p) / n + z^2 / 4n^2)

:func:`rate` bundles a proportion with its interval and count, the shape eval.json and the reports use.
"""
from __future__ import annotations

import math

Z95 = 1.959963984540054


def wilson(k: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of ``k`` successes in ``n`` trials (``(nan, nan)`` for n = 0)."""
    if n <= 0:
        return (math.nan, math.nan)
    if not 0 <= k <= n:
        raise ValueError(f"wilson: k={k} outside [0, n={n}]")
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (max(0.0, centre - half), min(1.0, centre + half))


def rate(k: float, n: int) -> dict:
    """``{"rate": k/n, "ci95": [lo, hi], "n": n}``: a proportion as the reports carry it."""
    lo, hi = wilson(k, n)
    return {"rate": k / n if n else math.nan, "ci95": [lo, hi], "n": n}


def fmt(p: float, ci: tuple[float, float] | list[float] | None = None, digits: int = 1) -> str:
    """``53.1% [43.2, 62.8]``: a rate in percent with its interval."""
    if p != p:
        return "n/a"
    text = f"{100 * p:.{digits}f}%"
    if ci is not None and ci[0] == ci[0]:
        text += f" [{100 * ci[0]:.{digits}f}, {100 * ci[1]:.{digits}f}]"
    return text
