"""The learned world critic: a small video network trained on voted labels, answering pointwise and pairwise.

Two networks share the links from scores to verdicts (:class:`VerdictLinks`), the training loop (:func:`train`) and
the folder format (:func:`save`, :func:`load`): the default since version 4 is
:class:`~vipo.critics.learn.componentnet.ComponentCriticNet` (a connected-component tracker read against learned
prototypes of the prompt's words); this module's :class:`WorldCriticNet` is the convolutional network of versions 2
and 3, described here:

The embedded world's exact judge is never wrong; a critic learned from (simulated) people's votes is, the way IPO's
critic is. This one reads the clip (9 frames of 64x64 RGB, block-averaged from the 4x upscaled mp4s) and the prompt
(the world grammar's colour, shape and direction) and gives one score per dimension:

- a convolutional encoder applied to every frame at 32x32 (with x/y coordinate channels, CoordConv, and soft-argmax
  keypoints, so position and travel are easy to read), then an MLP over the frames, map the clip to a feature
  vector ``h``; an object tracker read as features (:func:`track`: a soft foreground mask's path, area, shape
  moments and colour at 64x64) with an MLP of its own adds what fidelity and motion read (``NetConfig.tracker=False``:
  the convolutions alone, as version 2);
- from ``h`` it predicts which colour, shape and direction the clip shows (13 logits) and, per attribute value, a
  grade; the semantic score is a sum over the three attributes of a term read against the asked value alone,
  ``softplus(alpha_k) * log p_k(asked) + grade_k(asked)``, so unseen combinations of known words get a score from
  terms that were trained (the world judge's semantic key has this form: per attribute "passes" plus closeness);
- fidelity and motion scores are linear in ``h`` and the tracker MLP's output (the world judge's fidelity and
  motion read no prompt either).

One score per dimension serves both questions (the world judge's own structure: its labels are thresholds on the
score its pairwise verdicts compare):

- pointwise: an ordered-logit (cumulative link, McCullagh 1980) model, ``P(label <= k) = sigmoid(s_k (c_k - z))``
  with cutpoints ``c_Bad < c_Normal`` per dimension on the standardized score ``z``;
- pairwise: the same link on the difference, ``d = kappa (z_A - z_B)``, ``P(B) = sigmoid(-tau - d)``,
  ``P(B or Tie) = sigmoid(tau - d)`` (Agresti 1992's ordered paired comparisons with a tie band ``tau``), so swapping
  the two videos swaps A and B exactly: the critic is position-consistent by construction.

Training minimizes the cross-entropy of the voted verdicts (every record of a batch: pointwise ones of its clips and
pairwise ones between them). Where the voters' reasons are the world judge's (``vipo.critics.world.read_reason``),
it also learns what they state, the way an LLM critic is tuned on the reasoning before the verdict: each clip's
graded scores (squared error of the standardized score) and the attributes a clip shows ("looks orange", "looks
like a square": cross-entropy on the 13 logits). Two symmetries of the world augment the data: a horizontal mirror
(left <-> right; every world shape is mirror-symmetric) and time reversal (the direction flips; jitter, colour and
shape do not), each used only where the mirrored prompt combination occurs in the training data itself.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ... import faults
from ...errors import UserError
from ...world import grammar
from ..base import PAIR_VERDICTS
from ..llm import sample_frames
from .components import MOMENT_NAMES, MOMENTS

log = logging.getLogger(__name__)
COLORS, SHAPES, DIRECTIONS = list(grammar.COLORS), list(grammar.SHAPES), list(grammar.DIRECTIONS)
ORDINAL = {"Bad": 0, "Normal": 1, "Good": 2}  # LABELS in rank order
PAIR_INDEX = {"A": 0, "B": 1, "Tie": 2}  # PAIR_VERDICTS order
MIRROR = {"left": "right", "right": "left", "up": "up", "down": "down"}
REVERSE = grammar.OPPOSITE
WEIGHTS, CONFIG = "model.safetensors", "critic.json"


@dataclass
class NetConfig:
    """The network's shape (saved beside its weights in ``critic.json``)."""

    side: int = 32
    frames: int = 9
    width: int = 16
    keypoints: int = 8
    hidden: int = 128
    #: read the clip with an object tracker too (:func:`track`): the shape's path, area and colour per frame
    tracker: bool = True
    #: the side the tracker reads frames at (the convolutions read them block-averaged to ``side``)
    track_side: int = 64
    #: the network of version 4 (:mod:`vipo.critics.learn.componentnet`): a connected-component tracker read
    #: against learned prototypes of the prompt's words, no convolutions (``side``, ``width``, ``keypoints`` and
    #: ``tracker`` are then unused); false: the convolutional network of versions 2 and 3
    components: bool = True
    #: the layout of the weights, set from the fields above (4: components, 3: convolutions and the soft tracker,
    #: 2: convolutions alone); a critic saved by another layout does not load
    version: int = 4

    def __post_init__(self):
        if self.frames < 2 or self.side < 8 or self.side % 4:
            raise UserError("critic net: frames >= 2 and a side >= 8 that is a multiple of 4 are needed")
        if self.tracker and (self.track_side < self.side or self.track_side % self.side):
            raise UserError(f"critic net: track_side must be a multiple of side ({self.side}), got {self.track_side}")
        self.version = 4 if self.components else 3 if self.tracker else 2

    @property
    def input_side(self) -> int:
        """The side of the clips the network is given (:func:`to_clip`)."""
        return self.track_side if self.tracker or self.components else self.side


