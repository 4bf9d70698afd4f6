"""Tests of vipo.models.world."""

import pytest
import torch

from vipo.models import load_model
from vipo.world import grammar


def test_committed_world_model_generates():
    model = load_model("world")
    cond = model.encode_prompts([grammar.INDIST[0].prompt()])
    frames = model.decode(model.sample(cond, model.encode_prompts([""]), [0], num_steps=2, guidance=3.0))
    assert frames.shape == (1, 9, 32, 32, 3)


def test_timestep_window_draws_only_from_its_part_of_the_schedule(tiny):
    total = tiny.scheduler.config.num_train_timesteps
    g = torch.Generator().manual_seed(0)
    t = tiny.sample_timesteps(4000, g, (0.8, 1.0))
    assert int(t.min()) >= int(0.8 * total) and int(t.max()) == total - 1
    # roughly uniform inside the window: both halves are drawn
    assert (t < 0.9 * total).float().mean().item() == pytest.approx(0.5, abs=0.05)
    # the full window is the family's own density (30% from the top tenth, the rest uniform)
    full = tiny.sample_timesteps(4000, torch.Generator().manual_seed(0), (0.0, 1.0))
    default = tiny.sample_timesteps(4000, torch.Generator().manual_seed(0))
    assert torch.equal(full, default)
    assert (default >= 0.9 * total).float().mean().item() == pytest.approx(0.37, abs=0.04)
