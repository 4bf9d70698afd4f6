"""The pixelstats critic, a PLACEHOLDER: two pixel statistics in the critic text format, for models the world critic
can't judge (called ``metric`` before; that name is still read, :data:`vipo.critics.options.RENAMED`).

It exists so the whole loop runs on any family without a judge model (tests, smoke runs); it is not a measure of
video quality and training on it optimises only these two statistics. It never reads the prompt, so its semantic
verdict is always Normal (pointwise) and Tie (pairwise), and fidelity then motion decide the pairs:

- fidelity = 1 - mean |discrete Laplacian| / 64 of each frame's grey level: high for smooth frames, low for speckle;
- motion = 1 - mean |frame difference| / 32 of the grey level: high for temporally steady clips, low for flicker.

Both are clipped to [0, 1]; Good >= 0.75, Normal >= 0.4, else Bad. Replace it with a real critic (a multimodal LLM,
VideoScore, human labels) for any result that is meant to mean something.
"""

from __future__ import annotations

import numpy as np

from .base import DIMENSIONS, TextCritic, Video, format_answer, label_of_score
from .options import PixelStatsOptions

TIE = 0.01


def _grey(frames: np.ndarray) -> np.ndarray:
    return np.asarray(frames, dtype=np.float64).mean(axis=-1)  # [F, H, W]


def measure(frames: np.ndarray) -> dict[str, float]:
    g = _grey(frames)
    lap = 4 * g[:, 1:-1, 1:-1] - g[:, :-2, 1:-1] - g[:, 2:, 1:-1] - g[:, 1:-1, :-2] - g[:, 1:-1, 2:]
    fidelity = 1 - np.abs(lap).mean() / 64 if lap.size else 1.0
    motion = 1 - np.abs(np.diff(g, axis=0)).mean() / 32 if len(g) > 1 else 1.0
    return {"semantic": 0.5, "fidelity": float(np.clip(fidelity, 0, 1)), "motion": float(np.clip(motion, 0, 1))}


class PixelStatsCritic(TextCritic):
    name = "pixelstats"
    Options = PixelStatsOptions

    @classmethod
    def from_config(cls, cfg) -> PixelStatsCritic:
        return cls()

    def graded_scores(self, video: Video) -> dict[str, float]:
        return measure(video.frames)

    def answer_pointwise(self, video: Video) -> str:
        m = measure(video.frames)
        labels = {
            "semantic": "Normal",
            "fidelity": label_of_score(m["fidelity"]),
            "motion": label_of_score(m["motion"]),
        }
        reasons = {
            "semantic": "placeholder pixel statistics: the prompt is not read",
            "fidelity": f"smoothness {m['fidelity']:.3f}",
            "motion": f"steadiness {m['motion']:.3f}",
        }
        return format_answer(labels, reasons)

    def answer_pairwise(self, a: Video, b: Video) -> str:
        ma, mb = measure(a.frames), measure(b.frames)
        verdicts, reasons = {}, {}
        for d in DIMENSIONS:
            diff = ma[d] - mb[d]
            verdicts[d] = "Tie" if abs(diff) < TIE else ("A" if diff > 0 else "B")
            reasons[d] = f"{ma[d]:.3f} vs {mb[d]:.3f}"
        return format_answer(verdicts, reasons)
