"""The ``omniscore`` critic: VideoDPO's OmniScore, a scalar from VBench dimensions, in the critic interface.

OmniScore = (4 * Quality + Semantic) / 5, where Quality is the weighted mean of the quality dimensions (dynamic
degree weighted 0.5, the rest 1) and Semantic of the semantic ones, each dimension first min-max normalized with
VBench's constants (``NORMALIZE``) and clipped to [0, 1]. Without a semantic dimension the total is Quality.

Weight-free dimensions, always measured (frames as decoded, uint8 RGB):

- temporal flickering (VBench): ``(255 - mean |frame[t+1] - frame[t]|) / 255``;
- motion smoothness: VBench predicts each odd frame with a learned interpolator (AMT) and scores
  ``(255 - mean |prediction - frame|) / 255``; here the prediction is the mean of the two neighbouring frames, so
  the score is the same measure with a simpler interpolator (it penalises steady fast motion somewhat, jumps more);
- dynamic degree (VBench): optical flow between consecutive frames (OpenCV's Farneback when opencv-python-headless
  is installed; else the global shift found by phase correlation, a numpy fallback); a frame pair moves when the
  mean of its top 5% flow magnitudes exceeds ``6 * min(H, W) / 256`` pixels, and the video is dynamic (1, else 0)
  when at least ``round(4 * frames / 16)`` pairs move.

Dimensions that need model weights run when the judge options give their local paths (:mod:`.features` loads
them, never downloading): subject consistency (``dino``: DINO ViT), background consistency (``clip``: CLIP),
aesthetic quality (``aesthetic_head``: the LAION predictor, on ``aesthetic_clip`` or ``clip``: CLIP ViT-L/14),
imaging quality (``musiq``: MUSIQ, with the pyiqa package installed). Without them they are skipped, and the
critic's warning names what it measures and what it skips. Overall consistency needs ViCLIP, which vipo does not
load, and is always skipped; ``xclip`` (an X-CLIP folder) adds ``overall_consistency_xclip``, a stand-in under its own
name, normalized with ViCLIP's constant for want of an X-CLIP one (:mod:`.features` says how each is measured).

In the critic text format: semantic <- overall consistency's X-CLIP stand-in (Normal, "not measured", without it);
fidelity <- mean of temporal flickering, aesthetic and imaging quality; motion <- weighted mean of subject and
background consistency, motion smoothness and dynamic degree; Good >= 0.75, Normal >= 0.4. The pointwise ``total`` is
the OmniScore (what ``pairs`` ranks, filters and re-weights by); pairwise, the larger OmniScore wins.
"""

from __future__ import annotations

import hashlib
import logging

import numpy as np

from .base import (
    DIMENSIONS,
    Pairwise,
    Pointwise,
    TextCritic,
    Video,
    format_answer,
    label_of_score,
)
from .options import OmniScoreOptions

log = logging.getLogger(__name__)

NORMALIZE = {  # VBench's min-max constants (scripts/constant.py NORMALIZE_DIC)
    "subject_consistency": (0.1462, 1.0),
    "background_consistency": (0.2615, 1.0),
    "temporal_flickering": (0.6293, 1.0),
    "motion_smoothness": (0.706, 0.9975),
    "dynamic_degree": (0.0, 1.0),
    "aesthetic_quality": (0.0, 1.0),
    "imaging_quality": (0.0, 1.0),
    "overall_consistency": (0.0, 0.364),
    # not VBench's: the X-CLIP stand-in for overall consistency borrows ViCLIP's constant (no X-CLIP one exists)
    "overall_consistency_xclip": (0.0, 0.364),
}
WEIGHT = {"dynamic_degree": 0.5}
QUALITY = (
    "subject_consistency",
    "background_consistency",
    "temporal_flickering",
    "motion_smoothness",
    "aesthetic_quality",
    "imaging_quality",
    "dynamic_degree",
)
SEMANTIC = ("overall_consistency", "overall_consistency_xclip")
NEEDS_WEIGHTS = (
    "subject_consistency",
    "background_consistency",
    "aesthetic_quality",
    "imaging_quality",
    "overall_consistency",
)
#: dimensions scored as a folder mean over frame pairs (VBench's sim / cnt), not over videos
PER_FRAME_PAIR = ("subject_consistency", "background_consistency")
AS_DIMENSION = {
    "semantic": ("overall_consistency", "overall_consistency_xclip"),
    "fidelity": ("temporal_flickering", "aesthetic_quality", "imaging_quality"),
    "motion": ("subject_consistency", "background_consistency", "motion_smoothness", "dynamic_degree"),
}
TIE_TOTAL, TIE_DIM = 1e-3, 0.01