@dataclass
class TrainOptions:
    """How the world critic trains (``vipo critic train --arch world``)."""

    epochs: int = 40
    batch_clips: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    augment: bool = True
    seed: int = 0
    reasons: bool = True  # also learn what the reasons state (Example.stated, Example.shows)
    reasons_weight: float = 1.0
    #: version 4: the tracker's foreground level (0-255); 0 = chosen from the data (componentnet.choose_threshold)
    foreground: float = 0.0
    #: version 4: Adam steps of each level's short fit in that search (fewer: a faster, noisier choice)
    search_steps: int = 400

    def validate(self) -> None:
        if self.epochs < 1 or self.batch_clips < 2 or not self.lr > 0 or self.weight_decay < 0:
            raise UserError("critic train: epochs >= 1, batch_clips >= 2, lr > 0 and weight_decay >= 0 are needed")
        if self.reasons_weight < 0:
            raise UserError("critic train: reasons_weight must be >= 0")
        if self.search_steps < 1:
            raise UserError(f"critic train: search_steps must be >= 1, got {self.search_steps}")
        if not 0 <= self.foreground <= 255:
            raise UserError(f"critic train: foreground must be a level in [0, 255] (0 = chosen), got {self.foreground}")


def to_clip(frames: np.ndarray, side: int = 32, n_frames: int = 9) -> np.ndarray:
    """uint8 [n_frames, side, side, 3]: square frames block-averaged (or resized) to ``side``, frames resampled in
    time as the LLM critics sample them."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected frames [F, H, W, 3], got {frames.shape}")
    if len(frames) < n_frames:
        raise ValueError(f"the world critic needs {n_frames} frames, got {len(frames)}")
    frames = sample_frames(frames, n_frames)
    h, w = frames.shape[1:3]
    if h == w == side:
        return frames.astype(np.uint8)
    if h == w and h % side == 0:
        k = h // side
        return frames.reshape(n_frames, side, k, side, k, 3).mean(axis=(2, 4)).round().astype(np.uint8)
    return np.stack([np.asarray(Image.fromarray(f).resize((side, side), Image.BOX)) for f in frames])


def attributes(prompt: str) -> grammar.Attributes:
    a = grammar.parse(prompt)
    if a is None:
        raise ValueError(f"the learned world critic only reads prompts of the world's grammar, got {prompt!r}")
    return a


def attr_index(a: grammar.Attributes) -> tuple[int, int, int]:
    return COLORS.index(a.color), SHAPES.index(a.shape), DIRECTIONS.index(a.direction)


#: what :func:`track` measures per clip, in its order
TRACK_FEATURES = (
    "travel_x",
    "travel_y",
    "path_rms",
    "log_path_rms",
    "area_variation",
    "colour_variation",
    "colour_r",
    "colour_g",
    "colour_b",
    "area",
    "min_area",
    "log_aspect",
    "spread_xx",
    "spread_yy",
    "spread_xy",
    "faint",
    "fill",
    "box_width",
    "box_height",
    "box_fill",
    "box_log_aspect",
    *MOMENT_NAMES,
)
MASK_SOFTNESS = 0.01  # the soft foreground mask's temperature, in units of the full intensity range


def brightness_histogram(clips: np.ndarray, batch: int = 128) -> np.ndarray:
    """Counts of the brightest channel's 256 levels over uint8 ``clips`` [N, ..., 3], ``batch`` clips at a time (the
    per-pixel maximum of all clips at once would copy them)."""
    clips = np.asarray(clips)
    hist = np.zeros(256)
    for k in range(0, max(1, len(clips)), batch):
        hist += np.bincount(clips[k : k + batch].max(axis=-1).ravel(), minlength=256)
    return hist


def otsu_threshold(hist: np.ndarray) -> float:
    """Otsu's (1979) threshold, in [0, 1], of a 256-level histogram: the level that best splits pixels into two
    classes (the largest between-class variance; where a gap between the classes makes a plateau of equal levels,
    its middle). What the tracker calls foreground is learned from the data this way."""
    p = np.asarray(hist, dtype=np.float64) / max(1.0, float(np.sum(hist)))
    levels = np.arange(256, dtype=np.float64)
    w0 = np.cumsum(p)
    m0 = np.cumsum(p * levels)
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (m0[-1] * w0 - m0) ** 2 / (w0 * (1 - w0))
    between = np.nan_to_num(between, nan=-1.0, posinf=-1.0)
    if between.max() <= 0:  # one level only (a blank clip): nothing to split
        return 0.5
    best = np.flatnonzero(between >= between.max() * (1 - 1e-9))
    return float(((best[0] + best[-1]) / 2 + 0.5) / 255.0)


def track(x: torch.Tensor, threshold: torch.Tensor | float) -> torch.Tensor:
    """An object tracker read as features: float frames ``x`` [B, F, S, S, 3] in [0, 1] -> [B, len(TRACK_FEATURES)].

    A soft foreground mask (the brightest channel above ``threshold``, a sigmoid of temperature ``MASK_SOFTNESS``)
    gives per frame the shape's area, centroid and second moments, the mean colour of its interior (the mask eroded
    by a 3x3 min-pool) and the faintly lit share of the background away from it (beyond a 5x5 dilation). Over the
    clip: the centroid path's straight-line fit (travel over the clip, and the RMS distance of the path from the
    fitted constant-speed line: how unsteady the motion is), the area's and the colour's variation over frames, and
    the means; the soft bounding box (the columns and rows the mask occupies) and the filled mask's normalized
    central moments of orders 2 and 3 (scale-free, as Hu 1962 normalizes them). Positions are in frame sides.
    Differentiable; nothing here is fitted, the network reads it."""
    b, f, s = x.shape[:3]
    peak = x.amax(dim=-1)  # B, F, S, S
    m = torch.sigmoid((peak - threshold) / MASK_SOFTNESS)
    g = (torch.arange(s, dtype=x.dtype, device=x.device) + 0.5) / s
    gx, gy = g.view(1, 1, 1, s), g.view(1, 1, s, 1)
    area = m.sum(dim=(2, 3)).clamp_min(1e-3)
    cx = (m * gx).sum(dim=(2, 3)) / area
    cy = (m * gy).sum(dim=(2, 3)) / area
    dx, dy = gx - cx[..., None, None], gy - cy[..., None, None]
    sxx = (m * dx * dx).sum(dim=(2, 3)) / area
    syy = (m * dy * dy).sum(dim=(2, 3)) / area
    sxy = (m * dx * dy).sum(dim=(2, 3)) / area
    flat = m.reshape(b * f, 1, s, s)
    core = -F.max_pool2d(-flat, 3, 1, 1).reshape(b, f, s, s)
    colour = (core[..., None] * x).sum(dim=(2, 3)) / core.sum(dim=(2, 3)).clamp_min(1e-3)[..., None]  # B, F, 3
    near = F.max_pool2d(flat, 5, 1, 2).reshape(b, f, s, s)
    faint = (torch.sigmoid((peak - threshold / 4) / MASK_SOFTNESS) * (1 - near)).mean(dim=(2, 3))
    # the bounding box, soft: the columns and rows the mask occupies
    box_w = m.amax(dim=2).sum(dim=-1).clamp_min(1e-3)
    box_h = m.amax(dim=3).sum(dim=-1).clamp_min(1e-3)
    # the shape: the mask's normalized central moments of orders 2 and 3 (in pixels, scale-free)

    def eta(p: int, q: int) -> torch.Tensor:
        return (m * (dx * s) ** p * (dy * s) ** q).sum(dim=(2, 3)) / area ** (1 + (p + q) / 2)

    moments = [eta(p, q).mean(dim=1) for p, q in MOMENTS]
    t = torch.arange(f, dtype=x.dtype, device=x.device)
    t = t - t.mean()

    def line(c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # least-squares slope over the clip, residual
        slope = (c * t).sum(dim=1) / (t * t).sum()
        return slope * (f - 1), c - c.mean(dim=1, keepdim=True) - slope[:, None] * t

    travel_x, rx = line(cx)
    travel_y, ry = line(cy)
    path_rms = (rx.pow(2) + ry.pow(2)).mean(dim=1).sqrt()
    a = area / (s * s)
    mean_sxx, mean_syy = sxx.mean(dim=1), syy.mean(dim=1)
    return torch.stack(
        [
            travel_x,
            travel_y,
            path_rms,
            torch.log(path_rms + 1e-4),
            a.std(dim=1) / a.mean(dim=1),
            (colour.std(dim=1) * 255).norm(dim=-1),
            *colour.mean(dim=1).unbind(-1),
            a.mean(dim=1),
            a.amin(dim=1),
            0.5 * torch.log(mean_sxx.clamp_min(1e-6) / mean_syy.clamp_min(1e-6)),
            mean_sxx,
            mean_syy,
            sxy.mean(dim=1),
            faint.mean(dim=1),
            a.mean(dim=1) / (mean_sxx * mean_syy).sqrt().clamp_min(1e-6),
            box_w.mean(dim=1) / s,
            box_h.mean(dim=1) / s,
            (area / (box_w * box_h)).mean(dim=1),
            torch.log(box_w / box_h).abs().mean(dim=1),
            *moments,
        ],
        dim=1,
    )


@torch.no_grad()
def set_scale(net: VerdictLinks, stated: np.ndarray) -> None:
    """Set the scores' ``center`` and ``spread`` from the stated scores [N, 3] (NaN: not stated), each dimension
    where at least two are stated."""
    st = torch.from_numpy(np.asarray(stated, dtype=np.float32))
    for k in range(3):
        v = st[:, k][~torch.isnan(st[:, k])]
        if len(v) > 1:
            net.center[k], net.spread[k] = v.mean(), v.std().clamp_min(0.05)


class VerdictLinks(nn.Module):
    """What every learned world critic shares: where its three scores live and the links from scores to verdicts.

    The scores are on the scale the reasons state them (``center``, ``spread``: set from the stated scores before
    training); the links read them standardized, so that cutpoints and tie band start at the scale of the data
    whatever scale the reasons state it on."""

    def __init__(self):
        super().__init__()
        self.register_buffer("center", torch.zeros(3))
        self.register_buffer("spread", torch.ones(3))
        self.cut_low = nn.Parameter(torch.zeros(3))
        self.cut_gap = nn.Parameter(torch.zeros(3))
        self.point_scale = nn.Parameter(torch.zeros(3))
        self.pair_scale = nn.Parameter(torch.zeros(3))
        self.pair_tie = nn.Parameter(torch.full((3,), -1.0))

    def pointwise_logp(self, scores: torch.Tensor) -> torch.Tensor:
        """log P(Bad, Normal, Good) [B, 3 dims, 3]."""
        scores = (scores - self.center) / self.spread
        low = self.cut_low
        high = low + F.softplus(self.cut_gap) + 1e-3
        k = F.softplus(self.point_scale) * 8
        p_bad = torch.sigmoid(k * (low - scores))
        p_le_normal = torch.sigmoid(k * (high - scores))
        probs = torch.stack([p_bad, p_le_normal - p_bad, 1 - p_le_normal], dim=-1)
        return probs.clamp_min(1e-7).log()

    def pairwise_logp(self, sa: torch.Tensor, sb: torch.Tensor) -> torch.Tensor:
        """log P(A, B, Tie) [B, 3 dims, 3]; swapping ``sa`` and ``sb`` swaps A and B."""
        d = F.softplus(self.pair_scale) * 5 * (sa - sb) / self.spread
        tau = F.softplus(self.pair_tie)
        p_b = torch.sigmoid(-tau - d)
        p_not_a = torch.sigmoid(tau - d)
        probs = torch.stack([1 - p_not_a, p_b, p_not_a - p_b], dim=-1)
        return probs.clamp_min(1e-7).log()

    def observed(self, logp: torch.Tensor, task: str, explained: torch.Tensor | None = None) -> torch.Tensor:
        """log P of the voted label given the critic's own ``logp`` [B, dims, 3] (``task``: pointwise or pairwise;
        ``explained`` [B] bool: votes whose reason states what was measured), which training fits to the votes: here
        the same (the votes are taken as the truth)."""
        return logp


class WorldCriticNet(VerdictLinks):
    """Versions 2 and 3: convolutions over the frames (and the soft tracker :func:`track`)."""

    def __init__(self, cfg: NetConfig = NetConfig(components=False)):
        super().__init__()
        if cfg.components:  # this is the convolutional network whatever the config's default
            cfg = replace(cfg, components=False)
        self.cfg = cfg
        w, k = cfg.width, cfg.keypoints
        # per frame (shared over time): three convolutions, two of them stride 2, to an 8x8 map (CoordConv inputs)
        self.frame = nn.Sequential(
            nn.Conv2d(5, w, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(w, w, 3, stride=2, padding=1),
            nn.GELU(),
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1),
            nn.GELU(),
        )
        # spatial soft-argmax keypoints (Levine et al. 2016): where things are, differentiably, per frame
        self.heat = nn.Conv2d(2 * w, k, 1)
        per_frame = 2 * k + 2 * (2 * w)  # keypoint x/y + mean- and max-pooled features
        self.clip = nn.Sequential(
            nn.Linear(cfg.frames * per_frame, cfg.hidden),
            nn.GELU(),
            nn.Linear(cfg.hidden, cfg.hidden),
            nn.GELU(),
        )
        quality_in = cfg.hidden
        if cfg.tracker:
            # the tracker's measurements, standardized (statistics of the training clips, set before training),
            # through an MLP of their own to the fidelity and motion heads (which read no prompt): how unsteady a
            # path is, or how clean a shape, is a smooth function of a few of them that the convolutional features
            # only approximate. The semantic terms read the convolutional features alone: fed the tracker too, they
            # fitted the training combinations and no longer generalized to unseen ones (measured on the unit
            # test's 48 clips: semantic 4 of 8 held-out clips right with the tracker, 7 of 8 without)
            n_track = len(TRACK_FEATURES)
            self.register_buffer("threshold", torch.tensor(0.5))
            self.register_buffer("track_mean", torch.zeros(n_track))
            self.register_buffer("track_std", torch.ones(n_track))
            self.track_mlp = nn.Sequential(
                nn.Linear(n_track, cfg.hidden), nn.GELU(), nn.Linear(cfg.hidden, cfg.hidden), nn.GELU()
            )
            quality_in += cfg.hidden
        self.sizes = [len(COLORS), len(SHAPES), len(DIRECTIONS)]  # the 13 values, attribute by attribute
        n_values = sum(self.sizes)
        self.shows = nn.Linear(cfg.hidden, n_values)  # which colour, shape and direction the clip shows (logits)
        self.match = nn.Linear(cfg.hidden, n_values)  # how well the clip shows each value (the semantic terms)
        self.quality = nn.Linear(quality_in, 2)  # fidelity, motion
        self.alpha = nn.Parameter(torch.zeros(3))
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, cfg.side), torch.linspace(-1, 1, cfg.side), indexing="ij")
        self.register_buffer("coords", torch.stack([xs, ys]), persistent=False)
        m = cfg.side // 4
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, m), torch.linspace(-1, 1, m), indexing="ij")
        self.register_buffer("grid", torch.stack([xs.flatten(), ys.flatten()], dim=1), persistent=False)
        offsets = np.cumsum([0, *self.sizes[:-1]])
        self.register_buffer("offsets", torch.as_tensor(offsets, dtype=torch.long), persistent=False)

    def measure(self, frames: torch.Tensor) -> torch.Tensor:
        """The tracker's standardized measurements of float frames [B, F, S, S, 3] in [0, 1]."""
        return (track(frames, self.threshold) - self.track_mean) / self.track_std

    def features(self, clips: torch.Tensor) -> torch.Tensor:
        """uint8 [B, F, S, S, 3] (S = ``cfg.input_side``) -> [B, hidden]: the convolutional features, followed with
        the tracker by its MLP's [B, hidden]."""
        b, f, s = clips.shape[:3]
        if s != self.cfg.input_side:
            raise ValueError(f"the critic net reads {self.cfg.input_side}x{self.cfg.input_side} frames, got {s}x{s}")
        frames = clips.float().div(255.0)
        x = frames.permute(0, 1, 4, 2, 3).reshape(b * f, 3, s, s)
        if s != self.cfg.side:  # the convolutions read the frames block-averaged to cfg.side
            x = F.avg_pool2d(x, s // self.cfg.side)
            s = self.cfg.side
        x = torch.cat([x, self.coords[None].expand(b * f, 2, s, s)], dim=1)
        fm = self.frame(x)  # B*F, C, m, m
        heat = F.softmax(self.heat(fm).flatten(2), dim=-1)  # B*F, K, m*m
        keypoints = (heat @ self.grid).flatten(1)  # B*F, 2K
        pooled = torch.cat([fm.mean(dim=(2, 3)), fm.amax(dim=(2, 3))], dim=1)
        per_frame = torch.cat([keypoints, pooled], dim=1).reshape(b, -1)
        if not self.cfg.tracker:
            return self.clip(per_frame)
        z = self.measure(frames)
        return torch.cat([self.clip(per_frame), self.track_mlp(z)], dim=1)

    @torch.no_grad()
    def fit_tracker(self, clips: np.ndarray, batch: int = 128) -> None:
        """Set the tracker's foreground threshold (Otsu's, on ``clips``) and its features' standardization."""
        if not self.cfg.tracker or len(clips) == 0:
            return
        self.threshold.fill_(otsu_threshold(brightness_histogram(clips, batch)))
        z = torch.cat(
            [
                track(torch.from_numpy(np.ascontiguousarray(clips[i : i + batch])).float().div(255.0), self.threshold)
                for i in range(0, len(clips), batch)
            ]
        )
        self.track_mean.copy_(z.mean(dim=0))
        self.track_std.copy_(z.std(dim=0).clamp_min(1e-6) if len(z) > 1 else torch.ones_like(self.track_std))

    def heads(self, clips: torch.Tensor, attrs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """``clips`` uint8 [B, F, S, S, 3], ``attrs`` long [B, 3] (asked colour, shape, direction) -> (scores [B, 3]:
        semantic, fidelity, motion; ``shows`` logits [B, 13]: the colour, shape and direction the clip shows; ``{}``:
        nothing else for :meth:`reason_loss`)."""
        h = self.features(clips)
        conv = h[:, : self.cfg.hidden]  # the semantic terms read the convolutional features only
        shows = self.shows(conv)
        # semantic: a sum over the three attributes of a term read against the asked value alone (the world
        # judge's semantic key is such a sum: "passes" + graded closeness per attribute), so a combination never
        # seen in training is scored from terms that were. Each term: how sure the clip shows the asked value
        # (log-probability, scaled) plus a learned grade of how well
        logp = torch.cat([F.log_softmax(x, dim=1) for x in shows.split(self.sizes, dim=1)], dim=1)
        at = attrs + self.offsets
        terms = F.softplus(self.alpha) * logp.gather(1, at) + self.match(conv).gather(1, at)  # B, 3
        q = self.quality(h)
        raw = torch.stack([terms.sum(dim=1), q[:, 0], q[:, 1]], dim=1)  # ~N(0, 1) at the start
        return self.center + self.spread * raw, shows, {}

    def forward(self, clips: torch.Tensor, attrs: torch.Tensor) -> torch.Tensor:
        """scores [B, 3] (semantic, fidelity, motion): the values the verdict links read."""
        return self.heads(clips, attrs)[0]

    def reason_loss(
        self, scores: torch.Tensor, aux: dict, stated: torch.Tensor, passes: torch.Tensor
    ) -> tuple[torch.Tensor, float, int]:
        """Squared error of the stated scores in units of the scores' spread, summed; with the summed squared error
        and the count of stated scores for the loss curve (``aux`` and ``passes`` are not read by this network)."""
        known = ~torch.isnan(stated)
        diff = scores - torch.nan_to_num(stated)
        return (diff / self.spread)[known].pow(2).sum(), float(diff.detach()[known].pow(2).sum()), int(known.sum())


# -- saving and loading --------------------------------------------------------------------------------------------


def make_net(cfg: NetConfig) -> VerdictLinks:
    """The network ``cfg`` describes: version 4's :class:`~vipo.critics.learn.componentnet.ComponentCriticNet` or
    the convolutional :class:`WorldCriticNet`."""
    if cfg.components:
        from .componentnet import ComponentCriticNet

        return ComponentCriticNet(cfg)
    return WorldCriticNet(cfg)


def save(net: VerdictLinks, out: Path, info: dict) -> None:
    from safetensors.torch import save_file

    from ...io import atomic

    with atomic.atomic_path(out / WEIGHTS) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in net.state_dict().items()}, str(tmp))
    atomic.write_json(out / CONFIG, {"arch": "world", "net": asdict(net.cfg), **info})


