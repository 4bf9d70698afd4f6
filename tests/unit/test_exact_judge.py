"""Tests of vipo.world.exact_judge."""

import random

import numpy as np

from vipo.io.video import read_mp4, write_mp4
from vipo.world import exact_judge, grammar, render


def test_judge_passes_every_ground_truth_clip_and_only_its_own_target():
    rng = random.Random(7)
    for a in grammar.ALL:
        clip = render.random_clip(a, rng, 32, 9)
        m = exact_judge.measure(clip)
        s = exact_judge.score(m, a)
        assert s.passed, (a, m)
        assert s.fidelity > 0.85 and s.motion > 0.9
        for other in grammar.ALL:
            if other != a:
                assert not exact_judge.score(m, other).passed


def test_judge_reads_mp4_files(tmp_path):
    rng = random.Random(3)
    for a in grammar.ALL[::7]:
        clip = render.random_clip(a, rng, 32, 9)
        write_mp4(tmp_path / "x.mp4", clip)
        frames = read_mp4(tmp_path / "x.mp4")
        assert frames.shape == (9, 128, 128, 3)
        assert exact_judge.judge_clip(frames, a).passed


def _clip(a, rng):
    return render.random_clip(a, rng, 32, 9)


def test_judge_rejects_broken_clips():
    rng = random.Random(0)
    a = grammar.Attributes("red", "circle", "left")
    full = np.zeros((9, 32, 32, 3), np.uint8)
    full[:] = grammar.COLORS["red"]
    assert not exact_judge.judge_clip(full, a).passed and exact_judge.judge_clip(full, a).fidelity == 0
    black = np.zeros_like(full)
    assert not exact_judge.judge_clip(black, a).passed
    static = np.repeat(_clip(a, rng)[:1], 9, axis=0)
    s = exact_judge.judge_clip(static, a)
    assert s.color_ok and s.shape_ok and not s.direction_ok
    reversed_ = _clip(a, rng)[::-1].copy()
    assert not exact_judge.judge_clip(reversed_, a).direction_ok
    noisy = _clip(a, rng).astype(np.int16) + np.random.default_rng(0).integers(0, 80, (9, 32, 32, 3))
    s = exact_judge.judge_clip(np.clip(noisy, 0, 255).astype(np.uint8), a)
    assert s.fidelity < 0.5
    # a flickering clip (shape missing in one frame) fails
    flicker = _clip(a, rng)
    flicker[4] = 0
    assert not exact_judge.judge_clip(flicker, a).passed
    # jittery motion scores lower than smooth motion
    smooth = _clip(a, rng)
    jitter = smooth.copy()
    jitter[3] = np.roll(smooth[3], 3, axis=0)
    assert exact_judge.judge_clip(jitter, a).motion < exact_judge.judge_clip(smooth, a).motion


def test_graded_scores_order_samples():
    rng = random.Random(1)
    a = grammar.Attributes("blue", "square", "up")
    good = _clip(a, rng)
    wrong_color = _clip(grammar.Attributes("green", "square", "up"), rng)
    assert exact_judge.judge_clip(good, a).semantic > exact_judge.judge_clip(wrong_color, a).semantic
