"""Importers that turn other label sources into critic-training records (:mod:`vipo.critics.learn.data`).

Each reads a local folder in its published layout and writes records whose video paths are relative to the output
JSONL's folder (the videos stay where they are). The split of a record is the annotation export's: a hash of its
prompt (:func:`vipo.critics.learn.data.split_of`), so a prompt never crosses splits.

- **LiFT-HRA** (Wang et al. 2024, *LiFT*; ``LiFT-HRA-data.json`` beside ``videos/``): a JSON list in the
  LLaVA/VILA conversation layout LiFT's critic trains on, ``{"video": "videos/x.mp4", "conversations":
  [{"from": "human", "value": "<video>\\n CAPTION Please identify the semantic consistency issues in this video,
  ..."}, {"from": "gpt", "value": "Bad. The waiter is not nodding."}]}``: one rating with its reason per question
  (semantic consistency, fidelity or motion issues). The LiFT-Critic's own output layout (``caption`` and one
  ``"semantic consistency"`` / ``"fidelity issues"`` / ``"motion issues"`` answer per key) is read as well.
- **VideoGen-RewardBench** (Liu et al. 2025, *VideoAlign*; ``videogen-rewardbench.csv`` beside ``videos/``): one
  row per pair with ``path_A``, ``path_B``, ``prompt`` and the experts' preference per dimension, ``TA`` (text
  alignment -> semantic), ``VQ`` (visual quality -> fidelity) and ``MQ`` (motion quality -> motion), each ``A``,
  ``B`` or ``same`` (-> Tie). Its ``Overall`` column has no dimension here and is not imported.
- **vipo judge outputs** (``vipo judge DIR --out judgments.jsonl``, e.g. with the exact world critic: labels with
  known truth): every parsed judgment, pointwise and pairwise (both orders, as judged), prompts from
  ``DIR/metadata.jsonl``.

Every imported record has one annotator (``votes: {verdict: 1}``).
"""

from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path

from ...errors import UserError
from ...io.text import numbered_lines
from ..base import DIMENSIONS
from .data import parse_record, write_records

LIFT_QUESTIONS = {"semantic consistency": "semantic", "fidelity issues": "fidelity", "motion issues": "motion"}
BENCH_COLUMNS = {"TA": "semantic", "VQ": "fidelity", "MQ": "motion"}
BENCH_VERDICTS = {"a": "A", "b": "B", "same": "Tie", "tie": "Tie"}
_LIFT_DIM = re.compile(r"please identify the (semantic consistency|fidelity|motion) issues", re.IGNORECASE)
_ANSWER = re.compile(r"^\s*(good|normal|bad)\b[\s.:,;!-]*(.*)$", re.IGNORECASE | re.DOTALL)


def _split(prompt: str, test_fraction: float) -> str:
    from .data import split_of

    return split_of(prompt, test_fraction)


def _rel(video: Path, out: Path, where: str) -> str:
    if not video.is_file():
        raise UserError(f"{where}: {video}: file not found")
    return Path(os.path.relpath(video.resolve(), out.parent.resolve())).as_posix()


def _record(
    rid: str,
    task: str,
    dim: str,
    prompt: str,
    videos: list[str],
    verdict: str,
    reasons: list[str],
    test_fraction: float,
) -> dict:
    return {
        "id": rid,
        "task": task,
        "dimension": dim,
        "prompt": prompt,
        "videos": videos,
        "question": "",
        "verdict": verdict,
        "votes": {verdict: 1},
        "reasons": [r for r in reasons if r],
        "annotators": 1,
        "split": _split(prompt, test_fraction),
    }


def _finish(rows: list[dict], out: Path, src: Path) -> list[dict]:
    if not rows:
        raise UserError(f"{src}: nothing to import")
    seen: dict[str, int] = {}
    for r in rows:  # a question asked twice of one video keeps both answers, under distinct ids
        n = seen.get(r["id"], 0)
        seen[r["id"]] = n + 1
        if n:
            r["id"] = f"{r['id']}~{n}"
    for n, r in enumerate(rows, 1):
        parse_record(r, f"{src} (record {n})", out.parent)
    write_records(out, rows)
    return rows


def _lift_answer(text, where: str) -> tuple[str, str]:
    m = _ANSWER.match(text) if isinstance(text, str) else None
    if m is None:
        raise UserError(f"{where}: expected an answer starting with Good, Normal or Bad, got {text!r}")
    return m.group(1).capitalize(), " ".join(m.group(2).split())