def load(path: str | Path, device: str = "cpu") -> VerdictLinks:
    from safetensors.torch import load_file

    path = Path(path)
    if not (path / CONFIG).is_file() or not (path / WEIGHTS).is_file():
        raise UserError(
            f"judge.model: {path}: not a learned world critic (needs {CONFIG} and {WEIGHTS}; "
            "`vipo critic train --arch world` writes them)"
        )
    meta = json.loads((path / CONFIG).read_text())
    if meta.get("arch") != "world":
        raise UserError(f"judge.model: {path}/{CONFIG}: arch {meta.get('arch')!r} is not 'world'")
    net_cfg = dict(meta["net"])
    version = net_cfg.get("version", 1)
    if version == 2:  # before the tracker: the same network without it
        net_cfg.update(tracker=False, components=False)
    elif version == 3:  # convolutions and the soft tracker
        net_cfg.update(components=False)
    elif version != NetConfig.version:
        raise UserError(
            f"judge.model: {path}/{CONFIG}: net version {version} was written by another vipo (this one reads "
            f"versions 2 to {NetConfig.version}); train the critic again with `vipo critic train`"
        )
    net = make_net(NetConfig(**net_cfg))
    try:
        net.load_state_dict(load_file(str(path / WEIGHTS)))
    except RuntimeError as e:
        first = str(e).strip().splitlines()[-1].strip()
        raise UserError(
            f"judge.model: {path}/{WEIGHTS}: its weights do not fit the network {CONFIG} describes ({first}); "
            "train the critic again with `vipo critic train`"
        ) from None
    return net.to(device).eval()


