"""Real videos for the NLL regularizer (IPO's VidGen-1M term).

For the embedded world they are renders of in-distribution prompts, drawn from a seeded stream, so a resumed run
draws the same ones, captioned the way the committed base's last pretraining phase captioned its clips: each attribute
word wrong with probability ``caption_noise`` (``train.real_caption_noise``, 0.3). IPO's real videos (VidGen-1M) are
web data with web captions, the distribution the base was pretrained on; correct captions would make the real-data
term supervised fine-tuning on the very answer the evaluation checks. For the real families they come from a dataset on disk — a folder of mp4 files with
same-stem ``.txt`` captions, or a JSONL/CSV manifest in the style of VidGen-1M (``vid``, ``caption``) or OpenVid
(``video``, ``caption``, ...; paths relative to the manifest and inside its folder, or absolute) — and are
VAE-encoded once into a :class:`LatentCache` keyed by the video's content hash and the model, then reused by every
round and run.
"""

from __future__ import annotations

import csv
import logging
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UserError
from ..io.hashing import file_digest
from ..io.paths import inside
from ..io.text import jsonl_objects, read_utf8
from ..io.video import read_mp4
from ..world import grammar, render
from .cache import LatentCache

log = logging.getLogger(__name__)

VIDEO_COLUMNS = ("video", "video_path", "path", "file_name", "vid")
CAPTION_COLUMNS = ("caption", "text", "prompt")
VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".mkv", ".avi")


class WorldRealVideos:
    encoded = False  #: the trainer VAE-encodes the frames :meth:`draw` returns (see EncodedRealVideos)

    def __init__(self, frames: int, side: int, caption_noise: float = 0.0):
        self.frames, self.side, self.caption_noise = frames, side, caption_noise

    def draw(self, n: int, seed: int) -> tuple[list[str], np.ndarray]:
        rng = random.Random(seed)
        attrs = [rng.choice(grammar.INDIST) for _ in range(n)]
        clips = np.stack([render.random_clip(a, rng, self.side, self.frames) for a in attrs])
        # (mislabel draws nothing at caption_noise 0, so that stream is the old one)
        return [grammar.random_prompt(grammar.mislabel(a, rng, self.caption_noise), rng) for a in attrs], clips


@dataclass(frozen=True)
class RealClip:
    video: Path
    caption: str
    where: str  #: what an error message names: "manifest.csv: line 7" or the caption file


def read_dataset(spec: str | Path) -> list[RealClip]:
    """The clips of a folder (mp4 + same-stem .txt) or a .jsonl/.csv manifest; every file must exist."""
    path = Path(spec)
    if path.is_dir():
        clips = []
        for video in sorted(p for p in path.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES):
            text = video.with_suffix(".txt")
            if not text.is_file():
                raise UserError(f"{video}: no caption file {text.name} beside it")
            clips.append(RealClip(video, text.read_text(encoding="utf-8").strip(), str(text)))
    elif path.is_file() and path.suffix.lower() in (".jsonl", ".csv"):
        clips = [_clip(path, line, row) for line, row in _rows(path)]
    elif path.exists():
        raise UserError(f"{path}: real videos must be a folder of videos or a .jsonl/.csv manifest")
    else:
        raise UserError(f"{path}: real videos not found")
    if not clips:
        raise UserError(f"{path}: no videos")
    return clips


def _rows(path: Path):
    """(line number, row) of a .csv or .jsonl manifest; errors name the line as ``PATH: line N``."""
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(read_utf8(path).splitlines())
        for row in reader:
            yield reader.line_num, row
        return
    yield from jsonl_objects(path, where=lambda n: f"{path}: line {n}")


def _column(path: Path, line: int, row: dict, names: tuple[str, ...], what: str) -> str:
    for n in names:
        if row.get(n) not in (None, ""):
            return str(row[n])
    raise UserError(f"{path}: line {line}: no {what} column (one of {', '.join(names)})")


def _clip(path: Path, line: int, row: dict) -> RealClip:
    name = _column(path, line, row, VIDEO_COLUMNS, "video")
    caption = _column(path, line, row, CAPTION_COLUMNS, "caption")
    # relative paths stay inside the manifest's folder; absolute ones are the documented way to point elsewhere
    rel = name if Path(name).suffix else name + ".mp4"  # VidGen-1M names videos by id
    video = inside(path.parent, rel, f"{path}: line {line}: video", allow_absolute=True)
    if not video.is_file():
        raise UserError(f"{path}: line {line}: video {name!r}: file not found ({video})")
    return RealClip(video, caption.strip(), f"{path}: line {line}")


def load_clip(clip: RealClip, frames: int, height: int, width: int) -> np.ndarray:
    """The clip's first ``frames`` frames, centre-cropped to the model's aspect and resized: uint8 [F, H, W, 3]."""
    try:
        video = read_mp4(clip.video, max_frames=frames)
    except Exception as e:  # noqa: BLE001  (PyAV raises many kinds; one line names the file either way)
        raise UserError(f"{clip.where}: {clip.video}: unreadable video ({e})") from None
    if len(video) < frames:
        raise UserError(f"{clip.where}: {clip.video}: {len(video)} frames, the model needs {frames}")
    x = torch.from_numpy(video).permute(0, 3, 1, 2).float()  # [F, 3, h, w]
    h, w = x.shape[-2:]
    scale = max(height / h, width / w)
    ch, cw = round(height / scale), round(width / scale)
    top, left = (h - ch) // 2, (w - cw) // 2
    x = x[..., top : top + ch, left : left + cw]
    if (ch, cw) != (height, width):
        x = F.interpolate(x, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


class EncodedRealVideos:
    """A real-video dataset drawn from a seeded stream and trained from cached VAE latents.

    ``prepare`` encodes, before training starts, every clip that the round's draws will need and the cache lacks,
    so the VAE can leave the accelerator for the whole of training.
    """

    encoded = True  #: the trainer takes latents and captions from :meth:`draw_latents`, not pixels from ``draw``

    def __init__(self, clips: list[RealClip], cache: LatentCache):
        self.clips, self.cache = clips, cache
        self._hash: dict[int, str] = {}

    def indices(self, n: int, seed: int) -> list[int]:
        rng = random.Random(seed)
        if n <= len(self.clips):
            return rng.sample(range(len(self.clips)), n)
        return [rng.randrange(len(self.clips)) for _ in range(n)]

    def captions(self, indices: list[int]) -> list[str]:
        return [self.clips[i].caption for i in indices]

    def _key(self, i: int) -> str:
        if i not in self._hash:
            self._hash[i] = file_digest(self.clips[i].video)
        return self._hash[i]

    def prepare(self, model, indices: list[int]) -> int:
        """Encode the clips among ``indices`` that are not cached yet (one at a time: real clips are large)."""
        todo = sorted({i for i in indices if not self.cache.has(self._key(i))})
        if todo:
            log.info("encoding %d real videos into %s", len(todo), self.cache.folder)
        for i in todo:
            frames = load_clip(self.clips[i], model.frames, model.height, model.width)
            with torch.no_grad():
                self.cache.put(self._key(i), model.encode_video(frames[None])[0])
        return len(todo)

    def draw_latents(self, n: int, seed: int) -> tuple[list[str], torch.Tensor]:
        idx = self.indices(n, seed)
        return self.captions(idx), torch.stack([self.cache.get(self._key(i)) for i in idx])
