"""What produced an output, recorded beside it, so that a re-run with other inputs never passes off old results.

Each verb that writes an output records its resolved options and the fingerprints of its inputs (model and adapter
hashes, prompts, seeds, the critic and its options): a run folder's ``config.yaml``, a standalone ``generate``
folder's ``provenance.json``, ``world pretrain``'s ``config.yaml``, ``vipo judge``'s and ``vipo eval DIR``'s
``provenance.json``. Run again, :func:`check` compares the new record with the old one: equal, nothing happens;
different, it refuses with one line naming every changed field, unless ``force`` (then the caller continues or
starts over, as its contract says, and the record is rewritten). A verb whose contract is a cache (``vipo judge
DIR --out F``) records only what must not change and recomputes the rest.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import yaml

from ..errors import UserError
from . import atomic

log = logging.getLogger(__name__)
SHOWN = 60  # characters of a value shown in a difference


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _short(v) -> str:
    text = repr(v)
    return text if len(text) <= SHOWN else text[:SHOWN] + "..."


def differences(old, new, where: str = "") -> list[str]:
    """One "field: old then, new now" per changed leaf (long values cut; lists: their first differing item)."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [
            d
            for k in sorted(set(old) | set(new))
            for d in differences(old.get(k), new.get(k), f"{where}.{k}" if where else k)
        ]
    if old == new:
        return []
    if isinstance(old, list) and isinstance(new, list) and (len(repr(old)) > SHOWN or len(repr(new)) > SHOWN):
        i = next((i for i, (a, b) in enumerate(zip(old, new)) if a != b), min(len(old), len(new)))
        first = (
            f"[{i}] {_short(old[i]) if i < len(old) else '(none)'} then, "
            f"{_short(new[i]) if i < len(new) else '(none)'} now"
        )
        return [f"{where}: {len(old)} items then, {len(new)} now; first difference {first}"]
    return [f"{where}: {_short(old)} then, {_short(new)} now"]


def read(path: str | Path) -> dict | None:
    """The record at ``path`` (YAML for ``.yaml``, else JSON), or None when there is none."""
    path = Path(path)
    if not path.is_file():
        return None
    text = path.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text) if path.suffix in (".yaml", ".yml") else json.loads(text)
    except (yaml.YAMLError, json.JSONDecodeError):
        raise UserError(
            f"{path}: unreadable record of what produced this output; restore it, or pass --force to start over"
        ) from None
    return data if isinstance(data, dict) else {}


def write(path: str | Path, record: dict) -> None:
    path = Path(path)
    if path.suffix in (".yaml", ".yml"):
        atomic.write_text(path, yaml.safe_dump(record, sort_keys=False))
    else:
        atomic.write_json(path, record)


def check(
    path: str | Path,
    record: dict,
    force: bool,
    refusal: str,
    forced: str = "--force: {changes}",
    defaults: dict | None = None,
    start_over=None,
    upgrade=None,
) -> list[str]:
    """Compare ``record`` with the one at ``path`` and write it where there is none. Changed fields: a
    :class:`UserError` (``refusal`` with ``{changes}`` filled in) unless ``force``, which logs ``forced``, calls
    ``start_over()`` (when given: it removes the old outputs), then rewrites the record; returns the changes.
    ``defaults``: fields an older record lacks count as these; ``upgrade``: a function that brings a record's values
    to today's spelling (a renamed option value), applied to both before the comparison."""
    path = Path(path)
    try:
        old = read(path)
    except UserError:
        if not force:
            raise
        old = {"(unreadable record)": True}  # --force: start over from whatever is there
    if upgrade is not None:  # both sides: the new record may spell a value the old way too (a raw mapping)
        record = upgrade(record)
        old = upgrade(old) if old is not None else None
    diffs = [] if old is None else differences(_merge(defaults, old) if defaults else old, record)
    if old is not None and not diffs:
        return []
    if diffs:
        if not force:
            raise UserError(f"{path}: " + refusal.format(changes="; ".join(diffs)))
        log.warning(forced.format(changes="; ".join(diffs)))
        if start_over is not None:
            start_over()  # before the new record: a kill in between leaves the old record, never a mixed folder
    write(path, record)
    return diffs