# -- training ------------------------------------------------------------------------------------------------------


@dataclass
class Example:
    """The training set in tensors: clips, their attribute indices, and the records as index tuples."""

    clips: np.ndarray  # uint8 [N, F, S, S, 3]
    attrs: np.ndarray  # int [N, 3]
    point: list  # (clip index, dimension index, ordinal target)
    pair: list  # (clip a, clip b, dimension index, pair target)
    #: float [N, 3]: each clip's graded score per dimension as the annotators' reasons state it (NaN: not stated)
    stated: np.ndarray | None = None
    #: int [N, 3]: the colour, shape and direction the clip shows as the reasons say (-1: not said)
    shows: np.ndarray | None = None
    #: int [N, 3]: whether the reasons say the clip shows the asked colour, shape and direction (1), not (0), or
    #: do not say (-1)
    passes: np.ndarray | None = None
    #: per record of ``point`` / ``pair``: whether a voter of the verdict gave a reason that states what was measured
    #: (an explained vote); unexplained ones ("looked Bad to me") are where the voters' mistakes are
    point_explained: list | None = None
    pair_explained: list | None = None

    def __post_init__(self):
        n = len(self.clips)
        if self.stated is None:
            self.stated = np.full((n, 3), np.nan, dtype=np.float32)
        if self.shows is None:
            self.shows = np.full((n, 3), -1, dtype=np.int64)
        if self.passes is None:
            self.passes = np.full((n, 3), -1, dtype=np.int64)
        if self.point_explained is None:
            self.point_explained = [False] * len(self.point)
        if self.pair_explained is None:
            self.pair_explained = [False] * len(self.pair)


