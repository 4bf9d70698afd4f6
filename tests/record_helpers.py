"""Helpers shared by unit tests of several modules (from test_critic_data.py)."""

import random

from vipo.io.video import write_mp4
from vipo.world import grammar, render


def clip(path, prompt="a red circle moving left", seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    write_mp4(path, render.random_clip(grammar.parse(prompt), random.Random(seed), 32, 9))
