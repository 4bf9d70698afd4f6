"""How well a critic agrees with another critic taken as ground truth (human labels, or the embedded world's judge).

The measures are IPO's Table 6, computed by :func:`vipo.critics.learn.accuracy.table6` (accuracy per dimension with
95% Wilson intervals, pooled accuracy, the overall pairwise verdict, position consistency and confusion matrices);
here the truth critic's answers become the questions' truth. A question the truth critic could not answer is
counted as ``unanswered`` with the critic's own failures.
"""

from __future__ import annotations

from .base import DIMENSIONS, Critic, CriticParseError, Video
from .learn.accuracy import Question, table6


def agreement(critic: Critic, truth: Critic, videos: list[Video], pairs: list[tuple[int, int]]) -> dict:
    """``pairs`` index into ``videos``; a pair listed in both orders is asked once per order."""
    questions, missing = [], {"pointwise": 0, "pairwise": 0}
    for i, t in enumerate(truth.pointwise_many(videos)):
        if isinstance(t, CriticParseError):
            missing["pointwise"] += 1
        else:
            questions.append(Question("pointwise", (i,), dict(t.labels)))
    unique, seen = [], set()
    for i, j in pairs:  # each unordered pair once, in the orientation listed first
        if frozenset((i, j)) not in seen:
            seen.add(frozenset((i, j)))
            unique.append((i, j))
    got = truth.pairwise_many([(videos[i], videos[j]) for i, j in unique])
    for (i, j), t in zip(unique, got):
        if isinstance(t, CriticParseError):
            missing["pairwise"] += 2
        else:
            questions.append(Question("pairwise", (i, j), {d: t.verdicts[d] for d in DIMENSIONS}))
    out = table6(critic, videos, questions)
    for task, n in missing.items():
        if task in out:
            out[task]["unanswered"] += n
        elif n:
            out[task] = {"n": 0, "unanswered": n}
    return out
