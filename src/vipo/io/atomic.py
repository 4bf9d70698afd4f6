"""Durable writes: every persistent file is written under a temporary name, fsynced, then renamed into place.

A reader therefore sees either the old file or the whole new one, never a torn one. Folders (checkpoints) count only
once their completion marker exists; the marker is written last. The temporary names are created private (mkstemp:
0600, mkdtemp: 0700); what is renamed into place gets the mode a plain ``open``/``mkdir`` would give it under the
process umask, so colleagues can read a shared run as they can read anything else the user writes.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

TMP_PREFIX = ".tmp-"
DONE_MARKER = "COMPLETE"


def _read_umask() -> int:
    mask = os.umask(0o022)  # the only way to read it is to set it: put it straight back
    os.umask(mask)
    return mask


UMASK = _read_umask()  # read once, at import (single-threaded), never changed by vipo
FILE_MODE = 0o666 & ~UMASK
DIR_MODE = 0o777 & ~UMASK


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``, on error removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX + path.name + ".", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp_path, FILE_MODE)
        os.replace(tmp_path, path)
        _fsync_dir(path.parent)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: str | Path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


def clean_temp(folder: str | Path) -> int:
    """Remove stray temporary files/folders left by a killed writer; returns how many."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    n = 0
    for p in folder.rglob(TMP_PREFIX + "*"):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        n += 1
    return n


def is_complete(folder: str | Path) -> bool:
    return (Path(folder) / DONE_MARKER).is_file()


def recover(path: str | Path) -> None:
    """Undo a replacement :func:`atomic_dir` was killed in the middle of: the old complete folder, moved aside and
    not yet deleted, goes back in place (call before looking for ``path``)."""
    path = Path(path)
    old = path.with_name(TMP_PREFIX + path.name + ".old")
    if not path.exists() and is_complete(old):
        os.replace(old, path)


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Build a folder under a temporary name; on success mark it complete and rename it into place.

    An existing complete folder at ``path`` is replaced only after the new one is complete; a kill between the two
    renames leaves it under ``.tmp-NAME.old``, where :func:`recover` finds it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX + path.name + ".", dir=path.parent))
    try:
        yield tmp
        for f in tmp.rglob("*"):
            if f.is_file():
                with open(f, "rb+") as fh:
                    os.fsync(fh.fileno())
        write_text(tmp / DONE_MARKER, "ok\n")
        os.chmod(tmp, DIR_MODE)
        if path.exists():
            old = path.with_name(TMP_PREFIX + path.name + ".old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
