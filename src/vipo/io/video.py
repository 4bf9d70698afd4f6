"""mp4 (H.264, yuv420p) writing and reading with PyAV.

Small clips are upscaled by an integer factor with nearest-neighbour before encoding so that chroma subsampling and
the codec's 16-pixel macroblocks do not smear a 32-pixel frame; readers (ours, or anyone's) can block-average back.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from .. import faults
from . import atomic


def upscale(frames: np.ndarray, factor: int) -> np.ndarray:
    if factor == 1:
        return frames
    return frames.repeat(factor, axis=1).repeat(factor, axis=2)


def write_mp4(path: str | Path, frames: np.ndarray, fps: int = 8, upscale_to: int = 128, crf: int = 12) -> None:
    """Write uint8 frames [F, H, W, 3] atomically; frames smaller than ``upscale_to`` are upscaled by an integer."""
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected uint8 frames [F, H, W, 3], got {frames.dtype} {frames.shape}")
    factor = max(1, upscale_to // max(frames.shape[1], frames.shape[2]))
    frames = upscale(frames, factor)
    h, w = frames.shape[1], frames.shape[2]
    if h % 2 or w % 2:
        frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)))
    with atomic.atomic_path(path) as tmp:
        with av.open(str(tmp), mode="w", format="mp4") as box:
            stream = box.add_stream("libx264", rate=Fraction(fps))
            stream.width, stream.height = frames.shape[2], frames.shape[1]
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": str(crf), "preset": "veryfast"}
            for f in frames:
                for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                    box.mux(packet)
            for packet in stream.encode():
                box.mux(packet)
        faults.point("write.video")


def read_mp4(path: str | Path, max_frames: int | None = None) -> np.ndarray:
    """Decode a video file to uint8 RGB frames [F, H, W, 3]."""
    out = []
    with av.open(str(path)) as box:
        for frame in box.decode(video=0):
            out.append(frame.to_ndarray(format="rgb24"))
            if max_frames and len(out) >= max_frames:
                break
    if not out:
        raise ValueError(f"{path}: no video frames")
    return np.stack(out)
