"""One writer per output folder: an OS advisory lock on ``<folder>/.vipo.lock`` with the holder's pid inside.

Every verb that writes a run folder or a stage's output folder holds it while it writes (``vipo run`` and each stage
verb, standalone ``generate``, ``judge DIR --out``, ``eval DIR``, ``world pretrain``, ``ablate``); a second writer
gets one line naming the holder's pid and exit 2. ``flock`` locks belong to the open file, so the OS releases them
on any exit of the holder, SIGKILL included: a stale lock file left behind locks nothing. Readers (``vipo report``)
take no lock. The lock file itself stays (removing it would race a writer that has just opened it).
"""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..errors import UserError

LOCK_NAME = ".vipo.lock"
_held: dict[Path, int] = {}  # lock files this process holds -> depth (a verb may call another on the same folder)


def lock_path_for_file(path: str | Path) -> Path:
    """The lock of a single output file (``vipo judge DIR --out F``): ``.F.lock`` beside it."""
    path = Path(path)
    return path.with_name(f".{path.name}.lock")


def ensure_folder(folder: str | Path, what: str = "--out") -> Path:
    """Create ``folder`` (and parents); one line when the path exists and is not a folder."""
    folder = Path(folder)
    for p in (folder, *folder.parents):
        if p.exists() and not p.is_dir():
            raise UserError(f"{what} {folder}: {p} exists and is not a folder")
        if p.is_dir():
            break
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@contextmanager
def hold(lock_file: str | Path, what: str) -> Iterator[None]:
    """Hold the lock ``lock_file`` (created if missing) or refuse: ``what`` names the folder or file it guards."""
    lock_file = Path(lock_file).absolute()
    if lock_file in _held:
        _held[lock_file] += 1
        try:
            yield
        finally:
            _held[lock_file] -= 1
        return
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
            raise UserError(
                f"{what}: in use by another vipo process (pid {holder}); wait for it to finish or stop "
                f"it (its lock, {lock_file.name}, is released when it exits)"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        _held[lock_file] = 1
        try:
            yield
        finally:
            del _held[lock_file]
    finally:
        os.close(fd)  # closing the only descriptor releases the lock


@contextmanager
def folder_lock(folder: str | Path, what: str = "--out") -> Iterator[Path]:
    """Create ``folder`` if needed and hold its lock while the block writes it."""
    folder = ensure_folder(folder, what)
    with hold(folder / LOCK_NAME, str(folder)):
        yield folder