def lift(src: str | Path, out: str | Path, test_fraction: float = 0.1) -> list[dict]:
    """LiFT-HRA's ``LiFT-HRA-data.json`` (videos relative to its folder) -> records at ``out``."""
    src, out = Path(src), Path(out)
    try:
        items = json.loads(src.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UserError(f"{src}: not a readable JSON file ({e})") from None
    if not isinstance(items, list):
        raise UserError(f"{src}: expected a JSON list of items")
    rows = []
    for n, item in enumerate(items):
        where = f"{src}[{n}]"
        if not isinstance(item, dict) or not isinstance(item.get("video"), str):
            raise UserError(f"{where}: video: expected a video path")
        video = _rel(src.parent / item["video"], out, f"{where}: video")
        if "conversations" in item:
            turns = item["conversations"]
            if not isinstance(turns, list) or len(turns) < 2:
                raise UserError(f"{where}: conversations: expected human/gpt turns")
            for k in range(0, len(turns) - 1, 2):
                q, a = turns[k], turns[k + 1]
                if not (
                    isinstance(q, dict) and isinstance(a, dict) and q.get("from") == "human" and a.get("from") == "gpt"
                ):
                    raise UserError(f"{where}: conversations[{k}]: expected a human turn then a gpt turn")
                text = str(q.get("value", ""))
                m = _LIFT_DIM.search(text)
                if m is None:
                    raise UserError(
                        f"{where}: conversations[{k}]: not a LiFT question (semantic consistency, "
                        "fidelity or motion issues)"
                    )
                dim = {"semantic consistency": "semantic"}.get(m.group(1).lower(), m.group(1).lower())
                prompt = " ".join(text[: m.start()].replace("<video>", " ").replace("<image>", " ").split())
                verdict, reason = _lift_answer(a.get("value"), f"{where}: conversations[{k + 1}]")
                rows.append(
                    _record(
                        f"lift:{item['video']}#{dim}",
                        "pointwise",
                        dim,
                        prompt,
                        [video],
                        verdict,
                        [reason],
                        test_fraction,
                    )
                )
        else:
            prompt = item.get("caption")
            if not isinstance(prompt, str) or not prompt.strip():
                raise UserError(f"{where}: caption: expected the video's prompt")
            found = [k for k in LIFT_QUESTIONS if k in item]
            if not found:
                raise UserError(f"{where}: neither conversations nor a {' / '.join(LIFT_QUESTIONS)} answer")
            for key in found:
                verdict, reason = _lift_answer(item[key], f"{where}: {key}")
                dim = LIFT_QUESTIONS[key]
                rows.append(
                    _record(
                        f"lift:{item['video']}#{dim}",
                        "pointwise",
                        dim,
                        " ".join(prompt.split()),
                        [video],
                        verdict,
                        [reason],
                        test_fraction,
                    )
                )
    return _finish(rows, out, src)


def videogen_rewardbench(src: str | Path, out: str | Path, test_fraction: float = 0.1) -> list[dict]:
    """VideoGen-RewardBench's ``videogen-rewardbench.csv`` (videos relative to its folder) -> records at ``out``."""
    src, out = Path(src), Path(out)
    try:
        with open(src, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            table = list(reader)
            columns = reader.fieldnames or []
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise UserError(f"{src}: not a readable CSV file ({e})") from None
    missing = [c for c in ("path_A", "path_B", "prompt") if c not in columns]
    if missing or not any(c in columns for c in BENCH_COLUMNS):
        raise UserError(
            f"{src}: expected columns path_A, path_B, prompt and some of TA, VQ, MQ; missing "
            f"{', '.join(missing) or 'TA/VQ/MQ'}"
        )
    rows = []
    for n, row in enumerate(table, 2):  # line 1 is the header
        where = f"{src}:{n}"
        prompt = " ".join((row.get("prompt") or "").split())
        if not prompt:
            raise UserError(f"{where}: prompt: empty")
        a = _rel(src.parent / row["path_A"], out, f"{where}: path_A")
        b = _rel(src.parent / row["path_B"], out, f"{where}: path_B")
        for col, dim in BENCH_COLUMNS.items():
            value = (row.get(col) or "").strip()
            if not value:
                continue
            verdict = BENCH_VERDICTS.get(value.lower())
            if verdict is None:
                raise UserError(f"{where}: {col}: {value!r} is not A, B or same")
            rows.append(
                _record(
                    f"vgrb:{row['path_A']}|{row['path_B']}#{dim}",
                    "pairwise",
                    dim,
                    prompt,
                    [a, b],
                    verdict,
                    [],
                    test_fraction,
                )
            )
    return _finish(rows, out, src)


def judgments(src: str | Path, folder: str | Path, out: str | Path, test_fraction: float = 0.1) -> list[dict]:
    """The parsed judgments of ``vipo judge FOLDER --out SRC`` -> records at ``out``."""
    from ...data.folders import folder_samples

    src, folder, out = Path(src), Path(folder), Path(out)
    samples = {s["id"]: s for s in folder_samples(folder)}
    if not src.is_file():
        raise UserError(f"{src}: file not found")
    rows = []
    for n, line in numbered_lines(src):
        where = f"{src}:{n}"
        try:
            j = json.loads(line)
            kind = j["kind"]
        except (ValueError, KeyError, TypeError):
            raise UserError(f"{where}: not a judgment (vipo judge DIR --out writes them)") from None
        if "error" in j:
            continue
        names = [j["a"]] + ([j["b"]] if kind == "pairwise" else [])
        unknown = [x for x in names if x not in samples]
        if unknown:
            raise UserError(f"{where}: {unknown[0]}: not a video of {folder}/metadata.jsonl")
        answers = j["labels"] if kind == "pointwise" else j["verdicts"]
        videos = [_rel(folder / samples[x]["file_name"], out, where) for x in names]
        for d in DIMENSIONS:
            if d not in answers:
                raise UserError(f"{where}: {'labels' if kind == 'pointwise' else 'verdicts'}: no {d}")
            rows.append(
                _record(
                    f"judge:{j.get('key', n)}#{d}",
                    kind,
                    d,
                    samples[names[0]]["prompt"],
                    videos,
                    answers[d],
                    [str(j.get("reasons", {}).get(d, ""))],
                    test_fraction,
                )
            )
    return _finish(rows, out, src)


IMPORTERS = {"lift": lift, "videogen-rewardbench": videogen_rewardbench}
