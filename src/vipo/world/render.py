"""Ground-truth clips of the embedded world: one filled shape on black, moving at constant speed.

These are the "real videos" of IPO's real-data NLL term and the pretraining data of the base model. Rendering is
anti-aliased by 4x supersampling; geometry is in units of the frame side so any resolution works.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from .grammar import COLORS, DIRECTION_VECTORS, Attributes

SIZE_RANGE = (0.36, 0.44)  # shape diameter/side as a fraction of the frame side (spec: 35-45%)
TRAVEL_RANGE = (0.32, 0.53)  # total travel over the clip as a fraction of the frame side (spec: 30-55%)
SUPERSAMPLE = 4


@dataclass(frozen=True)
class ClipGeometry:
    """Where the shape is: bbox centre in frame-side units at the first frame, size, and total travel."""

    cx: float
    cy: float
    size: float
    travel: float


def shape_mask(
    shape: str, cx: float, cy: float, size: float, height: int, width: int, size_y: float | None = None
) -> np.ndarray:
    """Boolean mask of a shape whose bounding box is centred at (cx, cy), ``size`` wide and ``size_y`` (default:
    ``size``) tall, all in pixels. Unequal sides give the stretched shape, which the judge uses to fit masks."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64) + 0.5
    hx = size / 2.0
    hy = (size if size_y is None else size_y) / 2.0
    if shape == "circle":
        return ((xs - cx) / hx) ** 2 + ((ys - cy) / hy) ** 2 <= 1.0
    if shape == "square":
        return (np.abs(xs - cx) <= hx) & (np.abs(ys - cy) <= hy)
    if shape == "triangle":  # isosceles, apex up: width grows linearly from 0 at the top to the full width at the base
        frac = (ys - (cy - hy)) / (2 * hy)
        return (frac >= 0) & (frac <= 1) & (np.abs(xs - cx) <= frac * hx)
    raise ValueError(f"unknown shape {shape!r}")


def random_geometry(direction: str, rng: random.Random) -> ClipGeometry:
    size = rng.uniform(*SIZE_RANGE)
    travel = rng.uniform(*TRAVEL_RANGE)
    dx, dy = DIRECTION_VECTORS[direction]
    # Along the motion axis the bbox sweeps [start, start + travel + size]; keep that inside [0, 1].
    slack = 1.0 - size - travel
    along = size / 2 + rng.uniform(0, slack)
    across = rng.uniform(size / 2, 1 - size / 2)
    if dx:
        cx = along if dx > 0 else 1 - along
        cy = across
    else:
        cy = along if dy > 0 else 1 - along
        cx = across
    return ClipGeometry(cx, cy, size, travel)


def render(attrs: Attributes, geom: ClipGeometry, side: int = 32, frames: int = 9) -> np.ndarray:
    """uint8 clip of shape [frames, side, side, 3]."""
    ss = side * SUPERSAMPLE
    dx, dy = DIRECTION_VECTORS[attrs.direction]
    color = np.array(COLORS[attrs.color], dtype=np.float64)
    out = np.zeros((frames, side, side, 3), dtype=np.uint8)
    for i in range(frames):
        t = i / (frames - 1)
        cx = (geom.cx + dx * geom.travel * t) * ss
        cy = (geom.cy + dy * geom.travel * t) * ss
        mask = shape_mask(attrs.shape, cx, cy, geom.size * ss, ss, ss).astype(np.float64)
        cover = mask.reshape(side, SUPERSAMPLE, side, SUPERSAMPLE).mean(axis=(1, 3))
        out[i] = np.round(cover[..., None] * color).astype(np.uint8)
    return out


def random_clip(attrs: Attributes, rng: random.Random, side: int = 32, frames: int = 9) -> np.ndarray:
    return render(attrs, random_geometry(attrs.direction, rng), side, frames)
