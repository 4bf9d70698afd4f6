"""The ``ensemble`` critic: several critics' judgments combined per dimension.

- ``vote``: pointwise, the most common label (a tie between labels goes to the middle of them: the mean score's
  label); pairwise, the most common verdict (no majority: Tie);
- ``mean``: pointwise, the mean of the members' graded scores (Good 1, Normal 0.5, Bad 0 where a member has no
  scores) labelled Good >= 0.75, Normal >= 0.4, else Bad; pairwise, the mean of A = +1, B = -1, Tie = 0, with A above
  1/3 and B below -1/3.

A member whose answer does not parse is left out; the judgment is unparseable only when every member's is.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from .base import (
    DIMENSIONS,
    BatchCritic,
    Critic,
    CriticParseError,
    Pairwise,
    Pointwise,
    Video,
    dimension_score,
    label_of_score,
)
from .options import EnsembleOptions

SIGN = {"A": 1.0, "B": -1.0, "Tie": 0.0}


class EnsembleCritic(BatchCritic):
    name = "ensemble"
    Options = EnsembleOptions

    @classmethod
    def from_config(cls, cfg) -> EnsembleCritic:
        """Each member is a judge config of its own: the ensemble's options (less its members) with the member's
        mapping laid over them (:func:`vipo.config.member`), built by name like any critic."""
        from ..config import member
        from . import build

        opts = EnsembleOptions.of(cfg)
        opts.require()
        return cls([build(member(cfg, m)) for m in opts.members], opts.combine)

    def __init__(self, members: list[Critic], combine: str = "vote"):
        self.members, self.combine = members, combine

    def unreadable(self, prompt: str) -> str | None:
        return next((f"ensemble member {m.name}: {why}" for m in self.members if (why := m.unreadable(prompt))), None)

    def pointwise_many(self, videos: list[Video]) -> list[Pointwise | CriticParseError]:
        answers = [m.pointwise_many(videos) for m in self.members]
        return [self._point([a[i] for a in answers]) for i in range(len(videos))]

    def pairwise_many(self, pairs: list[tuple[Video, Video]]) -> list[Pairwise | CriticParseError]:
        answers = [m.pairwise_many(pairs) for m in self.members]
        return [self._pair([a[i] for a in answers]) for i in range(len(pairs))]

    def _raw(self, got: list) -> str:
        return "\n\n".join(f"[{m.name}]\n{g.raw}" for m, g in zip(self.members, got))

    def _point(self, got: list) -> Pointwise | CriticParseError:
        ok = [g for g in got if not isinstance(g, CriticParseError)]
        if not ok:
            return CriticParseError("no member's answer parsed", self._raw(got))
        labels, scores = {}, {}
        for d in DIMENSIONS:
            scores[d] = float(np.mean([dimension_score(g.scores, g.labels, d) for g in ok]))
            counts = Counter(g.labels[d] for g in ok).most_common()
            if self.combine == "vote" and (len(counts) == 1 or counts[0][1] > counts[1][1]):
                labels[d] = counts[0][0]
            else:
                labels[d] = label_of_score(scores[d])
        reasons = {d: f"{self.combine} of {len(ok)} critics" for d in DIMENSIONS}
        return Pointwise(labels, reasons, self._raw(got), scores)

    def _pair(self, got: list) -> Pairwise | CriticParseError:
        ok = [g for g in got if not isinstance(g, CriticParseError)]
        if not ok:
            return CriticParseError("no member's answer parsed", self._raw(got))
        verdicts = {}
        for d in DIMENSIONS:
            if self.combine == "vote":
                counts = Counter(g.verdicts[d] for g in ok).most_common()
                verdicts[d] = counts[0][0] if len(counts) == 1 or counts[0][1] > counts[1][1] else "Tie"
            else:
                m = float(np.mean([SIGN[g.verdicts[d]] for g in ok]))
                verdicts[d] = "A" if m > 1 / 3 else "B" if m < -1 / 3 else "Tie"
        return Pairwise(verdicts, {d: f"{self.combine} of {len(ok)} critics" for d in DIMENSIONS}, self._raw(got))
