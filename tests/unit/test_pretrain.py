"""Tests of vipo.world.pretrain."""

import pytest


def test_pretrain_schedule_can_stop_part_way_through_a_longer_cosine():
    import math

    from vipo.config import PretrainConfig
    from vipo.errors import UserError
    from vipo.world.pretrain import _lr

    full = PretrainConfig(steps=5000, warmup=200, lr=1e-3)
    part = PretrainConfig(steps=4250, lr_decay_steps=5000, warmup=200, lr=1e-3)
    own = PretrainConfig(steps=4250, warmup=200, lr=1e-3)
    assert _lr(0, full) == _lr(0, part) == 1e-3 / 200
    for step in (200, 1000, 3000, 4249):
        assert _lr(step, part) == _lr(step, full)
    assert math.isclose(_lr(4250, own), 1e-4)  # its own schedule has decayed to the floor
    assert _lr(4249, part) > 1.4 * _lr(4249, own)  # stopped part-way: still above the floor
    longer = PretrainConfig(steps=6000, lr_decay_steps=5000, warmup=200, lr=1e-3)
    longer.validate()  # a tail past the schedule runs at its floor (the committed recipe's noisy-caption phase)
    assert _lr(4999, longer) == _lr(4999, full) and math.isclose(_lr(5500, longer), 1e-4)
    with pytest.raises(UserError, match="lr_decay_steps"):
        PretrainConfig(steps=4250, lr_decay_steps=100, warmup=200).validate()


def test_pretraining_resumes_from_its_safetensors_state_exactly(tmp_path):
    """Killed after step 2, run again: the same model as an uninterrupted run (the state is safetensors + JSON)."""
    import torch

    from vipo.config import PretrainConfig
    from vipo.world.pretrain import pretrain

    cfg = PretrainConfig(steps=3, batch_size=2, widths=[16, 32, 32], text_width=32, save_every=1, warmup=1, log_every=1)
    clean = pretrain(cfg, tmp_path / "clean", progress=False)

    def stop(step, ema):
        if step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pretrain(cfg, tmp_path / "run", progress=False, callback=stop)
    state = tmp_path / "run" / "state"
    assert {p.name for p in state.iterdir()} == {
        "COMPLETE",
        "state.json",
        "trainable.safetensors",
        "optimizer_rng.safetensors",
    }
    resumed = pretrain(cfg, tmp_path / "run", progress=False)
    for a, b in ((clean.unet, resumed.unet), (clean.text_encoder, resumed.text_encoder)):
        sa, sb = a.state_dict(), b.state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
