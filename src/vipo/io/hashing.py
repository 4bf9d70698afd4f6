"""Content hashes (sha256, hex): of a string or bytes, of a file read in 1 MiB blocks, and a file fed into a running
hash (a checkpoint folder's hash covers its files' names and bytes)."""

from __future__ import annotations

import hashlib
from pathlib import Path

BLOCK = 1 << 20


def digest(data: bytes | str) -> str:
    return hashlib.sha256(data.encode("utf-8") if isinstance(data, str) else data).hexdigest()


def feed_file(h, path: str | Path) -> None:
    """Update the hash ``h`` with the bytes of ``path``, read in blocks (a video or a checkpoint need not fit)."""
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(BLOCK), b""):
            h.update(block)


def file_digest(path: str | Path) -> str:
    h = hashlib.sha256()
    feed_file(h, path)
    return h.hexdigest()
