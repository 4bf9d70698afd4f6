"""The embedded world: grammar, split, renderer constraints, and the judge's exactness (strict, not lenient)."""

import random

import numpy as np
import pytest

from vipo.io.video import read_mp4, write_mp4
from vipo.world import exact_judge, grammar, render


def test_grammar_has_72_combinations_and_a_fixed_split():
    assert len(grammar.ALL) == 72 and len(set(grammar.ALL)) == 72
    assert len(grammar.HELDOUT) == 12 and len(grammar.INDIST) == 60
    assert not set(grammar.INDIST) & set(grammar.HELDOUT)
    # every attribute value still occurs in training
    for field, values in (("color", grammar.COLORS), ("shape", grammar.SHAPES), ("direction", grammar.DIRECTIONS)):
        assert {getattr(a, field) for a in grammar.INDIST} == set(values)


def test_every_phrasing_parses_back():
    assert len(grammar.TEMPLATES) >= 4
    assert grammar.Attributes("red", "circle", "left").prompt() == "a red circle moving left"
    for a in grammar.ALL:
        for i in range(len(grammar.TEMPLATES)):
            assert grammar.parse(a.prompt(i)) == a
    assert grammar.parse("  A Red   CIRCLE moving left ") == grammar.Attributes("red", "circle", "left")
    assert grammar.parse("a purple circle moving left") is None


@pytest.mark.parametrize("seed", range(3))
def test_render_respects_the_world_rules(seed):
    rng = random.Random(seed)
    for a in grammar.ALL:
        g = render.random_geometry(a.direction, rng)
        clip = render.render(a, g, 32, 9)
        assert clip.shape == (9, 32, 32, 3) and clip.dtype == np.uint8
        assert 0.35 <= g.size <= 0.45 + 1e-9
        assert 0.30 <= g.travel <= 0.55 + 1e-9
        # fully inside in every frame: the bounding box of the first and last positions stays in [0, 1]
        dx, dy = grammar.DIRECTION_VECTORS[a.direction]
        for cx, cy in ((g.cx, g.cy), (g.cx + dx * g.travel, g.cy + dy * g.travel)):
            assert g.size / 2 - 1e-9 <= cx <= 1 - g.size / 2 + 1e-9 and g.size / 2 - 1e-9 <= cy <= 1 - g.size / 2 + 1e-9
        # one shape on pure black: every non-black pixel is a (partial-coverage) multiple of the palette colour
        fg = clip.reshape(-1, 3)[clip.reshape(-1, 3).max(1) > 0].astype(float)
        col = np.array(grammar.COLORS[a.color], float)
        assert np.allclose(fg / fg.max(1, keepdims=True), col / col.max(), atol=0.05)
        # the shape's interior is exactly the palette colour
        peak = clip.reshape(-1, 3)[clip.reshape(-1, 3).sum(1).argmax()]
        assert tuple(int(v) for v in peak) == grammar.COLORS[a.color]


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


def test_caption_noise_swaps_each_attribute_at_its_rate_and_never_names_a_heldout_combination():
    rng = random.Random(0)
    assert all(grammar.mislabel(a, rng, 0.0) == a for a in grammar.INDIST)
    n, q = 6000, 0.5
    wrong = {"color": 0, "shape": 0, "direction": 0}
    for i in range(n):
        true = grammar.INDIST[i % len(grammar.INDIST)]
        cap = grammar.mislabel(true, rng, q)
        assert cap in grammar.INDIST
        for k in wrong:
            wrong[k] += getattr(cap, k) != getattr(true, k)
    # each attribute is swapped with probability q (redrawing held-out captions shifts it by at most a few points)
    for k, v in wrong.items():
        assert abs(v / n - q) < 0.05, (k, v / n)


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
