"""Critic-training records: one JSON object per line, one record per (item, dimension) with a decided verdict.

This is what ``vipo annotate export`` writes (``critic_train.jsonl``), what the importers of public datasets write
(:mod:`vipo.critics.learn.importers`) and what ``vipo critic train`` and ``vipo critic eval`` read::

    {"id": "pairwise:a.mp4|b.mp4#motion", "task": "pairwise", "dimension": "motion", "prompt": "...",
     "videos": ["videos/a.mp4", "videos/b.mp4"],      # relative to the JSONL's folder; pairwise: A first
     "question": "...",                               # the question as rendered for people (not used for training:
                                                      # the critic is asked its own templates' question)
     "verdict": "B", "votes": {"A": 1, "B": 2, "Tie": 0},
     "reasons": ["..."],                              # reasons of the annotators who voted for the verdict
     "annotators": 3, "split": "train"}               # or "test"

:func:`read_records` checks every field and stops at the first bad one with ``FILE:LINE: field: what is wrong``.
Video paths are relative to the JSONL's folder (never absolute); with ``check_files`` each video must exist.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath

from ...errors import UserError
from ...io.text import numbered_lines
from ..base import DIMENSIONS, LABELS, PAIR_VERDICTS

TASKS = ("pointwise", "pairwise")
CHOICES = {"pointwise": LABELS, "pairwise": PAIR_VERDICTS}
SPLITS = ("train", "test")
REQUIRED = (
    "id",
    "task",
    "dimension",
    "prompt",
    "videos",
    "question",
    "verdict",
    "votes",
    "reasons",
    "annotators",
    "split",
)


@dataclass
class Record:
    id: str
    task: str
    dimension: str
    prompt: str
    videos: list[str]
    question: str
    verdict: str
    votes: dict[str, int]
    reasons: list[str]
    annotators: int
    split: str
    #: the folder the video paths are relative to (not serialized)
    root: Path = field(default=Path("."), repr=False, compare=False)

    def paths(self) -> list[Path]:
        return [self.root / v for v in self.videos]

    def as_dict(self) -> dict:
        d = asdict(self)
        d.pop("root")
        return d


def split_of(prompt: str, test_fraction: float) -> str:
    """``test`` when the first 8 bytes of sha256(prompt, UTF-8) read as a big-endian fraction of 2**64 fall below
    ``test_fraction``, else ``train``: deterministic, and the same for every record of a prompt."""
    u = int.from_bytes(hashlib.sha256(prompt.encode("utf-8")).digest()[:8], "big") / 2**64
    return "test" if u < test_fraction else "train"


def _fail(where: str, message: str):
    raise UserError(f"{where}: {message}")


def check_relative(path: str, where: str) -> None:
    """A video path is relative to the records' folder (``..`` allowed: imported records may sit beside a dataset
    they do not copy), so the records and their videos move together."""
    p = PurePosixPath(path.replace("\\", "/"))
    if not path or p.is_absolute() or path.startswith("~") or (len(path) > 1 and path[1] == ":"):
        _fail(where, f"{path!r} must be a path relative to the JSONL's folder")


def parse_record(row, where: str, root: Path = Path("."), check_files: bool = False) -> Record:
    if not isinstance(row, dict):
        _fail(where, "expected a JSON object")
    for k in REQUIRED:
        if k not in row:
            _fail(f"{where}: {k}", "missing")
    for k in ("id", "prompt", "question"):
        if not isinstance(row[k], str):
            _fail(f"{where}: {k}", f"expected text, got {row[k]!r}")
    if not row["id"] or not row["prompt"].strip():
        _fail(f"{where}: {'id' if not row['id'] else 'prompt'}", "must not be empty")
    task, dim = row["task"], row["dimension"]
    if task not in TASKS:
        _fail(f"{where}: task", f"{task!r} is not one of {'/'.join(TASKS)}")
    if dim not in DIMENSIONS:
        _fail(f"{where}: dimension", f"{dim!r} is not one of {'/'.join(DIMENSIONS)}")
    videos = row["videos"]
    want = 1 if task == "pointwise" else 2
    if not isinstance(videos, list) or len(videos) != want or not all(isinstance(v, str) for v in videos):
        _fail(f"{where}: videos", f"a {task} record needs a list of {want} path(s), got {videos!r}")
    for v in videos:
        check_relative(v, f"{where}: videos")
        if check_files and not (root / v).is_file():
            _fail(f"{where}: videos", f"{root / v}: file not found")
    allowed = CHOICES[task]
    if row["verdict"] not in allowed:
        _fail(f"{where}: verdict", f"{row['verdict']!r} is not one of {'/'.join(allowed)} ({task})")
    votes = row["votes"]
    if (
        not isinstance(votes, dict)
        or any(k not in allowed for k in votes)
        or any(isinstance(n, bool) or not isinstance(n, int) or n < 0 for n in votes.values())
    ):
        _fail(f"{where}: votes", f"expected counts per verdict ({'/'.join(allowed)}), got {votes!r}")
    reasons = row["reasons"]
    if not isinstance(reasons, list) or not all(isinstance(r, str) for r in reasons):
        _fail(f"{where}: reasons", f"expected a list of texts, got {reasons!r}")
    n = row["annotators"]
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        _fail(f"{where}: annotators", f"expected a count, got {n!r}")
    if row["split"] not in SPLITS:
        _fail(f"{where}: split", f"{row['split']!r} is not one of {'/'.join(SPLITS)}")
    return Record(
        row["id"],
        task,
        dim,
        row["prompt"],
        list(videos),
        row["question"],
        row["verdict"],
        dict(votes),
        list(reasons),
        n,
        row["split"],
        root,
    )


def read_records(path: str | Path, check_files: bool = True, split: str | None = None) -> list[Record]:
    """Every record of a critic-training JSONL (``split``: only those of that split). One-line errors name the file,
    line and field; ids must be unique."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    out, seen = [], {}
    for n, line in numbered_lines(path):
        where = f"{path}:{n}"
        try:
            row = json.loads(line)
        except ValueError as e:
            raise UserError(f"{where}: not JSON ({e.msg})") from None
        rec = parse_record(row, where, path.parent, check_files)
        if rec.id in seen:
            raise UserError(f"{where}: id: {rec.id!r} already used on line {seen[rec.id]}")
        seen[rec.id] = n
        if split is None or rec.split == split:
            out.append(rec)
    if not seen:
        raise UserError(f"{path}: no records")
    return out


def write_records(path: str | Path, records: list[Record | dict]) -> None:
    from ...io import atomic

    rows = [r.as_dict() if isinstance(r, Record) else r for r in records]
    atomic.write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def summary(records: list[Record]) -> dict:
    """Counts per split, task and dimension, and the verdicts' distribution: what a training run reports first."""
    out: dict = {}
    for r in records:
        node = out.setdefault(r.split, {}).setdefault(r.task, {}).setdefault(r.dimension, Counter())
        node[r.verdict] += 1
    return {s: {t: {d: dict(c) for d, c in dims.items()} for t, dims in tasks.items()} for s, tasks in out.items()}
