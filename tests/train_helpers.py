"""Helpers shared by unit tests of several modules (training batches and errors)."""

import random

import numpy as np
import pytest
import torch

from vipo import losses
from vipo.models.world import WorldModel
from vipo.world import grammar, render


@pytest.fixture()
def tiny():
    return WorldModel.fresh(widths=(16, 32, 32), text_width=32, seed=0)


def _batch(model, n=4, seed=0):
    rng = random.Random(seed)
    attrs = [grammar.INDIST[i * 7] for i in range(n)]
    w = model.encode_video(np.stack([render.random_clip(a, rng) for a in attrs]))
    lclips = np.stack(
        [
            render.random_clip(grammar.Attributes(a.color, a.shape, "up" if a.direction != "up" else "down"), rng)
            for a in attrs
        ]
    )
    l_ = model.encode_video(lclips)
    with torch.no_grad():
        cond = model.encode_prompts([a.prompt() for a in attrs])
    return w, l_, cond


def _errors(model, x, cond, noise, t):
    pred, target = model.predict_and_target(x, cond, noise, t)
    return losses.per_sample_error(pred, target)
