"""A folder of videos as the verbs read it: ``metadata.jsonl`` rows with ``file_name`` and ``prompt`` (the layout of
Hugging Face video datasets and of ``vipo generate``), and each video decoded or the reason it is unusable."""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from ..io.paths import inside
from ..io.text import jsonl_objects
from ..io.video import read_mp4


def read_checked(path: Path, frames: int | None = None):
    """Decoded frames, or the reason the video is unusable (unreadable, no frames, wrong frame count)."""
    try:
        out = read_mp4(path)
    except Exception as e:  # noqa: BLE001  (PyAV raises many types for a corrupt or truncated file)
        return f"unreadable video ({type(e).__name__}: {e})"
    if frames is not None and len(out) != frames:
        return f"{len(out)} frames, {frames} expected"
    return out


def sample_frames(root: Path, sample: dict):
    """The decoded frames of one of :func:`folder_samples`' samples; an unusable video is a one-line error naming
    its file."""
    frames = read_checked(Path(root) / sample["file_name"])
    if isinstance(frames, str):
        raise UserError(f"{Path(root) / sample['file_name']}: {frames}")
    return frames


def folder_samples(root: Path) -> list[dict]:
    """Samples of any folder of videos: ``metadata.jsonl`` rows with ``file_name`` and ``prompt`` (the layout of
    Hugging Face video datasets and of ``vipo generate``); samples of one prompt form one group for pairs. Each
    ``file_name`` must stay inside the folder (:func:`vipo.io.paths.inside`); each sample keeps its ``line``."""
    meta = Path(root) / "metadata.jsonl"
    if not meta.is_file():
        raise UserError(f"{root}: no metadata.jsonl (one JSON object per line with file_name and prompt)")
    samples, prompt_ids = [], {}
    for n, row in jsonl_objects(meta):
        try:
            name, prompt = str(row["file_name"]), str(row["prompt"])
        except KeyError:
            raise UserError(f"{meta}:{n}: expected a JSON object with file_name and prompt") from None
        if not inside(root, name, f"{meta}:{n}: file_name").is_file():
            raise UserError(f"{meta}:{n}: {name}: file not found")
        pid = prompt_ids.setdefault(prompt, len(prompt_ids))
        samples.append({"id": name, "prompt_id": pid, "prompt": prompt, "file_name": name, "line": n})
    if not samples:
        raise UserError(f"{meta}: no videos listed")
    return samples
