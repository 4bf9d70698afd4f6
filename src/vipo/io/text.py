"""Reading the text files users hand vipo (prompt lists, metadata.jsonl, labels): UTF-8 or one line saying where not."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterator

from ..errors import UserError


def decode_utf8(data: bytes, name: str) -> str:
    """``data`` as text (a leading BOM dropped); bytes that are not UTF-8 are refused naming the file and line."""
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise UserError(f"{name}:{line}: not UTF-8 text (byte 0x{data[e.start]:02x}); save the file as UTF-8") from None


def read_utf8(path: str | Path) -> str:
    path = Path(path)
    return decode_utf8(path.read_bytes(), str(path))


def numbered_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """(line number, line) for each non-blank line of a UTF-8 text file (:func:`read_utf8`): the walk every JSONL
    reader shares; what a line must hold, and the one-line error when it does not, stay with the reader."""
    for n, line in enumerate(read_utf8(path).splitlines(), 1):
        if line.strip():
            yield n, line


def jsonl_objects(path: str | Path, where: Callable[[int], str] | None = None) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line of a JSONL file; anything else is refused naming its line
    (``where(n)``, by default ``PATH:N``)."""
    where = where or (lambda n: f"{path}:{n}")
    for n, line in numbered_lines(path):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{where(n)}: invalid JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise UserError(f"{where(n)}: expected a JSON object")
        yield n, row