def _components(n: int, pairs: list) -> list[list[int]]:
    """Clips linked by pairwise records, grouped (union-find), so a batch holds both videos of its pairs."""
    parent = list(range(n))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b, *_ in pairs:
        parent[find(a)] = find(b)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(i)
    return list(groups.values())


def _augment(clips: np.ndarray, attrs: np.ndarray, shows: np.ndarray, known: set, rng: random.Random):
    """Mirror and/or reverse a group of clips (one choice for the whole group: pairs stay comparable), asking the
    mirrored direction (and saying the clip shows it); only into prompt combinations in ``known``. The world judge's
    scores do not change under either (every shape is mirror-symmetric; reversal keeps travel, drift and jitter)."""
    mirror, reverse = rng.random() < 0.5, rng.random() < 0.5

    def turn(d: int) -> int:
        direction = DIRECTIONS[d]
        if mirror:
            direction = MIRROR[direction]
        if reverse:
            direction = REVERSE[direction]
        return DIRECTIONS.index(direction)

    new, seen = attrs.copy(), shows.copy()
    for i, (c, s, d) in enumerate(attrs):
        if (c, s, turn(d)) not in known:
            return clips, attrs, shows
        new[i, 2] = turn(d)
        if seen[i, 2] >= 0:
            seen[i, 2] = turn(seen[i, 2])
    if mirror:
        clips = clips[:, :, :, ::-1]
    if reverse:
        clips = clips[:, ::-1]
    return np.ascontiguousarray(clips), new, seen


