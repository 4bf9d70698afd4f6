"""The export of a labelling round: voted labels for the ``human`` critic, critic training data, agreement, and the
Label Studio pair, all in one self-contained folder written atomically.

``write_export(out, root, items, answers)`` takes plain :class:`~vipo.annotate.items.Item` and
:class:`~vipo.annotate.votes.Answer` records, so people's answers (the browser app's store, a Label Studio export)
and simulated annotators' answers go through the same code. ``OUT`` holds:

- ``labels.jsonl``: one row per item whose three dimensions were all decided by the vote, in the ``human`` critic's
  format (``video``/``labels``/``reasons``; ``a``/``b``/``verdicts``/``reasons``), video paths relative to ``DIR``;
  ``vipo judge DIR --critic human --labels OUT/labels.jsonl`` reads it;
- ``critic_train.jsonl`` + ``videos/``: one record per item and dimension with a decided vote (schema below;
  ``datasets.load_dataset("json", data_files="OUT/critic_train.jsonl")`` opens it), the videos hard-linked (copied
  across file systems) under ``videos/`` with their ``DIR``-relative names;
- ``votes.jsonl``: every item with every answer and every dimension's vote, ties and incomplete items included;
- ``agreement.json``: counts of decided / tied / incomplete questions, agreement per dimension and annotator, and
  position bias (:mod:`vipo.annotate.votes`);
- ``label_studio/``: labelling configurations and tasks to import into Label Studio (:mod:`.labelstudio`).

``critic_train.jsonl`` record (``vipo critic train`` reads exactly this; keep it stable)::

    {"id": "pairwise:a.mp4|b.mp4#motion", "task": "pairwise", "dimension": "motion", "prompt": "...",
     "videos": ["videos/a.mp4", "videos/b.mp4"],          # relative to OUT; pairwise: A first (the item's order)
     "question": "...",                                   # the critic's question for this dimension, rendered
     "verdict": "B", "votes": {"A": 1, "B": 2, "Tie": 0}, # every choice of the task, zero counts included
     "reasons": ["..."],                                  # reasons of the annotators who voted for the verdict
     "annotators": 3, "split": "train"}

The split is a function of the prompt alone (:func:`vipo.critics.learn.data.split_of`), so a prompt never crosses splits.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from ..critics.base import DIMENSIONS
from ..critics.learn.data import split_of
from ..errors import UserError
from ..io import atomic
from ..io.paths import confined
from . import labelstudio
from .items import Item
from .votes import CHOICES, Answer, Vote, agreement, position_bias, votes


@dataclass
class ExportOptions:
    min_annotators: int = 1
    """an item counts once this many annotators answered it (fewer: reported as incomplete, left out)"""
    test_fraction: float = 0.1
    """share of prompts whose records get ``split: test`` (by a hash of the prompt: a prompt never crosses splits)"""
    question_frames: int = 16
    """``{n_frames}`` in the rendered questions: the number of frames the critic will be shown (judge.frames)"""
    prompts_dir: str = ""
    """a folder overriding the critic's question templates file by file (judge.prompts_dir)"""
    label_studio_url: str = ""
    """prefix of the video URLs in the Label Studio tasks (default ``/data/local-files/?d=<DIR's name>/``)"""
    link: bool = True
    """hard-link the videos into ``OUT/videos`` when the file system allows (else copy)"""

    def __post_init__(self):
        if self.min_annotators < 1:
            raise UserError(f"annotate export --min-annotators: {self.min_annotators} must be >= 1")
        if not 0.0 <= self.test_fraction <= 1.0:
            raise UserError(f"annotate export --test-fraction: {self.test_fraction} must be in [0, 1]")
        if self.question_frames < 1:
            raise UserError(f"annotate export --frames: {self.question_frames} must be >= 1")


def questions(prompts_dir: str = "", frames: int = 16):
    """``question(task, dimension, prompt)``: the critic's question text, as the LLM critics render it."""
    from ..critics.llm import load_templates

    templates = load_templates(prompts_dir)

    def question(task: str, dim: str, prompt: str) -> str:
        return templates[f"{task}_{dim}"].replace("{prompt}", prompt).replace("{n_frames}", str(frames))

    return question


def _clean(obj):
    """NaN (an undefined rate) becomes null: the JSON files stay strict JSON."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(_clean(r), ensure_ascii=False, sort_keys=False) + "\n" for r in rows)


def _place(src: Path, dst: Path, link: bool) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if link and os.access(src, os.W_OK):  # the folder's fsync opens files for writing: link writable ones only
        try:
            os.link(src, dst)
            return
        except OSError:
            pass
    shutil.copy2(src, dst)


def _check_out(out: Path) -> None:
    atomic.recover(out)
    if out.exists() and not (
        out.is_dir() and (not any(out.iterdir()) or (atomic.is_complete(out) and (out / "agreement.json").is_file()))
    ):
        raise UserError(f"annotate export --out: {out} exists and is not an earlier export: choose a new folder")


def tally(items: list[Item], answers: list[Answer], min_annotators: int = 1) -> dict:
    """Per item: its answers and each dimension's :class:`Vote`; ``complete`` once ``min_annotators`` answered."""
    by_item: dict[str, dict[str, Answer]] = {}
    for a in answers:
        by_item.setdefault(a.item, {})[a.annotator] = a  # an annotator's later answer replaces theirs
    voted = votes([a for got in by_item.values() for a in got.values()])
    out = {}
    for it in items:
        got = by_item.get(it.id, {})
        out[it.id] = {
            "item": it,
            "answers": list(got.values()),
            "complete": len(got) >= min_annotators,
            "votes": {d: voted.get((it.id, d), Vote(None, {}, 0)) for d in DIMENSIONS},
        }
    return out


