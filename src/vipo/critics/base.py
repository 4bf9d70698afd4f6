"""The critic interface: pointwise Good/Normal/Bad and pairwise A/B/Tie verdicts on three dimensions.

Every critic — the embedded world's programmatic judge, a multimodal LLM served locally or by vLLM, pixel statistics,
a reward model, human labels — answers with the same verdicts, keeping the text it came from in the same format, so
the judge stage stores the critic's raw text beside each parsed verdict and never depends on which critic produced
it (the kinds of critic: :class:`Critic`):

    semantic: Good - the red circle moves left as asked
    fidelity: Normal - a faint smear trails the shape
    motion: Bad - the shape jumps between frames

and for a pair (video A shown first):

    semantic: A - A is a circle, B a square
    fidelity: Tie - both clean
    motion: B - A flickers
"""

from __future__ import annotations

import abc
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from .options import CriticOptions, NoOptions

DIMENSIONS = ("semantic", "fidelity", "motion")
LABELS = ("Good", "Normal", "Bad")
LABEL_SCORE = {"Good": 1.0, "Normal": 0.5, "Bad": 0.0}
PAIR_VERDICTS = ("A", "B", "Tie")
#: a pairwise verdict seen from the other order (B, A)
FLIP = {"A": "B", "B": "A", "Tie": "Tie"}
#: graded-score thresholds of Good and Normal, shared by every critic that labels a score in [0, 1]
GOOD, NORMAL = 0.75, 0.4


def dimension_score(scores: dict[str, float], labels: dict[str, str], dim: str) -> float:
    """A clip's score on ``dim``: the critic's graded score where it has one, else its label's (Good 1, Normal 0.5,
    Bad 0: :data:`LABEL_SCORE`)."""
    return float(scores[dim]) if dim in scores else LABEL_SCORE[labels[dim]]


def label_of_score(score: float) -> str:
    """Good / Normal / Bad for a graded score in [0, 1] (thresholds :data:`GOOD`, :data:`NORMAL`)."""
    return "Good" if score >= GOOD else "Normal" if score >= NORMAL else "Bad"


class CriticParseError(ValueError):
    """An answer that does not parse; ``raw`` keeps the critic's text so it can be stored and inspected."""

    def __init__(self, message: str, raw: str = ""):
        super().__init__(message)
        self.raw = raw


@dataclass
class Video:
    """What a critic sees: the prompt and decoded frames (uint8 [F, H, W, 3]); ``path`` where one exists."""

    prompt: str
    frames: np.ndarray
    path: str | None = None


@dataclass
class Pointwise:
    labels: dict[str, str]
    reasons: dict[str, str]
    raw: str
    #: graded scores in [0, 1] per dimension where the critic has them (else from the label)
    scores: dict[str, float] = field(default_factory=dict)
    #: the critic's own scalar score (OmniScore's total) where it has one; else the mean over dimensions
    total: float | None = None

    @property
    def overall(self) -> float:
        if self.total is not None:
            return float(self.total)
        return float(np.mean([dimension_score(self.scores, self.labels, d) for d in DIMENSIONS]))


@dataclass
class Pairwise:
    verdicts: dict[str, str]
    reasons: dict[str, str]
    raw: str
    #: the critic's own overall verdict (OmniScore compares totals); else semantic decides, as below
    decided: str | None = None

    @property
    def overall(self) -> str:
        """Semantic consistency decides; fidelity then motion break its ties."""
        if self.decided is not None:
            return self.decided
        for d in DIMENSIONS:
            if self.verdicts[d] != "Tie":
                return self.verdicts[d]
        return "Tie"


_LINE = re.compile(
    r"^\s*[*#>\-\s]*(semantic|fidelity|motion)[a-z _]*\**\s*[:=]\s*\**\s*([A-Za-z]+)\**\s*[-–—:,.]?\s*(.*)$",
    re.IGNORECASE,
)


def _parse(text: str, allowed: tuple[str, ...]) -> tuple[dict[str, str], dict[str, str]]:
    found: dict[str, str] = {}
    reasons: dict[str, str] = {}
    canon = {a.lower(): a for a in allowed}
    for line in text.splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        dim, word, reason = m.group(1).lower(), m.group(2).lower(), m.group(3).strip()
        if dim in found or word not in canon:
            continue
        found[dim] = canon[word]
        reasons[dim] = reason
    missing = [d for d in DIMENSIONS if d not in found]
    if missing:
        raise CriticParseError(f"critic answer lacks a {'/'.join(allowed)} verdict for {', '.join(missing)}", text)
    return found, reasons


def parse_pointwise(text: str) -> Pointwise:
    labels, reasons = _parse(text, LABELS)
    return Pointwise(labels, reasons, text)


def parse_pairwise(text: str) -> Pairwise:
    verdicts, reasons = _parse(text, PAIR_VERDICTS)
    return Pairwise(verdicts, reasons, text)


def format_answer(verdicts: dict[str, str], reasons: dict[str, str]) -> str:
    return "\n".join(f"{d}: {verdicts[d]} - {reasons[d]}" for d in DIMENSIONS)


