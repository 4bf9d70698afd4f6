"""What every multimodal-LLM critic shares: frames, prompt templates, verdict parsing and retries.

A backend (``vlm``: local transformers; ``openai``: a served endpoint) only turns questions into answers
(:meth:`LLMCritic.complete`). Everything else happens here, the same for both:

- each video becomes ``frames`` frames sampled uniformly in time, letterboxed (scaled to fit, padded, never
  cropped) to ``frame_size`` squared;
- one question per dimension (LiFT style: semantic consistency, fidelity, motion), from editable templates
  (``critics/prompts/*.txt``; ``prompts_dir`` overrides them file by file), asking for reasoning first and a final
  ``Verdict:`` line, which :func:`~vipo.critics.parsing.parse_verdict` reads;
- an unparseable answer is asked again up to ``retries`` times, with ``retry.txt`` appended, in the same order: a
  pairwise retry never swaps the videos, because the judge asks every pair in both orders and keeps only verdicts
  that agree, and a retried answer asked in its partner's order would let a position-biased critic pass that check;
- a judgment with any dimension still unparseable comes back as a :class:`CriticParseError` holding every attempt's
  raw text; the judge stage records it and leaves it out.
"""

from __future__ import annotations

import abc
import logging
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import UserError
from .base import DIMENSIONS, FLIP, LABELS, PAIR_VERDICTS, BatchCritic, CriticParseError, Pairwise, Pointwise, Video
from .options import LLMOptions
from .parsing import parse_verdict

log = logging.getLogger(__name__)
TEMPLATES = ["system", "retry"] + [f"{k}_{d}" for k in ("pointwise", "pairwise") for d in DIMENSIONS]


@dataclass
class Query:
    """One question: a system text and user content, an ordered mix of text and uint8 [H, W, 3] images."""

    system: str
    parts: list


def sample_frames(frames: np.ndarray, n: int) -> np.ndarray:
    """``n`` frames uniformly spaced in time, first and last included (all of them when the clip is shorter)."""
    if len(frames) <= n:
        return frames
    return frames[np.linspace(0, len(frames) - 1, n).round().astype(int)]


def letterbox(frame: np.ndarray, side: int) -> np.ndarray:
    """Scale to fit a ``side`` square keeping the aspect ratio, centre on black: nothing of the frame is cut."""
    h, w = frame.shape[:2]
    s = side / max(h, w)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    img = np.asarray(Image.fromarray(np.ascontiguousarray(frame)).resize((nw, nh), Image.BICUBIC))
    out = np.zeros((side, side, 3), dtype=np.uint8)
    y, x = (side - nh) // 2, (side - nw) // 2
    out[y : y + nh, x : x + nw] = img
    return out


def load_templates(override_dir: str = "") -> dict[str, str]:
    out = {}
    for name in TEMPLATES:
        path = Path(override_dir) / f"{name}.txt" if override_dir else None
        if path is not None and path.is_file():
            out[name] = path.read_text(encoding="utf-8")
        else:
            out[name] = resources.files("vipo.critics").joinpath("prompts", f"{name}.txt").read_text(encoding="utf-8")
    if override_dir and not Path(override_dir).is_dir():
        raise UserError(f"judge.prompts_dir: {override_dir}: not a folder")
    return out


class Questions:
    """The questions an LLM critic is asked, built from ``cfg`` (frames, frame_size, prompts_dir): the one code path
    that both judging and critic training (:mod:`vipo.critics.learn.sft`) use, so a trained critic is shown exactly
    what it was trained on."""

    def __init__(self, cfg: LLMOptions):
        self.cfg = cfg
        self.templates = load_templates(cfg.prompts_dir)

    def frames(self, video: Video) -> list[np.ndarray]:
        return [letterbox(f, self.cfg.frame_size) for f in sample_frames(video.frames, self.cfg.frames)]

    def _text(self, name: str, prompt: str, n: int, retry: bool) -> str:
        text = self.templates[name].replace("{prompt}", prompt).replace("{n_frames}", str(n))
        return text + self.templates["retry"] if retry else text

    def query_pointwise(self, video: Video, dim: str, retry: bool = False) -> Query:
        fr = self.frames(video)
        return Query(self.templates["system"], fr + [self._text(f"pointwise_{dim}", video.prompt, len(fr), retry)])

    def query_pairwise(self, a: Video, b: Video, dim: str, retry: bool = False) -> Query:
        fa, fb = self.frames(a), self.frames(b)
        return Query(
            self.templates["system"],
            ["Video A:"] + fa + ["Video B:"] + fb + [self._text(f"pairwise_{dim}", a.prompt, len(fa), retry)],
        )


