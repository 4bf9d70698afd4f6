"""A critic's accuracy against ground truth, as IPO's Table 6 reports it, with 95% Wilson intervals.

Ground truth is per question and dimension (voted human labels, where a dimension may be undecided, or the world's
exact judge). The critic answers each video once (pointwise: every dimension at once) and each pair in both orders
(A shown first, then swapped); every order is a question of its own, its truth flipped for the swapped order.

- **pointwise accuracy** per dimension: the critic's label equals the truth's; ``all``: pooled over every
  (video, dimension) question; ``all_dimensions``: the videos with truth on all three dimensions that it gets right
  on all three at once;
- **pairwise accuracy** per dimension (and pooled ``all``) over the ordered questions; ``overall`` compares the
  overall verdicts (semantic decides, fidelity then motion break its ties: :attr:`Pairwise.overall`) where the
  truth has all three dimensions;
- **position consistency**: of the pairs answered in both orders, the share whose two verdicts agree once the
  swapped one is flipped back, per dimension and for the overall verdict (the judge stage's ``consistency_rate``);
- a confusion matrix per dimension (truth -> critic -> count); questions the critic could not answer are counted
  as ``unanswered``, not as wrong.

Intervals: :func:`vipo.stats.rate` (Wilson 1927). The pairwise questions of one pair are not independent (two orders),
so its interval is a little narrow; the counts are given so a reader can redo it per pair.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from ...stats import rate
from ..base import DIMENSIONS, FLIP, CriticParseError, Pairwise, Video


@dataclass
class Question:
    """``videos``: indices into the video list (1 pointwise, 2 pairwise with A first); ``truth``: dimension ->
    verdict for the dimensions that have one."""

    task: str
    videos: tuple
    truth: dict


def _overall(verdicts: dict) -> str:
    return Pairwise(verdicts, {}, "").overall


class _Tally:
    def __init__(self):
        self.hit = defaultdict(int)
        self.n = defaultdict(int)
        self.confusion = {d: defaultdict(lambda: defaultdict(int)) for d in DIMENSIONS}

    def add(self, dim: str, truth: str, got: str) -> None:
        self.n[dim] += 1
        self.hit[dim] += truth == got
        self.confusion[dim][truth][got] += 1

    def report(self) -> dict:
        acc = {d: (self.hit[d] / self.n[d] if self.n[d] else None) for d in DIMENSIONS}
        n_all = sum(self.n.values())
        return {
            "accuracy": acc,
            "rates": {d: rate(self.hit[d], self.n[d]) for d in DIMENSIONS if self.n[d]},
            "all": rate(sum(self.hit.values()), n_all) if n_all else None,
            "confusion": {d: {t: dict(c) for t, c in m.items()} for d, m in self.confusion.items()},
        }


def table6(critic, videos: list[Video], questions: list[Question]) -> dict:
    """Pointwise and pairwise accuracy, position consistency and confusion of ``critic`` on ``questions``."""
    out: dict = {}
    point = [q for q in questions if q.task == "pointwise"]
    if point:
        idx = sorted({q.videos[0] for q in point})
        got = dict(zip(idx, critic.pointwise_many([videos[i] for i in idx])))
        tally, answered, unanswered, every, every_n = _Tally(), 0, 0, 0, 0
        for q in point:
            ans = got[q.videos[0]]
            if isinstance(ans, CriticParseError):
                unanswered += 1
                continue
            answered += 1
            for d, t in q.truth.items():
                tally.add(d, t, ans.labels[d])
            if len(q.truth) == len(DIMENSIONS):
                every_n += 1
                every += all(ans.labels[d] == t for d, t in q.truth.items())
        out["pointwise"] = {
            "n": answered,
            "unanswered": unanswered,
            **tally.report(),
            "all_dimensions": every / every_n if every_n else None,
            "all_dimensions_rate": rate(every, every_n) if every_n else None,
        }
    pair = [q for q in questions if q.task == "pairwise"]
    if pair:
        asked = [(videos[q.videos[0]], videos[q.videos[1]]) for q in pair]
        ab = critic.pairwise_many(asked)
        ba = critic.pairwise_many([(b, a) for a, b in asked])
        tally, answered, unanswered = _Tally(), 0, 0
        over_hit = over_n = 0
        cons = defaultdict(int)
        cons_n = 0
        for q, x, y in zip(pair, ab, ba):
            flipped_truth = {d: FLIP[t] for d, t in q.truth.items()}
            for ans, truth in ((x, q.truth), (y, flipped_truth)):
                if isinstance(ans, CriticParseError):
                    unanswered += 1
                    continue
                answered += 1
                for d, t in truth.items():
                    tally.add(d, t, ans.verdicts[d])
                if len(truth) == len(DIMENSIONS):
                    over_n += 1
                    over_hit += ans.overall == _overall(truth)
            if isinstance(x, CriticParseError) or isinstance(y, CriticParseError):
                continue
            cons_n += 1
            for d in DIMENSIONS:
                cons[d] += x.verdicts[d] == FLIP[y.verdicts[d]]
            cons["overall"] += x.overall == FLIP[y.overall]
        rep = tally.report()
        out["pairwise"] = {
            "n": answered,
            "unanswered": unanswered,
            **rep,
            "overall": over_hit / over_n if over_n else None,
            "overall_rate": rate(over_hit, over_n) if over_n else None,
            "position_consistency": {k: rate(cons[k], cons_n) for k in (*DIMENSIONS, "overall")} if cons_n else None,
        }
    return out


def table_rows(result: dict) -> list[tuple[str, str]]:
    """(measure, 'rate% [lo, hi] (k/n)') rows of a :func:`table6` result, for printing."""
    from ...stats import fmt

    def cell(r):
        return "n/a" if not r else f"{fmt(r['rate'], r['ci95'])} (n={r['n']})"

    rows = []
    for task in ("pointwise", "pairwise"):
        res = result.get(task)
        if not res:
            continue
        for d in DIMENSIONS:
            rows.append((f"{task} {d}", cell(res["rates"].get(d))))
        rows.append((f"{task} all", cell(res["all"])))
        if task == "pairwise":
            rows.append(("pairwise overall", cell(res["overall_rate"])))
            pc = res["position_consistency"] or {}
            rows += [(f"position consistency {k}", cell(pc.get(k))) for k in (*DIMENSIONS, "overall")]
    return rows