def write_export(
    out: str | Path, root: str | Path, items: list[Item], answers: list[Answer], options: ExportOptions | None = None
) -> dict:
    """Write the export folder ``out`` (atomically: a killed export leaves the previous one or nothing) and return
    the summary that ``agreement.json`` holds."""
    opts = options or ExportOptions()
    out, root = Path(out), Path(root)
    _check_out(out)
    known = {it.id for it in items}
    stray = sorted({a.item for a in answers} - known)
    if stray:
        raise UserError(f"annotate export: {len(stray)} answers name items not in the list, e.g. {stray[0]}")
    question = questions(opts.prompts_dir, opts.question_frames)
    table = tally(items, answers, opts.min_annotators)

    labels, train, rows, used = [], [], [], set()
    counts = {t: {d: Counter() for d in DIMENSIONS} for t in CHOICES}
    for it in items:
        entry = table[it.id]
        got, vs = entry["answers"], entry["votes"]
        if got:
            rows.append(
                {
                    "id": it.id,
                    "task": it.task,
                    "prompt": it.prompt,
                    "videos": list(it.videos),
                    "complete": entry["complete"],
                    "votes": {
                        d: {"verdict": v.verdict, "counts": v.counts, "n": v.n, "tied": v.tied} for d, v in vs.items()
                    },
                    "answers": [
                        {
                            "annotator": a.annotator,
                            "verdicts": a.verdicts,
                            "reasons": a.reasons,
                            "tags": a.tags,
                            "swapped": a.swapped,
                        }
                        for a in got
                    ],
                }
            )
        for d, v in vs.items():
            state = (
                "unanswered" if v.n == 0 else "incomplete" if not entry["complete"] else "tied" if v.tied else "decided"
            )
            counts[it.task][d][state] += 1
        if not entry["complete"] or not got:
            continue
        decided = {d: v for d, v in vs.items() if v.verdict is not None}
        why = {
            d: "; ".join(
                a.reasons.get(d, "") for a in got if a.verdicts.get(d) == v.verdict and a.reasons.get(d, "").strip()
            )
            for d, v in decided.items()
        }
        if len(decided) == len(DIMENSIONS):
            verdicts = {d: v.verdict for d, v in decided.items()}
            if it.task == "pointwise":
                labels.append({"video": it.videos[0], "labels": verdicts, "reasons": why})
            else:
                labels.append({"a": it.videos[0], "b": it.videos[1], "verdicts": verdicts, "reasons": why})
        for d, v in decided.items():
            used.update(it.videos)
            train.append(
                {
                    "id": f"{it.id}#{d}",
                    "task": it.task,
                    "dimension": d,
                    "prompt": it.prompt,
                    "videos": [f"videos/{name}" for name in it.videos],
                    "question": question(it.task, d, it.prompt),
                    "verdict": v.verdict,
                    "votes": {c: v.counts.get(c, 0) for c in CHOICES[it.task]},
                    "reasons": [
                        a.reasons[d] for a in got if a.verdicts.get(d) == v.verdict and a.reasons.get(d, "").strip()
                    ],
                    "annotators": v.n,
                    "split": split_of(it.prompt, opts.test_fraction),
                }
            )

    summary = _clean(
        {
            "items": {t: sum(it.task == t for it in items) for t in CHOICES},
            "answers": len({(a.item, a.annotator) for a in answers}),
            "annotators": sorted({a.annotator for a in answers}),
            "questions": {
                t: {d: {k: c[k] for k in ("decided", "tied", "incomplete", "unanswered")} for d, c in per.items()}
                for t, per in counts.items()
            },
            "labels_rows": len(labels),
            "critic_train_records": len(train),
            "splits": dict(Counter(r["split"] for r in train)),
            "agreement": agreement(answers),
            "position_bias": position_bias(answers),
            "options": asdict(opts),
        }
    )

    with atomic.atomic_dir(out) as tmp:
        (tmp / "labels.jsonl").write_text(_jsonl(labels), encoding="utf-8")
        (tmp / "critic_train.jsonl").write_text(_jsonl(train), encoding="utf-8")
        (tmp / "votes.jsonl").write_text(_jsonl(rows), encoding="utf-8")
        (tmp / "agreement.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        for name in sorted(used):
            _place(confined(root, name, f"{root}: video"), confined(tmp / "videos", name, "export video"), opts.link)
        labelstudio.write_files(tmp / "label_studio", items, root, opts.label_studio_url)
    return summary