class LLMCritic(Questions, BatchCritic):
    """Base of the LLM critics; subclasses implement :meth:`complete`."""

    @abc.abstractmethod
    def complete(self, queries: list[Query]) -> list[str | Exception]:
        """One answer per query, in order; an answer that could not be had at all is the exception saying why."""

    # -- asking, parsing, retrying -------------------------------------------------------------------------------
    def _ask(self, n_items: int, allowed: tuple[str, ...], make) -> list[tuple[dict, dict, dict] | CriticParseError]:
        """Ask every (item, dimension) question, retrying the unparseable ones; ``make(i, dim, attempt)`` builds the
        query and says whether its verdict is to be flipped back (a query asked with the two videos swapped)."""
        todo = [(i, d) for i in range(n_items) for d in DIMENSIONS]
        got: dict[tuple[int, str], tuple[str, str, str]] = {}
        attempts: dict[tuple[int, str], list[str]] = {k: [] for k in todo}
        for attempt in range(self.cfg.retries + 1):
            built = [make(i, d, attempt) for i, d in todo]
            answers = self.complete([q for q, _ in built])
            again = []
            for key, (_, flip), ans in zip(todo, built, answers):
                text = ans if isinstance(ans, str) else f"<no answer: {ans}>"
                attempts[key].append(text)
                try:
                    verdict, reason = parse_verdict(text, allowed)
                except CriticParseError:
                    again.append(key)
                    continue
                got[key] = (FLIP[verdict] if flip else verdict, reason, text)
            todo = again
            if not todo:
                break
            log.debug("%d answers unparseable; asking again (attempt %d)", len(todo), attempt + 2)
        out = []
        for i in range(n_items):
            bad = [d for d in DIMENSIONS if (i, d) not in got]
            if bad:
                raw = "\n\n".join(f"[{d}, attempt {k + 1}]\n{t}" for d in bad for k, t in enumerate(attempts[(i, d)]))
                out.append(
                    CriticParseError(
                        f"no parseable verdict for {', '.join(bad)} after {self.cfg.retries + 1} attempts", raw
                    )
                )
                continue
            verdicts = {d: got[(i, d)][0] for d in DIMENSIONS}
            reasons = {d: got[(i, d)][1] for d in DIMENSIONS}
            raw = "\n\n".join(f"[{d}]\n{got[(i, d)][2]}" for d in DIMENSIONS)
            out.append((verdicts, reasons, {"raw": raw}))
        return out

    def pointwise_many(self, videos: list[Video]) -> list[Pointwise | CriticParseError]:
        res = self._ask(len(videos), LABELS, lambda i, d, k: (self.query_pointwise(videos[i], d, k > 0), False))
        return [r if isinstance(r, CriticParseError) else Pointwise(r[0], r[1], r[2]["raw"]) for r in res]

    def pairwise_many(self, pairs: list[tuple[Video, Video]]) -> list[Pairwise | CriticParseError]:
        def make(i: int, d: str, k: int):
            a, b = pairs[i]
            return self.query_pairwise(a, b, d, k > 0), False  # a retry keeps the order (module docstring)

        res = self._ask(len(pairs), PAIR_VERDICTS, make)
        return [r if isinstance(r, CriticParseError) else Pairwise(r[0], r[1], r[2]["raw"]) for r in res]
