"""What people label: the items of a folder of videos with ``metadata.jsonl``.

A folder is what ``vipo generate`` and a round's ``samples/`` write (and what ``vipo judge DIR`` reads): one JSON
object per line with ``file_name`` (relative to the folder) and ``prompt``. Every ``file_name`` must stay inside the
folder (:func:`vipo.io.paths.confined`: no absolute path, no ``..``, no symlink out).

- a **pointwise** item is one video: ``pointwise:<file_name>``;
- a **pairwise** item is two videos of the same prompt, in the folder's order (A = the one listed first):
  ``pairwise:<a>|<b>``. By default every pair of a prompt's videos is an item; ``pairs_per_prompt`` keeps at most
  that many per prompt, drawn at random with ``seed`` (the same seed gives the same pairs).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..io.paths import confined
from ..io.text import numbered_lines

TASK_CHOICES = ("pairwise", "pointwise", "both")


@dataclass(frozen=True)
class Item:
    """One question set: ``videos`` are paths relative to the folder, A first; ``prompt`` is shown as text."""

    id: str
    task: str
    prompt: str
    videos: tuple[str, ...]


def item_id(task: str, videos: tuple[str, ...] | list[str]) -> str:
    return f"{task}:{'|'.join(videos)}"


def read_folder(root: str | Path) -> list[tuple[str, str]]:
    """``[(file_name, prompt)]`` of ``root/metadata.jsonl``, each file checked to be inside ``root`` and present."""
    root = Path(root)
    meta = root / "metadata.jsonl"
    if not meta.is_file():
        raise UserError(f"{root}: no metadata.jsonl (one JSON object per line with file_name and prompt)")
    rows, seen = [], set()
    for n, line in numbered_lines(meta):
        try:
            row = json.loads(line)
            name, prompt = row["file_name"], row["prompt"]
        except (ValueError, KeyError, TypeError):
            raise UserError(f"{meta}:{n}: expected a JSON object with file_name and prompt") from None
        if not isinstance(name, str) or not isinstance(prompt, str):
            raise UserError(f"{meta}:{n}: file_name and prompt must be strings")
        path = confined(root, name, f"{meta}:{n}: file_name")
        if not path.is_file():
            raise UserError(f"{meta}:{n}: file_name: {name}: file not found")
        name = Path(name).as_posix()
        if name in seen:
            raise UserError(f"{meta}:{n}: file_name: {name}: listed twice")
        seen.add(name)
        rows.append((name, prompt))
    if not rows:
        raise UserError(f"{meta}: no videos listed")
    return rows


def build_items(
    rows: list[tuple[str, str]], task: str = "both", pairs_per_prompt: int | None = None, seed: int = 0
) -> list[Item]:
    """The items of a folder's rows: pairs first (prompt by prompt, in folder order), then single videos."""
    if task not in TASK_CHOICES:
        raise UserError(f"annotate --task: {task!r} is not one of {', '.join(TASK_CHOICES)}")
    if pairs_per_prompt is not None and pairs_per_prompt < 0:
        raise UserError(f"annotate --pairs: {pairs_per_prompt} must be >= 0")
    items: list[Item] = []
    if task in ("pairwise", "both"):
        groups: dict[str, list[str]] = {}
        for name, prompt in rows:
            groups.setdefault(prompt, []).append(name)
        for prompt, names in groups.items():
            pairs = list(itertools.combinations(names, 2))
            if pairs_per_prompt is not None and len(pairs) > pairs_per_prompt:
                digest = hashlib.sha256(f"{seed}\x00{prompt}".encode()).digest()
                keep = sorted(random.Random(digest).sample(range(len(pairs)), pairs_per_prompt))
                pairs = [pairs[i] for i in keep]
            items += [Item(item_id("pairwise", p), "pairwise", prompt, p) for p in pairs]
    if task in ("pointwise", "both"):
        items += [Item(item_id("pointwise", (name,)), "pointwise", prompt, (name,)) for name, prompt in rows]
    return items


def folder_items(
    root: str | Path, task: str = "both", pairs_per_prompt: int | None = None, seed: int = 0
) -> list[Item]:
    return build_items(read_folder(root), task, pairs_per_prompt, seed)
