"""Helpers shared by unit tests of several modules (critic-training records and their clips)."""

import random

from vipo.io.video import write_mp4
from vipo.world import grammar, render


def clip(path, prompt="a red circle moving left", seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    write_mp4(path, render.random_clip(grammar.parse(prompt), random.Random(seed), 32, 9))


#: a voted pointwise critic-training record (the layout `vipo annotate export` writes), with its video at
#: ``videos/a.mp4``
GOOD = {
    "id": "x#semantic",
    "task": "pointwise",
    "dimension": "semantic",
    "prompt": "a red circle moving left",
    "videos": ["videos/a.mp4"],
    "question": "Q",
    "verdict": "Good",
    "votes": {"Good": 2, "Bad": 1},
    "reasons": ["right colour"],
    "annotators": 3,
    "split": "train",
}
