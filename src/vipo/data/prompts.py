"""Prompt files: UTF-8 text, one prompt per line; blank lines and lines starting with ``#`` are skipped.

:func:`parse_prompts` is pure (bytes in, prompts out) and names the file and line of whatever it refuses: bytes that
are not UTF-8, control characters, a file with no prompt. A line longer than ``MAX_CHARS`` is cut there with a
warning; :func:`warn_long` warns about prompts longer than the model's text encoder reads (it truncates them).
"""
from __future__ import annotations

import logging
import unicodedata
from pathlib import Path

from ..errors import UserError

log = logging.getLogger(__name__)
MAX_CHARS = 2000


def parse_prompts(data: bytes, name: str = "<prompts>") -> list[tuple[int, str]]:
    """(line number, prompt) for every prompt in ``data``."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise UserError(f"{name}:{line}: not UTF-8 text (byte 0x{data[e.start]:02x}); save the file as UTF-8") from None
    out = []
    for n, raw in enumerate(text.removeprefix("\ufeff").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        bad = next((c for c in line if unicodedata.category(c) in ("Cc", "Cs") and c != "\t"), None)
        if bad is not None:
            raise UserError(f"{name}:{n}: control character {bad!r} in a prompt")
        if len(line) > MAX_CHARS:
            log.warning("%s:%d: prompt of %d characters cut to %d", name, n, len(line), MAX_CHARS)
            line = line[:MAX_CHARS].rstrip()
        out.append((n, line))
    if not out:
        raise UserError(f"{name}: no prompts (one per line; lines starting with # are comments)")
    return out


def read_prompts(path: str | Path, what: str = "prompts") -> list[tuple[int, str]]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} {path}: file not found")
    return parse_prompts(path.read_bytes(), str(path))


def warn_long(model, prompts: list[str]) -> None:
    """Warn about prompts longer than the text encoder reads; the encoder keeps their first tokens."""
    tok = getattr(model, "tokenizer", None) or getattr(getattr(model, "pipe", None), "tokenizer", None)
    limit = getattr(tok, "model_max_length", None)
    if tok is None or not isinstance(limit, int) or limit > 100_000:
        return
    for p in dict.fromkeys(prompts):
        n = len(tok(p).input_ids)
        if n > limit:
            log.warning("prompt %r has %d tokens; the text encoder reads the first %d (the rest is cut)",
                        p[:60] + ("..." if len(p) > 60 else ""), n, limit)