def train(
    ex: Example, opts: TrainOptions, net_cfg: NetConfig = NetConfig(), progress: bool = True, on_epoch=None
) -> tuple[VerdictLinks, list[dict]]:
    """Train on every record of ``ex``; returns the network and the loss curve (one row per epoch)."""
    from tqdm.auto import tqdm

    opts.validate()
    torch.manual_seed(opts.seed)
    rng = random.Random(opts.seed)
    inputs = None  # version 4: the tracker's measurements of every clip, read once
    net = make_net(net_cfg)
    explained_pairs = [p for p, e in zip(ex.pair, ex.pair_explained) if e]
    if net_cfg.components:
        from . import componentnet

        shown = componentnet.shown_values(ex)
        if opts.foreground > 0:
            threshold = opts.foreground
        elif opts.reasons:
            threshold, net.threshold_search = componentnet.choose_threshold(
                ex.clips,
                ex.attrs,
                ex.stated,
                shown,
                ex.passes,
                net_cfg,
                opts.seed,
                steps=opts.search_steps,
                pairs=explained_pairs,
            )
        else:
            threshold = otsu_threshold(brightness_histogram(ex.clips)) * 255
        net.threshold.fill_(threshold)
        inputs = net.read(ex.clips)
        net.fit_prototypes(*inputs, shown)
        torch.manual_seed(opts.seed)
    else:
        net.fit_tracker(ex.clips)
    passes = ex.passes
    if opts.reasons:
        set_scale(net, ex.stated)
    optim = torch.optim.AdamW(net.parameters(), lr=opts.lr, weight_decay=opts.weight_decay)
    # which votes a reason explains (reasons: false reads no reason, so none)
    point_of: dict[int, list] = {}
    for (i, d, t), e in zip(ex.point, ex.point_explained):
        point_of.setdefault(i, []).append((d, t, e and opts.reasons))
    pair_of: dict[int, list] = {}
    for (a, b, d, t), e in zip(ex.pair, ex.pair_explained):
        pair_of.setdefault(a, []).append((b, d, t, e and opts.reasons))
    # clips that no record uses do not need a forward pass
    groups = [g for g in _components(len(ex.clips), ex.pair) if any(i in point_of or i in pair_of for i in g)]
    known = {tuple(int(v) for v in a) for a in ex.attrs}
    steps_per_epoch = max(1, math.ceil(sum(len(g) for g in groups) / opts.batch_clips))
    total = opts.epochs * steps_per_epoch
    # a one-cycle schedule warms up for 10% of the steps (at least 2: OneCycleLR divides by the warm-up length - 1)
    sched = (
        torch.optim.lr_scheduler.OneCycleLR(optim, max_lr=opts.lr, total_steps=total, pct_start=max(0.1, 3 / total))
        if total >= 6
        else torch.optim.lr_scheduler.LambdaLR(optim, lambda _: 1.0)
    )
    curve, t0 = [], time.time()
    bar = tqdm(total=total, disable=not progress, desc="critic train", unit="step")
    for epoch in range(opts.epochs):
        rng.shuffle(groups)
        batches, cur = [], []
        for g in groups:
            cur.append(g)
            if sum(len(x) for x in cur) >= opts.batch_clips:
                batches.append(cur)
                cur = []
        if cur:
            batches.append(cur)
        net.train()
        sums = {"loss": 0.0, "point": 0.0, "pair": 0.0, "n_point": 0, "n_pair": 0, "stated": 0.0, "n_stated": 0}
        for batch in batches:
            faults.check_term("critic train")  # SIGTERM: stop between steps (nothing is written: exit 143)
            idx = [i for g in batch for i in g]
            pos = {i: k for k, i in enumerate(idx)}
            if inputs is None:
                clips, attrs, shows = [], [], []
                for g in batch:
                    c, a, w = ex.clips[g], ex.attrs[g], ex.shows[g]
                    if opts.augment:
                        c, a, w = _augment(c, a, w, known, rng)
                    clips.append(c)
                    attrs.append(a)
                    shows.append(w)
                scores, shows_logits, aux = net.heads(
                    torch.from_numpy(np.concatenate(clips)), torch.from_numpy(np.concatenate(attrs)).long()
                )
                shows = np.concatenate(shows)
            else:  # measurements read once; the symmetries would need them read again (augment is not used)
                rows = torch.as_tensor(idx)
                scores, shows_logits, aux = net.heads_from(
                    inputs[0][rows], inputs[1][rows], torch.from_numpy(ex.attrs[idx]).long()
                )
                shows = ex.shows[idx]
            losses = []
            if opts.reasons:
                # what the reasons state: the graded scores (squared error) and the attributes shown (cross-entropy)
                reason, sq, n_stated = net.reason_loss(
                    scores, aux, torch.from_numpy(ex.stated[idx]), torch.from_numpy(passes[idx])
                )
                losses.append(opts.reasons_weight * reason)
                sums["stated"] += sq
                sums["n_stated"] += n_stated
                tgt = torch.from_numpy(shows)
                for k, lg in enumerate(shows_logits.split(net.sizes, dim=1)):
                    has = tgt[:, k] >= 0
                    if has.any():
                        losses.append(opts.reasons_weight * F.cross_entropy(lg[has], tgt[has, k], reduction="sum"))
            pts = [(pos[i], d, t, e) for i in idx for d, t, e in point_of.get(i, [])]
            if pts:
                rows, dims, tgt, sure = (torch.tensor(v) for v in zip(*pts))
                lp = net.observed(net.pointwise_logp(scores[rows]), "pointwise", sure)[torch.arange(len(pts)), dims]
                point_loss = F.nll_loss(lp, tgt, reduction="sum")
                losses.append(point_loss)
                sums["point"] += point_loss.item()
                sums["n_point"] += len(pts)
            prs = [(pos[a], pos[b], d, t, e) for a in idx for b, d, t, e in pair_of.get(a, [])]
            if prs:
                ra, rb, dims, tgt, sure = (torch.tensor(v) for v in zip(*prs))
                lp = net.observed(net.pairwise_logp(scores[ra], scores[rb]), "pairwise", sure)
                lp = lp[torch.arange(len(prs)), dims]
                pair_loss = F.nll_loss(lp, tgt, reduction="sum")
                losses.append(pair_loss)
                sums["pair"] += pair_loss.item()
                sums["n_pair"] += len(prs)
            n = len(pts) + len(prs)
            if n == 0:
                continue
            loss = sum(losses) / n
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            sched.step()
            sums["loss"] += loss.item() * n
            bar.update(1)
        n_all = sums["n_point"] + sums["n_pair"]
        row = {
            "epoch": epoch + 1,
            "loss": sums["loss"] / max(1, n_all),
            "pointwise_loss": sums["point"] / max(1, sums["n_point"]),
            "pairwise_loss": sums["pair"] / max(1, sums["n_pair"]),
            **({"stated_rmse": math.sqrt(sums["stated"] / sums["n_stated"])} if sums["n_stated"] else {}),
            "lr": sched.get_last_lr()[0],
            "elapsed_s": round(time.time() - t0, 1),
        }
        curve.append(row)
        bar.set_postfix(loss=f"{row['loss']:.3f}")
        if on_epoch is not None:
            on_epoch(net, row)
    bar.close()
    net.eval()
    if inputs is not None and opts.reasons:
        all_scores = componentnet.scores_in_chunks(net, *inputs, torch.from_numpy(ex.attrs).long())
        net.tie_accuracy = calibrate_ties(net, all_scores, explained_pairs)
    return net, curve