def temporal_flickering(frames: np.ndarray) -> float:
    f = frames.astype(np.float64)
    return float((255 - np.abs(np.diff(f, axis=0)).mean()) / 255) if len(f) > 1 else 1.0


def motion_smoothness(frames: np.ndarray) -> float:
    f = frames.astype(np.float64)
    if len(f) < 3:
        return 1.0
    err = np.abs((f[:-2] + f[2:]) / 2 - f[1:-1])[::2].mean()  # odd frames predicted from their neighbours
    return float((255 - err) / 255)


def _grey(frames: np.ndarray) -> np.ndarray:
    return (frames.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)).astype(np.float32)


def flow_magnitude(a: np.ndarray, b: np.ndarray) -> float:
    """Mean of the top 5% optical-flow magnitudes (pixels) from grey frame ``a`` to ``b``."""
    try:
        import cv2
    except ImportError:
        return _phase_shift(a, b)
    flow = cv2.calcOpticalFlowFarneback(a.astype(np.uint8), b.astype(np.uint8), None, 0.5, 3, 15, 3, 5, 1.2, 0)
    mag = np.hypot(flow[..., 0], flow[..., 1]).ravel()
    k = max(1, int(0.05 * mag.size))
    return float(np.partition(mag, -k)[-k:].mean())


