"""Real videos for the NLL regularizer (IPO's VidGen-1M term). For the embedded world they are ground-truth renders
of in-distribution prompts, drawn from a seeded stream, so a resumed run draws the same ones."""
from __future__ import annotations

import random

import numpy as np

from ..world import grammar, render


class WorldRealVideos:
    def __init__(self, frames: int, side: int):
        self.frames, self.side = frames, side

    def draw(self, n: int, seed: int) -> tuple[list[str], np.ndarray]:
        rng = random.Random(seed)
        attrs = [rng.choice(grammar.INDIST) for _ in range(n)]
        clips = np.stack([render.random_clip(a, rng, self.side, self.frames) for a in attrs])
        return [grammar.random_prompt(a, rng) for a in attrs], clips
