"""Pixel measurements of a world clip, and the graded scores the world critic turns into verdicts.

Reads decoded frames only (uint8 [F, H, W, 3], any square size): never seeds or metadata. Frames larger than 64 px
are block-averaged down by an integer factor first (our mp4s are written 4x upscaled), so the same judge reads
tensors and mp4 files alike.

Strictness matters more than leniency: a clip passes semantics only if a shape is found in every frame, its colour
is nearest the asked palette colour by a clear distance, the best-fitting shape template is the asked one with a
clear margin, and its centroid travels the asked way over a visible distance with little sideways drift.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from .grammar import COLORS, DIRECTION_VECTORS, SHAPES, Attributes
from .render import shape_mask

FG_THRESHOLD = 90  # max channel >= this is foreground: ~50% coverage of the dimmest palette colour's peak channel
FAINT_THRESHOLD = 25  # below FG but above this, away from the shape: background noise
COLOR_MAX_DIST = 60.0  # palette colours are >= ~160 apart (RGB euclidean); accept at most ~a third of that
SHAPE_MIN_IOU = 0.72
SHAPE_MIN_MARGIN = 0.06
MIN_TRAVEL = 0.15  # fraction of the frame side along the asked direction
MAX_ASPECT = 0.25  # |log(w/h)| of the bounding box: a 'circle' 28% wider than tall is an ellipse, not a circle
MAX_DRIFT = 0.4  # sideways displacement at most this fraction of the travel
SIZE_OK = (0.28, 0.56)  # bounding-box side / frame side; renders are 0.36-0.44 and masks run up to ~2 px large
_PALETTE = np.array(list(COLORS.values()), dtype=np.float64)
_NAMES = list(COLORS)
_STRUCT8 = np.ones((3, 3), dtype=bool)


@dataclass
class Measurement:
    side: int
    detected: float  # fraction of frames with a shape
    color: str | None
    color_dist: dict  # mean RGB distance of the shape's interior to each palette colour
    shape: str | None
    shape_iou: dict  # mean IoU of the mask with each shape template
    displacement: tuple  # (dx, dy) over the clip, in frame sides
    jitter: float  # RMS residual of centroid from a straight constant-speed path, frame sides
    area_cv: float  # coefficient of variation of the shape's area over frames
    color_cv: float  # frame-to-frame spread of the shape's colour, RGB units
    stray: float  # foreground pixels outside the main component / main component area
    noise: float  # fraction of background pixels that are faintly lit away from the shape
    size: float  # mean bounding-box side / frame side
    aspect: float  # mean |log(width / height)| of the bounding box: 0 for the world's shapes

    def as_dict(self) -> dict:
        return asdict(self)


def _to_analysis(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[1] != frames.shape[2]:
        raise ValueError(f"expected frames [F, S, S, 3], got {frames.shape}")
    side = frames.shape[1]
    factor = 1
    while side // factor > 64 and side % (factor * 2) == 0:
        factor *= 2
    x = frames.astype(np.float64)
    if factor > 1:
        f, s = x.shape[0], side // factor
        x = x.reshape(f, s, factor, s, factor, 3).mean(axis=(2, 4))
    return np.nan_to_num(x, nan=0.0)


def _templates(cx: float, cy: float, w: float, h: float, side: int) -> dict[str, np.ndarray]:
    """Binary templates filling the given box at 50% coverage, rendered at 2x supersampling."""
    ss = 2
    out = {}
    for shape in SHAPES:
        m = shape_mask(shape, cx * ss, cy * ss, w * ss, side * ss, side * ss, h * ss).astype(np.float64)
        out[shape] = m.reshape(side, ss, side, ss).mean(axis=(1, 3)) >= 0.5
    return out


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def measure(frames: np.ndarray) -> Measurement:
    x = _to_analysis(frames)
    n_frames, side = x.shape[0], x.shape[1]
    peak = x.max(axis=-1)
    centroids, areas, colors, ious, strays, noises, sizes, aspects = [], [], [], [], [], [], [], []
    found = 0
    for i in range(n_frames):
        fg = peak[i] >= FG_THRESHOLD
        labels, n = ndimage.label(fg, structure=_STRUCT8)
        if n == 0:
            noises.append(float((peak[i] >= FAINT_THRESHOLD).mean()))
            continue
        counts = np.bincount(labels.ravel())[1:]
        main = labels == (int(np.argmax(counts)) + 1)
        area = int(main.sum())
        if area < 4:
            continue
        found += 1
        ys, xs = np.nonzero(main)
        centroids.append((xs.mean() + 0.5, ys.mean() + 0.5))
        areas.append(area)
        strays.append(float((fg.sum() - area) / area))
        near = ndimage.binary_dilation(main, structure=_STRUCT8, iterations=2)
        noises.append(float(((peak[i] >= FAINT_THRESHOLD) & ~near).sum() / max(1, (~near).sum())))
        core = ndimage.binary_erosion(main, structure=_STRUCT8)
        pix = x[i][core] if core.sum() >= 4 else x[i][main]
        colors.append(pix.mean(axis=0))
        x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
        bw, bh = x1 - x0, y1 - y0
        sizes.append((bw + bh) / 2)
        aspects.append(abs(np.log(bw / bh)))
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        best = {s: 0.0 for s in SHAPES}
        # Fit each template to the mask's bounding box (shrunk by up to a pixel: the foreground threshold sits
        # below 50% coverage, so masks run slightly large). Aspect ratio is judged separately via the box.
        for shrink in (0.0, 0.5, 1.0):
            for shape, tmpl in _templates(cx, cy, bw - shrink, bh - shrink, side).items():
                best[shape] = max(best[shape], _iou(main, tmpl))
        ious.append(best)
    detected = found / n_frames
    if found == 0:
        return Measurement(
            side,
            0.0,
            None,
            {c: 442.0 for c in _NAMES},
            None,
            {s: 0.0 for s in SHAPES},
            (0.0, 0.0),
            1.0,
            1.0,
            255.0,
            1.0,
            float(np.mean(noises)) if noises else 1.0,
            0.0,
            1.0,
        )
    mean_color = np.mean(colors, axis=0)
    dists = np.linalg.norm(_PALETTE - mean_color, axis=1)
    color_dist = {c: float(d) for c, d in zip(_NAMES, dists)}
    color = _NAMES[int(np.argmin(dists))]
    shape_iou = {s: float(np.mean([d[s] for d in ious])) for s in SHAPES}
    shape = max(shape_iou, key=shape_iou.get)
    c = np.array(centroids) / side
    if len(c) >= 2:
        t = np.arange(len(c), dtype=np.float64)
        # Frames where the shape was missed are dropped; time is their index among found frames, which only
        # matters for clips that already fail detection.
        coef = np.polyfit(t, c, 1)
        disp = tuple(float(v) for v in coef[0] * (n_frames - 1))
        jitter = float(
            np.sqrt(np.mean((np.polyval(coef[:, 0], t) - c[:, 0]) ** 2 + (np.polyval(coef[:, 1], t) - c[:, 1]) ** 2))
        )
    else:
        disp, jitter = (0.0, 0.0), 1.0
    areas_a = np.array(areas, dtype=np.float64)
    return Measurement(
        side=side,
        detected=detected,
        color=color,
        color_dist=color_dist,
        shape=shape,
        shape_iou=shape_iou,
        displacement=disp,
        jitter=jitter,
        area_cv=float(areas_a.std() / areas_a.mean()),
        color_cv=float(np.linalg.norm(np.std(colors, axis=0))),
        stray=float(np.mean(strays)),
        noise=float(np.mean(noises)),
        size=float(np.mean(sizes) / side),
        aspect=float(np.mean(aspects)),
    )


@dataclass
class Scores:
    """Graded per-dimension scores in [0, 1] plus the exact attribute checks behind the semantic verdict."""

    color_ok: bool
    shape_ok: bool
    direction_ok: bool
    semantic: float
    fidelity: float
    motion: float
    measurement: Measurement

    @property
    def passed(self) -> bool:
        return self.color_ok and self.shape_ok and self.direction_ok

    def as_dict(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k != "measurement"}
        d["passed"] = self.passed
        d["measurement"] = self.measurement.as_dict()
        return d


def _clip01(v: float) -> float:
    return float(min(1.0, max(0.0, v)))


def _size_factor(size: float) -> float:
    """1 inside the plausible size range, falling linearly to 0 at half / one-and-a-half times its ends."""
    lo, hi = SIZE_OK
    if size < lo:
        return _clip01((size - lo / 2) / (lo / 2))
    if size > hi:
        return _clip01(1 - (size - hi) / (hi / 2))
    return 1.0


def direction_components(m: Measurement, direction: str) -> tuple[float, float]:
    """(travel along the asked direction, sideways drift), both in frame sides."""
    ux, uy = DIRECTION_VECTORS[direction]
    dx, dy = m.displacement
    return dx * ux + dy * uy, abs(dx * uy) + abs(dy * ux)


def why_wrong(m: Measurement, target: Attributes, attribute: str) -> str:
    """Why ``attribute`` ("color", "shape", "direction") failed its check, in a few words (the critic's reason)."""
    if m.detected < 1.0:
        return f"no single shape fully in frame in {100 * (1 - m.detected):.0f}% of the frames"
    if attribute == "color":
        dist = m.color_dist[target.color]
        return (
            f"looks {m.color}"
            if m.color != target.color
            else f"{dist:.0f} from {target.color}'s palette value (at most {COLOR_MAX_DIST:.0f})"
        )
    if attribute == "shape":
        iou = m.shape_iou[target.shape]
        rival, rival_iou = max(((k, v) for k, v in m.shape_iou.items() if k != target.shape), key=lambda kv: kv[1])
        if m.shape != target.shape:
            return f"looks like a {m.shape}"
        if iou < SHAPE_MIN_IOU:
            return f"a loose {target.shape}: fit {iou:.2f} (at least {SHAPE_MIN_IOU})"
        if iou - rival_iou < SHAPE_MIN_MARGIN:
            return f"a {target.shape} fit {iou:.2f} hardly better than a {rival} {rival_iou:.2f}"
        if m.aspect > MAX_ASPECT:
            return f"stretched: bounding box {np.exp(m.aspect):.2f}:1"
        return f"size {m.size:.2f} of the frame (expected {SIZE_OK[0]}-{SIZE_OK[1]})"
    along, drift = direction_components(m, target.direction)
    if along <= -MIN_TRAVEL:
        return f"moves the opposite way ({-along:.2f} of the frame)"
    if along < MIN_TRAVEL:
        return f"travels {along:.2f} of the frame {target.direction} (at least {MIN_TRAVEL})"
    return f"drifts sideways {drift:.2f} for {along:.2f} of travel"


def score(m: Measurement, target: Attributes) -> Scores:
    full = m.detected == 1.0
    dist = m.color_dist[target.color]
    color_ok = full and m.color == target.color and dist <= COLOR_MAX_DIST
    others = [v for s, v in m.shape_iou.items() if s != target.shape]
    iou = m.shape_iou[target.shape]
    shape_ok = (
        full
        and m.shape == target.shape
        and iou >= SHAPE_MIN_IOU
        and iou - max(others) >= SHAPE_MIN_MARGIN
        and m.aspect <= MAX_ASPECT
        and SIZE_OK[0] <= m.size <= SIZE_OK[1]
    )
    along, drift = direction_components(m, target.direction)
    direction_ok = full and along >= MIN_TRAVEL and drift <= MAX_DRIFT * along
    color_s = _clip01(1 - dist / 160)
    shape_s = _clip01((iou - 0.4) / 0.6)
    dir_s = _clip01(along / 0.3) * (1 - _clip01(drift / 0.3))
    semantic = m.detected * (color_s + shape_s + dir_s) / 3
    fidelity = (
        m.detected
        * (1 - _clip01(m.stray * 2))
        * (1 - _clip01(m.noise * 8))
        * _clip01((max(m.shape_iou.values()) - 0.4) / 0.5)
        * _size_factor(m.size)
    )
    # Tolerances cover what anti-aliasing does to a perfect render (jitter <= 0.008, area CV <= 0.075).
    motion = m.detected * float(
        np.exp(-max(0.0, m.jitter - 0.01) / 0.03)
        * np.exp(-max(0.0, m.area_cv - 0.08) / 0.2)
        * np.exp(-max(0.0, m.color_cv - 5) / 40)
    )
    return Scores(color_ok, shape_ok, direction_ok, semantic, fidelity, motion, m)


def judge_clip(frames: np.ndarray, target: Attributes) -> Scores:
    return score(measure(frames), target)
