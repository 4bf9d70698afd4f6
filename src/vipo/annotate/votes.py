"""Votes, agreement and position bias over several annotators' answers: pure functions, no I/O.

Everything here works on :class:`Answer` records, whoever made them: people in the browser app, a Label Studio
export, or simulated annotators (the world critic's training labels vote with these same functions).

- **Vote** (:func:`vote`): plurality per item and dimension. The verdict is the label with the most votes when it is
  the only one with that many; otherwise the vote is *tied* (e.g. 1-1, or 1-1-1 of three), reported with its counts
  and left out of the labels. A pairwise ``Tie`` that wins is a decided verdict, not a tied vote.
- **Percent agreement** (:func:`percent_agreement`): the mean over items rated at least twice of the share of agreeing
  ordered pairs of ratings, ``P_u = sum_c n_uc (n_uc - 1) / (n_u (n_u - 1))`` (Fleiss 1971, eq. 2's ``P_i``, with
  ``n_u`` the item's own number of ratings so incomplete items count too).
- **Krippendorff's alpha** (:func:`krippendorff_alpha`), nominal: ``alpha = 1 - D_o / D_e`` from the coincidence
  matrix (Krippendorff 2011, *Computing Krippendorff's Alpha-Reliability*, section C), computed by the
  ``krippendorff`` package; it allows any number of annotators and missing ratings, unlike Fleiss' kappa.
- **Per annotator**: how often the annotator agrees with each other annotator on the same question, and alpha with
  that annotator's ratings left out (an annotator whose removal raises alpha disagrees with the rest).
- **Position bias** (:func:`position_bias`): of the pairwise A/B choices (ties aside), the share that picked the
  video shown on the left, with its Wilson interval; 0.5 is no bias. Placement is randomised per annotator, so a
  share far from 0.5 is the annotators' bias, not the videos'.

Pairwise verdicts are always in the item's own order (A = the item's first video), whatever side it was shown on;
``swapped`` records that A was shown on the right.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from ..critics.base import DIMENSIONS, LABELS, PAIR_VERDICTS
from ..stats import rate

TASKS = ("pointwise", "pairwise")
CHOICES = {"pointwise": LABELS, "pairwise": PAIR_VERDICTS}


@dataclass(frozen=True)
class Answer:
    """One annotator's answer to one item: a verdict per dimension (A = the item's first video), reasons, tags."""

    item: str
    annotator: str
    task: str
    verdicts: dict[str, str]
    reasons: dict[str, str] = field(default_factory=dict)
    #: pairwise: the item's first video (A) was shown on the right
    swapped: bool = False
    #: optional issue tags per video: {"A": [...], "B": [...]} (pointwise: {"A": [...]})
    tags: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"answer to {self.item}: task {self.task!r} is not one of {'/'.join(TASKS)}")
        allowed = CHOICES[self.task]
        for d, v in self.verdicts.items():
            if d not in DIMENSIONS:
                raise ValueError(f"answer to {self.item}: unknown dimension {d!r}")
            if v not in allowed:
                raise ValueError(f"answer to {self.item}: {d}: {v!r} is not one of {'/'.join(allowed)}")


@dataclass(frozen=True)
class Vote:
    """The vote on one question: ``verdict`` (None when tied or when nobody answered), counts, number of votes."""

    verdict: str | None
    counts: dict[str, int]
    n: int

    @property
    def tied(self) -> bool:
        return self.n > 0 and self.verdict is None


def vote(labels: list[str]) -> Vote:
    """Plurality vote; a tie for the most votes gives ``verdict=None`` (reported, never broken silently)."""
    counts = Counter(labels)
    if not counts:
        return Vote(None, {}, 0)
    top = max(counts.values())
    winners = [c for c, n in counts.items() if n == top]
    return Vote(winners[0] if len(winners) == 1 else None, dict(counts), len(labels))


def ratings(answers: list[Answer], dimension: str) -> dict[str, dict[str, str]]:
    """``{item: {annotator: verdict}}`` for one dimension (an annotator's later answer to an item replaces theirs)."""
    out: dict[str, dict[str, str]] = defaultdict(dict)
    for a in answers:
        if dimension in a.verdicts:
            out[a.item][a.annotator] = a.verdicts[dimension]
    return dict(out)


def votes(answers: list[Answer]) -> dict[tuple[str, str], Vote]:
    """``{(item, dimension): Vote}`` over every answered question."""
    out = {}
    for d in DIMENSIONS:
        for item, by in ratings(answers, d).items():
            out[(item, d)] = vote(list(by.values()))
    return out


def percent_agreement(units: dict[str, dict[str, str]]) -> float:
    """Mean over units with >= 2 ratings of the share of agreeing ordered rating pairs (Fleiss 1971, ``P_i``);
    NaN when no unit has two ratings."""
    shares = []
    for by in units.values():
        n = len(by)
        if n < 2:
            continue
        counts = Counter(by.values())
        shares.append(sum(c * (c - 1) for c in counts.values()) / (n * (n - 1)))
    return sum(shares) / len(shares) if shares else math.nan


def krippendorff_alpha(units: dict[str, dict[str, str]], categories: tuple[str, ...]) -> float:
    """Nominal Krippendorff's alpha of ``{unit: {annotator: category}}``; NaN when it is undefined (fewer than two
    pairable ratings, or every rating the same category so that no disagreement is expected)."""
    import krippendorff
    import numpy as np

    annotators = sorted({a for by in units.values() for a in by})
    pairable = [by for by in units.values() if len(by) >= 2]
    if not pairable or len({c for by in pairable for c in by.values()}) < 2:
        return math.nan
    code = {c: i for i, c in enumerate(categories)}
    data = np.full((len(annotators), len(units)), np.nan)
    row = {a: i for i, a in enumerate(annotators)}
    for j, by in enumerate(units.values()):
        for a, c in by.items():
            data[row[a], j] = code[c]
    return float(
        krippendorff.alpha(
            reliability_data=data, level_of_measurement="nominal", value_domain=list(range(len(categories)))
        )
    )


def pairwise_with_others(units: dict[str, dict[str, str]], annotator: str) -> tuple[int, int]:
    """(agreeing, compared): over every unit the annotator rated and every other annotator who rated it too."""
    agree = total = 0
    for by in units.values():
        if annotator not in by:
            continue
        for other, c in by.items():
            if other != annotator:
                total += 1
                agree += c == by[annotator]
    return agree, total


def _nan_to_none(x: float) -> float | None:
    return None if x != x else x


def agreement(answers: list[Answer]) -> dict:
    """Agreement per task and dimension, and per annotator, as ``agreement.json`` reports it.

    ``{task: {"dimensions": {dim: {"items", "ratings", "percent_agreement", "alpha"}},
              "annotators": {name: {dim: {"answers", "agreement_with_others": rate, "alpha_without"}}}}}``
    (``rate`` is ``{"rate", "ci95", "n"}``; undefined values are null).
    """
    out: dict = {}
    for task in TASKS:
        mine = [a for a in answers if a.task == task]
        if not mine:
            continue
        names = sorted({a.annotator for a in mine})
        dims, per = {}, {n: {} for n in names}
        for d in DIMENSIONS:
            units = ratings(mine, d)
            dims[d] = {
                "items": len(units),
                "ratings": sum(len(by) for by in units.values()),
                "percent_agreement": _nan_to_none(percent_agreement(units)),
                "alpha": _nan_to_none(krippendorff_alpha(units, CHOICES[task])),
            }
            for n in names:
                agree, total = pairwise_with_others(units, n)
                without = {u: {a: c for a, c in by.items() if a != n} for u, by in units.items()}
                per[n][d] = {
                    "answers": sum(n in by for by in units.values()),
                    "agreement_with_others": rate(agree, total),
                    "alpha_without": _nan_to_none(krippendorff_alpha(without, CHOICES[task])),
                }
        out[task] = {"dimensions": dims, "annotators": per}
    return out


def position_bias(answers: list[Answer]) -> dict:
    """Of the pairwise A/B choices (not Tie), the share that picked the video shown on the left.

    ``{"all": {...}, "dimensions": {dim: {...}}, "annotators": {name: {...}}}`` with each ``{...}`` being
    ``{"left": n, "right": n, "tie": n, "left_share": {"rate", "ci95", "n"}}``.
    """

    def empty():
        return {"left": 0, "right": 0, "tie": 0}

    total, by_dim, by_ann = empty(), defaultdict(empty), defaultdict(empty)
    for a in answers:
        if a.task != "pairwise":
            continue
        for d, v in a.verdicts.items():
            side = "tie" if v == "Tie" else ("left" if (v == "A") != a.swapped else "right")
            for bucket in (total, by_dim[d], by_ann[a.annotator]):
                bucket[side] += 1

    def done(b):
        return dict(b, left_share=rate(b["left"], b["left"] + b["right"]))

    return {
        "all": done(total),
        "dimensions": {d: done(b) for d, b in sorted(by_dim.items())},
        "annotators": {n: done(b) for n, b in sorted(by_ann.items())},
    }