TIE_GRID = np.linspace(-6.0, 4.0, 201)  # candidate pair_tie values: tie half-widths softplus(v) from 0.0025 to 4


@torch.no_grad()
def pair_accuracy(net: VerdictLinks, scores: torch.Tensor, pairs: list) -> float:
    """Share of ``pairs`` ((clip a, clip b, dimension, verdict index) into ``scores``) whose verdict the net's
    links give (argmax), all dimensions pooled; NaN without pairs."""
    if not pairs:
        return math.nan
    ra, rb, dims, tgt = (torch.tensor(v) for v in zip(*pairs))
    lp = net.pairwise_logp(scores[ra], scores[rb])[torch.arange(len(pairs)), dims]
    return float((lp.argmax(dim=-1) == tgt).float().mean())


@torch.no_grad()
def calibrate_ties(net: VerdictLinks, scores: torch.Tensor, pairs: list) -> dict:
    """Set each dimension's tie band (``pair_tie``) to the one whose verdicts agree most with ``pairs`` ((clip a,
    clip b, dimension, verdict index) against ``scores`` [N, 3]), searched over ``TIE_GRID`` with the scale kept.

    Likelihood places the band where the verdicts' probabilities fit best, which is not where their argmax is most
    often right once the scores carry errors (on the component critic's training votes: motion pairs the judge calls
    a tie were called A or B four times as often as the reverse). The search reads the explained training votes only
    (those whose reason states the measurement), never the test split. Returns ``{dimension index: (accuracy before,
    accuracy after)}``."""
    out = {}
    for d in range(3):
        rows = [p for p in pairs if p[2] == d]
        if not rows:
            continue
        keep = float(net.pair_tie[d])

        def accuracy(v: float) -> float:
            net.pair_tie[d] = v
            return pair_accuracy(net, scores, rows)

        before = accuracy(keep)
        best = max(TIE_GRID, key=accuracy)
        after = accuracy(float(best))
        if after <= before:
            net.pair_tie[d] = keep
            after = before
        out[d] = (round(before, 4), round(after, 4))
    return out


@torch.no_grad()
def scores(net: VerdictLinks, clips: np.ndarray, attrs: np.ndarray, batch: int = 128) -> torch.Tensor:
    net.eval()
    out = [
        net(torch.from_numpy(np.ascontiguousarray(clips[i : i + batch])), torch.from_numpy(attrs[i : i + batch]).long())
        for i in range(0, len(clips), batch)
    ]
    return torch.cat(out) if out else torch.zeros(0, 3)


def label_of(logp_row: torch.Tensor) -> str:
    return ("Bad", "Normal", "Good")[int(logp_row.argmax())]


def verdict_of(logp_row: torch.Tensor) -> str:
    return PAIR_VERDICTS[int(logp_row.argmax())]
