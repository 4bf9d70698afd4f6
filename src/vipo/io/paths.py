"""Paths named by a user-supplied file, kept inside their folder.

A ``file_name`` in a metadata.jsonl, a video asked for by a browser, a video named in a labels file, an adapter
listed in a checkpoint's ``policy.json``, a video in a real-video manifest: each is relative to a folder the user
chose, and must never reach outside it (a folder someone sent you must not make vipo read, and send a served critic,
a file elsewhere). :func:`confined` refuses an absolute path, any ``..`` part, and (after resolving symlinks) anything
whose real location is not inside the folder's real location, so a symlink that points out is refused as well. A
symlink that stays inside the folder is fine. :func:`inside` is the same check returning the path as named (for
messages and relative links), with ``allow_absolute`` for real-video manifests, whose documented format may name
absolute paths (VidGen-1M and OpenVid ship manifests apart from the videos; their relative paths are confined like
any other). :func:`check_relative` checks a name's text alone, for names that are matched, never opened (labels).
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath, PureWindowsPath

from ..errors import UserError


class OutsideFolder(UserError):
    """A path that would leave its folder (absolute, ``..``, or a symlink pointing out)."""


def _text(rel: str, what: str, root: str | Path | None = None) -> PurePosixPath:
    """``rel`` as a relative POSIX path without ``..``: refused naming ``what`` otherwise (its text alone)."""
    text = str(rel)
    where = f" (name a file inside {root})" if root is not None else " (name a file relative to the file's folder)"
    if not text or "\x00" in text:
        raise OutsideFolder(f"{what}: {text!r}: not a file name")
    posix, win = PurePosixPath(text.replace("\\", "/")), PureWindowsPath(text)
    if posix.is_absolute() or win.is_absolute() or win.drive or text.startswith(("/", "\\", "~")):
        raise OutsideFolder(f"{what}: {text!r}: absolute paths are refused{where}")
    if ".." in posix.parts:
        raise OutsideFolder(f"{what}: {text!r}: '..' is refused{where}")
    return posix


def check_relative(rel: str, what: str = "path") -> str:
    """``rel`` unchanged when its text is a relative path without ``..``; :class:`OutsideFolder` otherwise."""
    _text(rel, what)
    return str(rel)


def confined(root: str | Path, rel: str, what: str = "path") -> Path:
    """The real location of ``root / rel`` when it stays inside ``root``; :class:`OutsideFolder` otherwise.

    ``what`` names the path's origin in the message (e.g. ``metadata.jsonl:3: file_name``). The file need not exist.
    """
    posix = _text(rel, what, root)
    base = Path(os.path.realpath(root))
    target = Path(os.path.realpath(base / posix))
    if target != base and base not in target.parents:
        raise OutsideFolder(f"{what}: {str(rel)!r}: a symlink leads outside {root}")
    return target


def inside(root: str | Path, rel: str, what: str = "path", allow_absolute: bool = False) -> Path:
    """``root / rel`` as named, refused as :func:`confined` refuses it; ``allow_absolute``: an absolute ``rel`` is
    taken as it is (real-video manifests only)."""
    if allow_absolute and Path(str(rel)).is_absolute():
        return Path(str(rel))
    confined(root, rel, what)
    return Path(root) / str(rel)


def is_inside(root: str | Path, rel: str) -> bool:
    try:
        confined(root, rel)
    except OutsideFolder:
        return False
    return True
