"""The ``human`` critic: labels people gave, read from a JSONL file and served through the critic interface.

One annotation per line; videos are named by their path relative to the judged folder (or any tail of it, e.g.
the file name)::

    {"video": "clip-003.mp4", "labels": {"semantic": "Good", "fidelity": "Normal", "motion": "Bad"},
     "reasons": {"motion": "the dog teleports"}}                              # pointwise; reasons optional
    {"a": "clip-003.mp4", "b": "clip-007.mp4", "verdicts": {"semantic": "A", "fidelity": "Tie", "motion": "B"}}

A pairwise annotation answers both orders (asked as (b, a), its verdicts are flipped). A question nobody annotated
is unparseable (recorded, left out, counted), so a partial annotation set surfaces in the unparseable rate.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePath

from ..errors import UserError
from .base import (
    DIMENSIONS,
    FLIP,
    LABELS,
    PAIR_VERDICTS,
    Critic,
    CriticParseError,
    Pairwise,
    Pointwise,
    Video,
    format_answer,
    swap,
)
from .options import HumanOptions


def _tails(path: str | None) -> list[str]:
    parts = PurePath(path or "").parts
    return ["/".join(parts[i:]) for i in range(len(parts))]


class HumanCritic(Critic):
    name = "human"
    Options = HumanOptions

    @classmethod
    def from_config(cls, cfg) -> HumanCritic:
        opts = HumanOptions.of(cfg)
        opts.require()
        return cls(opts.labels)

    def __init__(self, path: str | Path):
        from ..io.paths import check_relative
        from ..io.text import numbered_lines

        path = Path(path)
        if not path.is_file():
            raise UserError(f"judge.labels: {path}: file not found")
        self.point: dict[str, dict] = {}
        self.pair: dict[tuple[str, str], dict] = {}
        seen: dict[tuple, tuple[int, dict]] = {}  # a question -> (line, answer) of its first annotation
        for n, line in numbered_lines(path):
            try:
                row = json.loads(line)
                if "video" in row:
                    _valid(row["labels"], LABELS)
                    name = PurePath(check_relative(str(row["video"]), f"{path}:{n}: video")).as_posix()
                    key, answer = ("video", name), dict(row["labels"])
                    self.point[name] = row
                else:
                    _valid(row["verdicts"], PAIR_VERDICTS)
                    a, b = (PurePath(check_relative(str(row[f]), f"{path}:{n}: {f}")).as_posix() for f in "ab")
                    key, answer = ("pair", a, b), dict(row["verdicts"])
                    if ("pair", b, a) in seen:  # the same pair annotated in the other order: compare it swapped
                        key, answer = ("pair", b, a), {d: FLIP.get(v, v) for d, v in answer.items()}
                    self.pair[(a, b)] = row
            except (ValueError, KeyError, TypeError, AttributeError) as e:
                raise UserError(f"{path}:{n}: not an annotation ({e}); see docs/critics.md for the keys") from None
            first = seen.setdefault(key, (n, answer))
            if first[1] != answer:
                what = f"video {key[1]!r}" if key[0] == "video" else f"the pair {key[1]!r}, {key[2]!r}"
                raise UserError(
                    f"{path}:{n}: conflicts with line {first[0]}: two different annotations of {what} "
                    f"({first[1]} and {answer}); keep one (or merge them before judging)"
                )

    def _name(self, video: Video, known) -> str | None:
        return next((t for t in _tails(video.path) if t in known), None)

    def pointwise(self, video: Video) -> Pointwise:
        key = self._name(video, self.point)
        if key is None:
            raise CriticParseError(f"no human label for {video.path}", "")
        row = self.point[key]
        reasons = {d: row.get("reasons", {}).get(d, "") for d in DIMENSIONS}
        return Pointwise(dict(row["labels"]), reasons, format_answer(row["labels"], reasons))

    def pairwise(self, a: Video, b: Video) -> Pairwise:
        names = {n for pair in self.pair for n in pair}
        ka, kb = self._name(a, names), self._name(b, names)
        row = self.pair.get((ka, kb)) or self.pair.get((kb, ka))
        if row is None:
            raise CriticParseError(f"no human verdict for {a.path} vs {b.path}", "")
        reasons = {d: row.get("reasons", {}).get(d, "") for d in DIMENSIONS}
        p = Pairwise(dict(row["verdicts"]), reasons, format_answer(row["verdicts"], reasons))
        return p if (ka, kb) in self.pair else swap(p)

    def annotated_pairs(self) -> list[tuple[str, str]]:
        return list(self.pair)


def _valid(values: dict, allowed: tuple[str, ...]) -> None:
    for d in DIMENSIONS:
        if values[d] not in allowed:
            raise ValueError(f"{d}: {values[d]!r} is not one of {'/'.join(allowed)}")
