"""Paths named by a user-supplied file, kept inside their folder.

A ``file_name`` in a metadata.jsonl, a video asked for by a browser, a path in a labels file: each is relative to a
folder the user chose, and must never reach outside it. :func:`confined` refuses an absolute path, any ``..`` part,
and (after resolving symlinks) anything whose real location is not inside the folder's real location, so a symlink
that points out is refused as well. A symlink that stays inside the folder is fine.
"""
from __future__ import annotations

import os
from pathlib import Path, PurePosixPath, PureWindowsPath

from ..errors import UserError


class OutsideFolder(UserError):
    """A path that would leave its folder (absolute, ``..``, or a symlink pointing out)."""


def confined(root: str | Path, rel: str, what: str = "path") -> Path:
    """The real location of ``root / rel`` when it stays inside ``root``; :class:`OutsideFolder` otherwise.

    ``what`` names the path's origin in the message (e.g. ``metadata.jsonl:3: file_name``). The file need not exist.
    """
    text = str(rel)
    if not text or "\x00" in text:
        raise OutsideFolder(f"{what}: {text!r}: not a file name")
    posix, win = PurePosixPath(text.replace("\\", "/")), PureWindowsPath(text)
    if posix.is_absolute() or win.is_absolute() or win.drive or text.startswith(("/", "\\", "~")):
        raise OutsideFolder(f"{what}: {text!r}: absolute paths are refused (name a file inside {root})")
    if ".." in posix.parts:
        raise OutsideFolder(f"{what}: {text!r}: '..' is refused (name a file inside {root})")
    base = Path(os.path.realpath(root))
    target = Path(os.path.realpath(base / posix))
    if target != base and base not in target.parents:
        raise OutsideFolder(f"{what}: {text!r}: a symlink leads outside {root}")
    return target


def is_inside(root: str | Path, rel: str) -> bool:
    try:
        confined(root, rel)
    except OutsideFolder:
        return False
    return True
