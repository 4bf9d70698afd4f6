"""From judgments to training data: DPO pairs (top vs bottom per prompt) and KTO labels. Pure functions.

Ranking (IPO): each unordered pair of a prompt's samples is judged in both orders; a verdict counts only when the two
orders agree (position swap), and then its winner gets a win. Samples are ranked by consistent wins, pointwise scores
breaking ties. The pair is the top sample against the bottom one (the middle ones are not used); a prompt whose top
and bottom are indistinguishable (same wins, same pointwise score) has no clear winner and is dropped. A prompt whose
pairwise verdicts were asked but none came out consistent gets no pair either (counted in ``dropped_inconsistent``):
a position-biased critic, which answers "A" whatever it sees, must not have its pairs rebuilt from pointwise scores.
Only when no pairwise verdict was asked at all (pointwise-only judging) do scores alone rank a prompt. A sample with
no parseable pointwise judgment is left out of ranking by the caller (never scored 0, which would make it the loser
with the largest gap).

VideoDPO options: each pair's weight is ``gap ** alpha`` (gap = pointwise overall score of the winner minus the
loser's; ``alpha = 0`` gives weight 1), normalised to a mean of 1 over the round, and ``filter_ratio`` drops that
fraction of pairs with the smallest gaps.

KTO labels: a sample's label is its worst dimension (any Bad makes it Bad, all Good makes it Good, else Normal);
Good and Normal are desirable, Bad undesirable. A video that gets any dimension badly wrong is not something to learn
from, whatever its other dimensions.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import dataclass

from ..critics.base import FLIP

RANK = {"Good": 2, "Normal": 1, "Bad": 0}


@dataclass
class PairStats:
    prompts: int = 0
    pairs: int = 0
    dropped_no_winner: int = 0
    dropped_filter: int = 0
    comparisons: int = 0
    consistent: int = 0
    inconsistent: int = 0
    unjudged: int = 0
    """pairs with no verdict in either order (pointwise-only judging, e.g. for KTO): ranked by scores alone"""
    ties: int = 0
    dropped_inconsistent: int = 0
    """prompts whose pairwise verdicts were asked but none was consistent in both orders: no pair"""

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def consistent_verdict(ab: str, ba: str) -> str | None:
    """Overall verdict of a pair from its two orders (``ba`` is the answer with B shown first); None if they disagree."""
    second = FLIP[ba]
    return ab if ab == second else None


def rank_prompt(
    sample_ids: list[str],
    verdicts: dict[tuple[str, str], str],
    scores: dict[str, float],
    stats: PairStats | None = None,
) -> list[tuple[str, int, float]]:
    """Samples ranked best first as (id, consistent wins, pointwise score).

    ``verdicts[(x, y)]`` is the overall verdict ("A"/"B"/"Tie") with x shown first; both orders of every pair are
    expected: a pair missing one order counts as inconsistent, one missing both as unjudged.
    """
    wins = {s: 0 for s in sample_ids}
    for x, y in itertools.combinations(sample_ids, 2):
        if stats:
            stats.comparisons += 1
        ab, ba = verdicts.get((x, y)), verdicts.get((y, x))
        if ab is None and ba is None:
            if stats:
                stats.unjudged += 1
            continue
        v = consistent_verdict(ab, ba) if ab is not None and ba is not None else None
        if v is None:
            if stats:
                stats.inconsistent += 1
            continue
        if stats:
            stats.consistent += 1
            stats.ties += v == "Tie"
        if v == "A":
            wins[x] += 1
        elif v == "B":
            wins[y] += 1
    order = sorted(sample_ids, key=lambda s: (-wins[s], -scores.get(s, 0.0), sample_ids.index(s)))
    return [(s, wins[s], scores.get(s, 0.0)) for s in order]


def build_pairs(
    groups: dict[int, list[str]],
    verdicts: dict[tuple[str, str], str],
    scores: dict[str, float],
    alpha: float = 0.0,
    filter_ratio: float = 0.0,
) -> tuple[list[dict], PairStats]:
    """DPO pairs, one per prompt with a clear winner. ``groups`` maps prompt id -> its sample ids."""
    stats = PairStats()
    pairs = []
    for pid, ids in sorted(groups.items()):
        stats.prompts += 1
        if len(ids) < 2:
            stats.dropped_no_winner += 1
            continue
        asked, consistent = stats.comparisons - stats.unjudged, stats.consistent
        ranked = rank_prompt(ids, verdicts, scores, stats)
        if stats.comparisons - stats.unjudged > asked and stats.consistent == consistent:
            stats.dropped_inconsistent += 1  # verdicts asked for this prompt, none consistent
            continue
        (w, ww, ws), (l, lw, ls) = ranked[0], ranked[-1]
        if ww == lw and ws <= ls:
            stats.dropped_no_winner += 1
            continue
        gap = max(0.0, ws - ls)
        pairs.append(
            {
                "id": f"{w}>{l}",
                "prompt_id": pid,
                "chosen": w,
                "rejected": l,
                "chosen_wins": ww,
                "rejected_wins": lw,
                "gap": gap,
                "weight": 1.0,
            }
        )
    if filter_ratio > 0 and pairs:
        n_drop = int(round(filter_ratio * len(pairs)))
        if n_drop:
            keep = sorted(pairs, key=lambda p: (p["gap"], p["id"]))[n_drop:]
            kept = {p["id"] for p in keep}
            pairs = [p for p in pairs if p["id"] in kept]
            stats.dropped_filter = n_drop
    if alpha != 0:
        for p in pairs:
            p["weight"] = float(p["gap"] ** alpha) if p["gap"] > 0 else 0.0
        total = sum(p["weight"] for p in pairs)
        if total > 0:  # keep the mean weight at 1 so alpha changes the mix, not the learning rate
            for p in pairs:
                p["weight"] *= len(pairs) / total
    stats.pairs = len(pairs)
    return pairs, stats


def combine_labels(labels: dict[str, str]) -> str:
    """One label from per-dimension labels: the worst of them."""
    return min(labels.values(), key=lambda v: RANK[v])


def kto_examples(samples: list[dict], pointwise: dict[str, dict]) -> tuple[list[dict], dict]:
    """KTO examples from pointwise labels: Good/Normal desirable, Bad undesirable."""
    out = []
    counts: dict[str, int] = defaultdict(int)
    for s in samples:
        pw = pointwise.get(s["id"])
        if pw is None:
            counts["unjudged"] += 1
            continue
        label = combine_labels(pw["labels"])
        counts[label] += 1
        out.append(
            {
                "id": s["id"],
                "prompt_id": s["prompt_id"],
                "sample": s["id"],
                "label": label,
                "labels": dict(pw["labels"]),
                "desirable": label != "Bad",
                "score": pw.get("overall", 0.0),
            }
        )
    return out, dict(counts)
