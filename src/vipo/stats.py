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


def paired_difference(first: list[bool], second: list[bool], z: float = Z95) -> dict:
    """The difference of two rates measured on the same items (``first[i]`` and ``second[i]`` the outcomes of item i,
    e.g. one evaluation clip's pass under round K and under the base: same prompt, same seed), with Newcombe's
    hybrid score interval for paired proportions (Newcombe 1998, method 10, no continuity correction):

        a, b, c, d = both, first only, second only, neither;  p1 = (a + b) / n,  p2 = (a + c) / n
        phi = (a d - b c) / sqrt((a + b)(c + d)(a + c)(b + d))   (0 when a margin is empty)
        lower = (p1 - p2) - sqrt((p1 - l1)^2 - 2 phi (p1 - l1)(u2 - p2) + (u2 - p2)^2)
        upper = (p1 - p2) + sqrt((u1 - p1)^2 - 2 phi (u1 - p1)(p2 - l2) + (p2 - l2)^2)

    with ``(l1, u1)``, ``(l2, u2)`` the Wilson intervals of p1 and p2. Pairing removes the between-clip variance, so
    a change is often outside the noise where two unpaired intervals overlap.
    """
    if len(first) != len(second):
        raise ValueError(f"paired_difference: {len(first)} and {len(second)} outcomes")
    n = len(first)
    if n == 0:
        return {"diff": math.nan, "ci95": [math.nan, math.nan], "n": 0}
    a = sum(1 for x, y in zip(first, second) if x and y)
    b = sum(1 for x, y in zip(first, second) if x and not y)
    c = sum(1 for x, y in zip(first, second) if y and not x)
    d = n - a - b - c
    p1, p2 = (a + b) / n, (a + c) / n
    l1, u1 = wilson(a + b, n, z)
    l2, u2 = wilson(a + c, n, z)
    den = (a + b) * (c + d) * (a + c) * (b + d)
    phi = (a * d - b * c) / math.sqrt(den) if den else 0.0
    diff = p1 - p2
    lower = diff - math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    upper = diff + math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    return {"diff": diff, "ci95": [max(-1.0, lower), min(1.0, upper)], "n": n, "discordant": [b, c]}