def _phase_shift(a: np.ndarray, b: np.ndarray) -> float:
    """Length of the dominant translation between two frames (phase correlation): the fallback without OpenCV."""
    fa, fb = np.fft.fft2(a - a.mean()), np.fft.fft2(b - b.mean())
    r = fa * np.conj(fb)
    corr = np.fft.ifft2(r / (np.abs(r) + 1e-9)).real
    dy, dx = np.unravel_index(np.argmax(corr), corr.shape)
    h, w = corr.shape
    return float(np.hypot(dy - h if dy > h // 2 else dy, dx - w if dx > w // 2 else dx))


def dynamic_degree(frames: np.ndarray) -> float:
    g = _grey(frames)
    if len(g) < 2:
        return 0.0
    threshold = 6.0 * min(g.shape[1:]) / 256.0
    moving = sum(flow_magnitude(g[i], g[i + 1]) > threshold for i in range(len(g) - 1))
    return float(moving >= max(1, round(4 * len(g) / 16)))


def feature_consistency(features: np.ndarray) -> float:
    """VBench's subject / background consistency from per-frame features ``[F, D]`` (L2-normalized here): for
    frames i >= 1, ``(max(0, cos(f_i, f_{i-1})) + max(0, cos(f_i, f_0))) / 2``, averaged; 1 for a single frame."""
    f = np.asarray(features, np.float64)
    if len(f) < 2:
        return 1.0
    f = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
    previous = np.maximum(0.0, (f[1:] * f[:-1]).sum(1))
    first = np.maximum(0.0, f[1:] @ f[0])
    return float(((previous + first) / 2).mean())


MEASURES = {
    "temporal_flickering": temporal_flickering,
    "motion_smoothness": motion_smoothness,
    "dynamic_degree": dynamic_degree,
}


def normalized(raw: dict[str, float]) -> dict[str, float]:
    return {
        k: float(np.clip((v - NORMALIZE[k][0]) / (NORMALIZE[k][1] - NORMALIZE[k][0]), 0, 1)) for k, v in raw.items()
    }


def _weighted(norm: dict[str, float], names) -> float | None:
    got = [(norm[n], WEIGHT.get(n, 1.0)) for n in names if n in norm]
    return sum(v * w for v, w in got) / sum(w for _, w in got) if got else None


def vbench_scores(norm: dict[str, float]) -> dict[str, float | None]:
    """VBench's Quality, Semantic and Total scores (Total = (4 Quality + Semantic) / 5; Quality alone without a
    semantic dimension) from normalized dimensions."""
    quality, semantic = _weighted(norm, QUALITY), _weighted(norm, SEMANTIC)
    total = quality if semantic is None or quality is None else (4 * quality + semantic) / 5
    return {"quality": quality, "semantic": semantic, "total": total}


def omniscore(norm: dict[str, float]) -> float:
    return vbench_scores(norm)["total"]


class OmniScoreCritic(TextCritic):
    name = "omniscore"
    Options = OmniScoreOptions

    def __init__(self, cfg=None, features=None) -> None:
        """``cfg``: the judge options (its :class:`.options.OmniScoreOptions`, or a judge config; its model paths, ``device`` and
        ``feature_batch``); ``features``: an already loaded :class:`.features.FeatureModels` to share."""
        if features is None:
            from .features import FeatureModels

            features = FeatureModels(cfg if cfg is not None else OmniScoreOptions())
        self.features = features
        self.dimensions = [*MEASURES, *features.measures]
        skipped = "; ".join(f"{k} ({why})" for k, why in features.skipped.items())
        (log.warning if features.skipped else log.info)(
            "omniscore: measuring %s%s", ", ".join(self.dimensions), f"; skipping {skipped}" if skipped else ""
        )
        for k, note in features.notes.items():
            log.warning("omniscore: %s is a stand-in: %s", k, note)
        self._cache: dict[str, dict] = {}

    def measure(self, video: Video) -> dict:
        key = hashlib.sha1(video.frames.tobytes() + video.prompt.encode()).hexdigest()
        if key not in self._cache:
            if len(self._cache) > 4096:
                self._cache.clear()
            raw = {k: fn(video.frames) for k, fn in MEASURES.items()}
            raw.update(self.features.measure(video.frames, video.prompt))
            norm = normalized(raw)
            dims = {d: _weighted(norm, AS_DIMENSION[d]) for d in DIMENSIONS}
            self._cache[key] = {"raw": raw, "norm": norm, "dims": dims, "total": omniscore(norm)}
        return self._cache[key]

    def graded_scores(self, video: Video) -> dict[str, float]:
        return {d: v for d, v in self.measure(video)["dims"].items() if v is not None}

    def _details(self, m: dict) -> str:
        return "omniscore: total={:.4f} ".format(m["total"]) + " ".join(
            f"{k}={m['raw'][k]:.4f}(norm {m['norm'][k]:.3f})" for k in m["raw"]
        )

    def answer_pointwise(self, video: Video) -> str:
        m = self.measure(video)
        labels = {d: "Normal" if v is None else label_of_score(v) for d, v in m["dims"].items()}
        reasons = {d: "not measured (needs weights)" if v is None else f"score {v:.3f}" for d, v in m["dims"].items()}
        return format_answer(labels, reasons) + "\n" + self._details(m)

    def answer_pairwise(self, a: Video, b: Video) -> str:
        ma, mb = self.measure(a), self.measure(b)
        verdicts, reasons = {}, {}
        for d in DIMENSIONS:
            va, vb = ma["dims"][d], mb["dims"][d]
            if va is None or vb is None:
                verdicts[d], reasons[d] = "Tie", "not measured"
                continue
            verdicts[d] = "Tie" if abs(va - vb) < TIE_DIM else ("A" if va > vb else "B")
            reasons[d] = f"A {va:.3f} vs B {vb:.3f}"
        return format_answer(verdicts, reasons) + f"\ntotal: A {ma['total']:.4f} vs B {mb['total']:.4f}"

    def pointwise(self, video: Video) -> Pointwise:
        p = super().pointwise(video)
        p.total = self.measure(video)["total"]
        return p

    def pairwise(self, a: Video, b: Video) -> Pairwise:
        p = super().pairwise(a, b)
        ta, tb = self.measure(a)["total"], self.measure(b)["total"]
        p.decided = "Tie" if abs(ta - tb) < TIE_TOTAL else ("A" if ta > tb else "B")
        return p
