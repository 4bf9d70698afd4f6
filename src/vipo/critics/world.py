"""The embedded world's critic: the exact pixel judge (``vipo.world.exact_judge``) speaking the critic text format.

It reads decoded frames only and answers both question kinds. Labels come from graded scores, so rankings of a
prompt's samples rarely tie: pairwise verdicts compare the graded scores per dimension (semantic: number of correct
attributes first, then how close colour, shape and motion direction are).
"""

from __future__ import annotations

import hashlib
import re

from ..world import grammar
from ..world.exact_judge import Scores, judge_clip, why_wrong
from .base import DIMENSIONS, TextCritic, Video, format_answer, label_of_score
from .options import WorldOptions

SEMANTIC_GOOD = 0.8  # graded semantic score for a correct clip to be Good rather than Normal
TIE = {"semantic": 0.02, "fidelity": 0.03, "motion": 0.03}


def _attrs(prompt: str) -> grammar.Attributes:
    a = grammar.parse(prompt)
    if a is None:
        raise ValueError(f"the world critic only judges prompts of the world's grammar, got {prompt!r}")
    return a


def semantic_key(s: Scores) -> float:
    return (s.color_ok + s.shape_ok + s.direction_ok) + s.semantic


class WorldCritic(TextCritic):
    name = "world"
    Options = WorldOptions
    attribute_checks = True

    @classmethod
    def from_config(cls, cfg) -> WorldCritic:
        return cls()

    def __init__(self) -> None:
        self._cache: dict[tuple[str, str], Scores] = {}

    def unreadable(self, prompt: str) -> str | None:
        if grammar.parse(prompt) is None:
            return (
                "not a prompt of the world's grammar, which the world critic reads (e.g. 'a red circle moving "
                "left'); choose another judge.critic for other prompts"
            )
        return None

    def scores(self, video: Video) -> Scores:
        key = (hashlib.sha1(video.frames.tobytes()).hexdigest(), video.prompt)
        if key not in self._cache:
            if len(self._cache) > 4096:
                self._cache.clear()
            self._cache[key] = judge_clip(video.frames, _attrs(video.prompt))
        return self._cache[key]

    def answer_pointwise(self, video: Video) -> str:
        s = self.scores(video)
        a = _attrs(video.prompt)
        m = s.measurement
        n_ok = s.color_ok + s.shape_ok + s.direction_ok
        wrong = [
            f"{k} is not clearly {getattr(a, k)}: {why_wrong(m, a, k)}"
            for k, ok in (("color", s.color_ok), ("shape", s.shape_ok), ("direction", s.direction_ok))
            if not ok
        ]
        labels = {
            # Any attribute wrong means the video does not show what was asked: Bad. All right but near a
            # threshold (colour off, shape loose, short or drifting travel): Normal.
            "semantic": ("Good" if s.semantic >= SEMANTIC_GOOD else "Normal") if n_ok == 3 else "Bad",
            "fidelity": label_of_score(s.fidelity),
            "motion": label_of_score(s.motion),
        }
        reasons = {
            "semantic": f"a {a.color} {a.shape} moving {a.direction} as asked" if n_ok == 3 else "; ".join(wrong),
            "fidelity": f"score {s.fidelity:.2f}: stray {m.stray:.2f}, noise {m.noise:.3f}, best shape fit "
            f"{max(m.shape_iou.values()):.2f}, size {m.size:.2f}",
            "motion": f"score {s.motion:.2f}: jitter {m.jitter:.3f}, area variation {m.area_cv:.2f}, "
            f"colour variation {m.color_cv:.1f}",
        }
        return (
            format_answer(labels, reasons) + f"\nscores: semantic={s.semantic:.4f} fidelity={s.fidelity:.4f} "
            f"motion={s.motion:.4f}"
        )

    def answer_pairwise(self, a: Video, b: Video) -> str:
        sa, sb = self.scores(a), self.scores(b)
        values = {
            "semantic": (semantic_key(sa), semantic_key(sb)),
            "fidelity": (sa.fidelity, sb.fidelity),
            "motion": (sa.motion, sb.motion),
        }
        verdicts, reasons = {}, {}
        for d in DIMENSIONS:
            va, vb = values[d]
            verdicts[d] = "Tie" if abs(va - vb) < TIE[d] else ("A" if va > vb else "B")
            reasons[d] = f"A {va:.3f} vs B {vb:.3f}"
        return format_answer(verdicts, reasons)

    def graded_scores(self, video: Video) -> dict[str, float]:
        s = self.scores(video)
        return {"semantic": s.semantic, "fidelity": s.fidelity, "motion": s.motion}


# -- reading the reasons back (what a critic learned from the world's annotators can learn from) --------------------

_PAIR_REASON = re.compile(r"^A (-?\d+(?:\.\d+)?) vs B (-?\d+(?:\.\d+)?)$")
_SCORE_REASON = re.compile(r"^score (-?\d+(?:\.\d+)?):")
_ATTRIBUTES = ("color", "shape", "direction")


def read_reason(task: str, dimension: str, reason: str, prompt: str) -> dict:
    """What a reason of :class:`WorldCritic` states, read back from its text (``{}`` for any other text, such as a
    person's own words): ``scores`` -- the graded value(s) the verdict compared (pairwise: ``(A, B)``, the
    semantic one being the number of right attributes plus the graded score; pointwise fidelity and motion:
    ``(score,)``); ``shows`` -- for a pointwise semantic reason, the colour, shape or direction the clip shows where
    the reason says it ("as asked", "looks orange", "looks like a square", "moves the opposite way"); ``passes`` --
    with it, whether each of colour, shape and direction passed its check (the reason names those that did not)."""
    reason = reason.strip()
    if task == "pairwise":
        m = _PAIR_REASON.match(reason)
        return {"scores": (float(m.group(1)), float(m.group(2)))} if m else {}
    if dimension != "semantic":
        m = _SCORE_REASON.match(reason)
        return {"scores": (float(m.group(1)),)} if m else {}
    a = grammar.parse(prompt)
    if a is None:
        return {}
    if reason == f"a {a.color} {a.shape} moving {a.direction} as asked":
        return {
            "shows": {"color": a.color, "shape": a.shape, "direction": a.direction},
            "passes": dict.fromkeys(_ATTRIBUTES, True),
        }
    shows, wrong = {}, set()
    for part in reason.split("; "):
        m = re.match(r"^(color|shape|direction) is not clearly (\w+): (.*)$", part)
        if m is None or m.group(2) != getattr(a, m.group(1)):
            return {}  # not a world judge's reason
        attr, why = m.group(1), m.group(3)
        wrong.add(attr)
        seen = re.fullmatch(r"looks (?:like a )?(\w+)", why)
        if seen and seen.group(1) in (grammar.COLORS if attr == "color" else grammar.SHAPES):
            shows[attr] = seen.group(1)
        elif attr == "direction" and why.startswith("moves the opposite way"):
            shows[attr] = grammar.OPPOSITE[a.direction]
    # an attribute the reason does not name passed its check: the clip shows the asked value
    shows.update({k: getattr(a, k) for k in _ATTRIBUTES if k not in wrong})
    return {"shows": shows, "passes": {k: k not in wrong for k in _ATTRIBUTES}}
