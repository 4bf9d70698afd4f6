"""How well a critic agrees with ground truth (another critic: human labels, or the embedded world's judge).

The measures of IPO's Table 6: pointwise accuracy (the critic's label equals the truth's, per dimension and for all
three at once) and pairwise accuracy (the critic's verdict equals the truth's, per dimension and overall), with a
confusion matrix per dimension (truth -> critic -> count). A question either side could not answer is counted
apart, not as a disagreement.
"""
from __future__ import annotations

from collections import defaultdict

from .base import DIMENSIONS, Critic, CriticParseError, Video


def _confusion(rows: list[tuple[str, str]]) -> dict:
    m: dict = defaultdict(lambda: defaultdict(int))
    for t, c in rows:
        m[t][c] += 1
    return {t: dict(cs) for t, cs in m.items()}


def agreement(critic: Critic, truth: Critic, videos: list[Video], pairs: list[tuple[int, int]]) -> dict:
    """``pairs`` index into ``videos`` (each order a separate question)."""
    out: dict = {}
    got, want = critic.pointwise_many(videos), truth.pointwise_many(videos)
    both = [(c, t) for c, t in zip(got, want) if not isinstance(c, CriticParseError)
            and not isinstance(t, CriticParseError)]
    out["pointwise"] = {
        "n": len(both), "unanswered": len(videos) - len(both),
        "accuracy": {d: _mean([c.labels[d] == t.labels[d] for c, t in both]) for d in DIMENSIONS},
        "all_dimensions": _mean([c.labels == t.labels for c, t in both]),
        "confusion": {d: _confusion([(t.labels[d], c.labels[d]) for c, t in both]) for d in DIMENSIONS},
    }
    if pairs:
        vp = [(videos[i], videos[j]) for i, j in pairs]
        got, want = critic.pairwise_many(vp), truth.pairwise_many(vp)
        both = [(c, t) for c, t in zip(got, want) if not isinstance(c, CriticParseError)
                and not isinstance(t, CriticParseError)]
        out["pairwise"] = {
            "n": len(both), "unanswered": len(pairs) - len(both),
            "accuracy": {d: _mean([c.verdicts[d] == t.verdicts[d] for c, t in both]) for d in DIMENSIONS},
            "overall": _mean([c.overall == t.overall for c, t in both]),
            "confusion": {d: _confusion([(t.verdicts[d], c.verdicts[d]) for c, t in both]) for d in DIMENSIONS},
        }
    return out


def _mean(xs: list) -> float | None:
    return sum(xs) / len(xs) if xs else None
