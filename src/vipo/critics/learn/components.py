"""A connected-component object tracker: how the learned world critic (net version 4) reads a clip.

Per frame, the foreground is the pixels whose brightest channel reaches a threshold (a level of 0-255 that
training chooses, :func:`vipo.critics.learn.componentnet.choose_threshold`); the object is its largest 8-connected
component (the main component) and everything else lit is clutter. Measured per frame and summarized over the clip:

- where the object is: its centroid path's least-squares straight line (travel over the clip, x and y, in frame
  sides) and the RMS distance of the path from that line (how unsteady the motion is);
- how big and how steady: mean area, its coefficient of variation, bounding-box side and |log aspect|, the share of
  the box the object fills, its normalized central moments of orders 2 and 3 (Hu 1962);
- its colour: the mean RGB of its interior (the component eroded by one pixel) and the frame-to-frame spread;
- clutter: foreground outside the main component per unit of its area, and the faintly lit share of the background
  away from it (beyond a two-pixel dilation) at an eighth, a quarter and a half of the foreground level;
- its silhouette per frame: the main component sampled on a ``GRID`` x ``GRID`` lattice spanning its bounding box
  (2x2 samples per cell; zeros in a frame without an object), which the critic compares with shape templates it
  learns.

Nothing here is fitted or knows the world's palette, shapes, thresholds or scores; it is the textbook first pass of
a tracker (threshold, label, take the largest blob, measure it), which is also how the world's exact judge
(:mod:`vipo.world.exact_judge`) finds its shape: the learned critic measures much as the judge measures, and learns
from the labels what the judge makes of the measurements. Clips are read at 64 px (the learned critic's input side).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

GRID = 32
_SUPER = 2
_STRUCT8 = np.ones((3, 3), dtype=bool)
#: the normalized central moments measured, (p, q) for eta_pq (orders 2 and 3), and their names
MOMENTS = ((2, 0), (0, 2), (1, 1), (3, 0), (0, 3), (2, 1), (1, 2))
MOMENT_NAMES = tuple(f"eta{p}{q}" for p, q in MOMENTS)
#: what :func:`measure` returns per clip, in its order
FEATURES = (
    "detected",
    "travel_x",
    "travel_y",
    "path_rms",
    "log_path_rms",
    "area_variation",
    "colour_r",
    "colour_g",
    "colour_b",
    "colour_variation",
    "clutter",
    "faint_eighth",
    "faint_quarter",
    "faint_half",
    "box_side",
    "box_log_aspect",
    "area",
    "box_fill",
    *MOMENT_NAMES,
)
INDEX = {name: i for i, name in enumerate(FEATURES)}
#: the faintly lit background is measured at these fractions of the foreground level (which matters is learned)
FAINT_LEVELS = (1 / 8, 1 / 4, 1 / 2)
FAINT_NAMES = ("eighth", "quarter", "half")


def measure(clip: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """uint8 frames [F, S, S, 3] and a foreground level (0-255) -> (``FEATURES`` [len(FEATURES)], the silhouette
    per frame [F, GRID, GRID] in [0, 1]). Positions and sizes are in frame sides; colours in 0-1 (variation in RGB units). Where no
    object is found in any frame, every measurement but ``detected`` (0) and the faint shares is 0."""
    clip = np.asarray(clip)
    if clip.ndim != 4 or clip.shape[-1] != 3 or clip.shape[1] != clip.shape[2]:
        raise ValueError(f"expected frames [F, S, S, 3], got {clip.shape}")
    x = clip.astype(np.float64)
    n_frames, side = x.shape[:2]
    peak = x.max(axis=-1)
    lattice = (np.arange(GRID * _SUPER) + 0.5) / (GRID * _SUPER)
    times, path, areas, colours, clutter, boxes, aspects, fills, moments = ([] for _ in range(9))
    silhouettes = np.zeros((n_frames, GRID, GRID))
    faint = np.zeros((n_frames, len(FAINT_LEVELS)))
    for i in range(n_frames):
        fg = peak[i] >= threshold
        labels, n = ndimage.label(fg, structure=_STRUCT8)
        away = np.ones_like(fg)
        if n:
            main = labels == int(np.argmax(np.bincount(labels.ravel())[1:])) + 1
            away = ~ndimage.binary_dilation(main, structure=_STRUCT8, iterations=2)
        for k, level in enumerate(FAINT_LEVELS):
            faint[i, k] = ((peak[i] >= threshold * level) & away).sum() / max(1, away.sum())
        if n == 0:
            continue
        area = int(main.sum())
        ys, xs = np.nonzero(main)
        cx, cy = xs.mean() + 0.5, ys.mean() + 0.5
        times.append(i)
        path.append((cx, cy))
        areas.append(area)
        clutter.append((fg.sum() - area) / area)
        core = ndimage.binary_erosion(main, structure=_STRUCT8)
        colours.append((x[i][core] if core.any() else x[i][main]).mean(axis=0))
        x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
        w, h = x1 - x0, y1 - y0
        boxes.append((w + h) / 2)
        aspects.append(abs(np.log(w / h)))
        fills.append(area / (w * h))
        dx, dy = xs + 0.5 - cx, ys + 0.5 - cy
        moments.append([np.sum(dx**p * dy**q) / area ** (1 + (p + q) / 2) for p, q in MOMENTS])
        px = np.clip((x0 + lattice * w).astype(int), 0, side - 1)
        py = np.clip((y0 + lattice * h).astype(int), 0, side - 1)
        silhouettes[i] = main[np.ix_(py, px)].reshape(GRID, _SUPER, GRID, _SUPER).mean(axis=(1, 3))
    out = np.zeros(len(FEATURES))
    out[[INDEX[f"faint_{k}"] for k in FAINT_NAMES]] = faint.mean(axis=0)
    found = len(path)
    if found == 0:
        return out, silhouettes
    c = np.array(path) / side
    travel, rms = np.zeros(2), 0.0
    if found >= 2:  # the least-squares line through the centroids at their frames' times
        t = np.array(times, dtype=np.float64)
        coef = np.polyfit(t, c, 1)
        travel = coef[0] * (n_frames - 1)
        rms = float(np.sqrt(np.mean(np.sum((np.outer(t, coef[0]) + coef[1] - c) ** 2, axis=1))))
    a = np.array(areas, dtype=np.float64)
    colours = np.array(colours)
    values = {
        "detected": found / n_frames,
        "travel_x": travel[0],
        "travel_y": travel[1],
        "path_rms": rms,
        "log_path_rms": np.log(rms + 1e-4),
        "area_variation": a.std() / a.mean(),
        "colour_r": colours[:, 0].mean() / 255.0,
        "colour_g": colours[:, 1].mean() / 255.0,
        "colour_b": colours[:, 2].mean() / 255.0,
        "colour_variation": float(np.linalg.norm(colours.std(axis=0))),
        "clutter": float(np.mean(clutter)),
        "box_side": float(np.mean(boxes)) / side,
        "box_log_aspect": float(np.mean(aspects)),
        "area": a.mean() / side**2,
        "box_fill": float(np.mean(fills)),
        **dict(zip(MOMENT_NAMES, np.mean(moments, axis=0))),
    }
    for name, v in values.items():
        out[INDEX[name]] = v
    return out, silhouettes


def measure_many(clips: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """:func:`measure` of every clip: (float32 [N, len(FEATURES)], float32 [N, F, GRID, GRID])."""
    rows = [measure(c, threshold) for c in clips]
    if not rows:
        n_frames = np.asarray(clips).shape[1] if np.asarray(clips).ndim == 5 else 0
        return np.zeros((0, len(FEATURES)), np.float32), np.zeros((0, n_frames, GRID, GRID), np.float32)
    return (
        np.stack([r[0] for r in rows]).astype(np.float32),
        np.stack([r[1] for r in rows]).astype(np.float32),
    )