def swap(p: Pairwise) -> Pairwise:
    """The verdict of a pair judged as (B, A), re-expressed in the (A, B) order."""
    return Pairwise(
        {d: FLIP[v] for d, v in p.verdicts.items()}, p.reasons, p.raw, None if p.decided is None else FLIP[p.decided]
    )


class Critic(abc.ABC):
    """A critic judges videos on the three dimensions: :meth:`pointwise` (Good/Normal/Bad) and :meth:`pairwise`
    (A/B/Tie), each a parsed answer that keeps the text it came from (``raw``). The judge stage asks in batches
    (:meth:`pointwise_many`, :meth:`pairwise_many`), an unparseable answer coming back as its
    :class:`CriticParseError` in its place.

    A critic derives from one of:

    - :class:`TextCritic`: it writes its answer as text (:meth:`TextCritic.answer_pointwise`), which the shared
      parser reads (the world's judge, pixelstats, omniscore);
    - :class:`BatchCritic`: it answers a batch at once (:meth:`pointwise_many`: the LLM critics, the reward model,
      the learned critic, the ensemble); one video is a batch of one;
    - :class:`Critic` itself, answering one item at a time with :meth:`pointwise` and :meth:`pairwise` (human
      labels, read from a file).
    """

    name: str = "critic"
    #: the critic runs elsewhere (a server): the run judges each prompt while the next batches generate
    #: (:class:`vipo.stages.judge.BackgroundJudge`); an in-process critic would share the sampler's GPU
    served: bool = False
    #: the critic's options (vipo/critics/options.py): the ``judge.*`` fields it reads, their docs and checks
    Options: ClassVar[type[CriticOptions]] = NoOptions
    #: the critic also reports the exact attribute checks of a clip (``scores(video)`` with ``color_ok``,
    #: ``shape_ok``, ``direction_ok``, ``passed``): the embedded world's judge
    attribute_checks: ClassVar[bool] = False

    @classmethod
    def from_config(cls, cfg: Any) -> Critic:
        """The critic made from the judge options ``cfg`` (a flat :class:`vipo.config.JudgeConfig`): its own
        :attr:`Options` picked out, checked for what it needs, and passed to the constructor; critics without
        options or with another constructor override this."""
        opts = cls.Options.of(cfg)
        opts.require()
        return cls(opts)  # type: ignore[call-arg]

    def unreadable(self, prompt: str) -> str | None:
        """Why this critic cannot judge videos of ``prompt`` (None: it can). Verbs ask before they generate or judge
        anything, so a prompt the critic cannot read is refused at start, not after minutes of work."""
        return None

    @abc.abstractmethod
    def pointwise(self, video: Video) -> Pointwise:
        """Good/Normal/Bad per dimension (graded ``scores`` where the critic has them); raises
        :class:`CriticParseError` when its answer does not parse."""

    @abc.abstractmethod
    def pairwise(self, a: Video, b: Video) -> Pairwise:
        """A/B/Tie per dimension, A being the video shown first; raises :class:`CriticParseError` as above."""

    def pointwise_many(self, videos: list[Video]) -> list[Pointwise | CriticParseError]:
        return [_catch(self.pointwise, v) for v in videos]

    def pairwise_many(self, pairs: list[tuple[Video, Video]]) -> list[Pairwise | CriticParseError]:
        return [_catch(self.pairwise, a, b) for a, b in pairs]


class TextCritic(Critic):
    """A critic that writes its answer as text, one line per dimension (the module docstring's format); the shared
    parser turns it into verdicts, so what is stored is exactly what was parsed."""

    @abc.abstractmethod
    def answer_pointwise(self, video: Video) -> str:
        """Raw text with one Good/Normal/Bad line per dimension."""

    @abc.abstractmethod
    def answer_pairwise(self, a: Video, b: Video) -> str:
        """Raw text with one A/B/Tie line per dimension, A being the video shown first."""

    def graded_scores(self, video: Video) -> dict[str, float]:
        """Graded per-dimension scores in [0, 1] where the critic has them (default: none, labels are used)."""
        return {}

    def pointwise(self, video: Video) -> Pointwise:
        out = parse_pointwise(self.answer_pointwise(video))
        out.scores = self.graded_scores(video)
        return out

    def pairwise(self, a: Video, b: Video) -> Pairwise:
        return parse_pairwise(self.answer_pairwise(a, b))


class BatchCritic(Critic):
    """A critic that answers a batch at once (a batched model forward, concurrent requests to a server); a single
    question is a batch of one."""

    @abc.abstractmethod
    def pointwise_many(self, videos: list[Video]) -> list[Pointwise | CriticParseError]: ...

    @abc.abstractmethod
    def pairwise_many(self, pairs: list[tuple[Video, Video]]) -> list[Pairwise | CriticParseError]: ...

    def pointwise(self, video: Video) -> Pointwise:
        return _raise(self.pointwise_many([video])[0])

    def pairwise(self, a: Video, b: Video) -> Pairwise:
        return _raise(self.pairwise_many([(a, b)])[0])


def _catch(fn, *args):
    try:
        return fn(*args)
    except CriticParseError as e:
        return e


def _raise(answer):
    if isinstance(answer, Exception):
        raise answer
    return answer
