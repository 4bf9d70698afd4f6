"""Tests of vipo.critics.learn.worldnet."""

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from learned_helpers import one_thread  # noqa: F401

from vipo.world import grammar, render

REPO = Path(__file__).resolve().parents[2]


def test_worldnet_clip_preparation_and_augmentation():
    from vipo.critics.learn import worldnet

    frames = np.random.default_rng(0).integers(0, 255, (9, 32, 32, 3), dtype=np.uint8)
    assert (worldnet.to_clip(frames.repeat(4, 1).repeat(4, 2)) == frames).all()  # the mp4's 4x upscale, averaged back
    assert worldnet.to_clip(np.concatenate([frames, frames])).shape == (9, 32, 32, 3)
    with pytest.raises(ValueError, match="9 frames"):
        worldnet.to_clip(frames[:5])
    clips = frames[None].copy()
    attrs = np.array([worldnet.attr_index(grammar.Attributes("red", "circle", "left"))])
    known = {(0, 0, d) for d in range(4)}
    shows = attrs.copy()
    rng = random.Random(0)
    seen = set()
    for _ in range(20):
        c, a, w = worldnet._augment(clips, attrs, shows, known, rng)
        assert (w == a).all()  # what the clip shows turns with what is asked
        direction = worldnet.DIRECTIONS[a[0, 2]]
        views = {
            (m, r): (frames[::-1] if r else frames)[:, :, ::-1] if m else (frames[::-1] if r else frames)
            for m in (False, True)
            for r in (False, True)
        }
        ((mirrored, reversed_),) = [k for k, v in views.items() if (c[0] == v).all()]
        # left -> right under a mirror or a reversal, back to left under both
        assert direction == ("right" if mirrored != reversed_ else "left")
        seen.add((mirrored, reversed_))
    assert len(seen) == 4
    # never into a combination the training data does not have
    c, a, w = worldnet._augment(clips, attrs, shows, {(0, 0, 2)}, random.Random(0))
    assert (a == attrs).all() and (c == clips).all() and (w == shows).all()


def test_a_critic_saved_by_another_net_version_is_refused_in_one_line(tmp_path):
    from vipo.critics.learn import worldnet
    from vipo.errors import UserError

    worldnet.save(worldnet.WorldCriticNet(worldnet.NetConfig(width=4, keypoints=2, hidden=8)), tmp_path, {})
    meta = json.loads((tmp_path / "critic.json").read_text())
    assert worldnet.load(tmp_path).cfg.version == 3  # convolutions and the soft tracker
    meta["net"].pop("version")  # what the first version wrote
    (tmp_path / "critic.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match="net version 1 .*train the critic again"):
        worldnet.load(tmp_path)


def test_a_version_2_critic_loads_without_the_tracker_and_scores_as_before(tmp_path):
    from vipo.critics.learn import worldnet
    from vipo.errors import UserError

    # the committed version-2 critic (docs/results/world-learned-critic) scores two fixed renders exactly as the
    # code that trained it did (numbers from 351bb4b, before the tracker)
    net = worldnet.load(REPO / "docs/results/world-learned-critic/critic")
    assert net.cfg.tracker is False and net.cfg.input_side == net.cfg.side == 32
    asked = grammar.Attributes("red", "triangle", "up")
    clips = np.stack(
        [
            render.random_clip(asked, random.Random(7), 32, 9),
            render.random_clip(grammar.Attributes("blue", "square", "left"), random.Random(8), 32, 9),
        ]
    )
    got = worldnet.scores(net, clips, np.array([worldnet.attr_index(asked)] * 2))
    want = torch.tensor([[4.25501, 0.81254, 0.89372], [-7.77419, 0.96794, 0.96870]])
    assert torch.allclose(got, want, atol=1e-4)
    with pytest.raises(ValueError, match="reads 32x32 frames, got 64x64"):
        worldnet.scores(net, np.zeros((1, 9, 64, 64, 3), np.uint8), np.zeros((1, 3), np.int64))
    # weights that do not fit the network critic.json describes: one line, not a state-dict traceback
    worldnet.save(worldnet.WorldCriticNet(worldnet.NetConfig(width=4, keypoints=2, hidden=8)), tmp_path, {})
    meta = json.loads((tmp_path / "critic.json").read_text())
    meta["net"]["tracker"] = False
    (tmp_path / "critic.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match="weights do not fit the network critic.json describes"):
        worldnet.load(tmp_path)


def test_the_committed_version_3_critic_scores_as_the_code_that_trained_it():
    from vipo.critics.learn import worldnet

    # docs/results/world-critic-tracker/critic: the convolutions and the soft tracker (numbers from faa823a^, before
    # version 4; the same with version 4's code beside it)
    net = worldnet.load(REPO / "docs/results/world-critic-tracker/critic")
    assert isinstance(net, worldnet.WorldCriticNet) and net.cfg.version == 3 and net.cfg.input_side == 64
    asked = grammar.Attributes("red", "triangle", "up")
    clips = np.stack(
        [
            render.random_clip(asked, random.Random(7), 64, 9),
            render.random_clip(grammar.Attributes("blue", "square", "left"), random.Random(8), 64, 9),
        ]
    )
    got = worldnet.scores(net, clips, np.array([worldnet.attr_index(asked)] * 2))
    assert torch.allclose(got, torch.tensor([[3.7099, 0.8852, 1.1104], [-4.7240, 0.9763, 1.0956]]), atol=1e-3)


def _square_path(offsets: list[tuple[int, int]], side: int = 32, size: int = 6) -> np.ndarray:
    """A pure red ``size`` px square whose top-left corner is at ``offsets[t]`` in frame t: exact pixel values."""
    clip = np.zeros((len(offsets), side, side, 3), dtype=np.uint8)
    for t, (x, y) in enumerate(offsets):
        clip[t, y : y + size, x : x + size, 0] = 255
    return clip


def test_the_tracker_measures_a_path_by_hand():
    from vipo.critics.learn import worldnet

    steady = _square_path([(4 + t, 10) for t in range(9)])  # 1 px a frame to the right
    jumpy = _square_path([(4 + t, 10 + t % 2) for t in range(9)])  # the same, bobbing 1 px every other frame
    z = worldnet.track(torch.from_numpy(np.stack([steady, jumpy])).float() / 255, 0.5)
    f = dict(zip(worldnet.TRACK_FEATURES, z.T))
    # travel: 8 px over the clip, in frame sides; no vertical travel (the bobbing's slope is 0: ones at t = 1,3,5,7)
    assert torch.allclose(f["travel_x"], torch.tensor([8 / 32, 8 / 32]), atol=1e-4)
    assert torch.allclose(f["travel_y"], torch.tensor([0.0, 0.0]), atol=1e-4)
    # path RMS: 0 for the steady square; y = 0,1,0,...,0 has mean 4/9 and residuals -4/9 (5x) and 5/9 (4x):
    # sqrt((5 * 16 + 4 * 25) / 81 / 9) = sqrt(20 / 81) px = 0.4969 px
    assert f["path_rms"][0] < 1e-4
    assert abs(float(f["path_rms"][1]) - (20 / 81) ** 0.5 / 32) < 1e-4
    assert torch.allclose(f["area"], torch.tensor([36 / 1024] * 2), atol=1e-4)
    assert f["area_variation"].abs().max() < 1e-4 and f["colour_variation"].abs().max() < 1e-2
    assert torch.allclose(f["colour_r"], torch.ones(2), atol=1e-4) and f["colour_g"].abs().max() < 1e-4
    assert f["faint"].abs().max() < 1e-4 and f["log_aspect"].abs().max() < 1e-4
    # the bounding box: 6 px square, filled; eta20 of n x n unit pixels: n * 2 * (0.5^2 + 1.5^2 + 2.5^2) / n^4 =
    # (n^2 - 1) / (12 n^2) = 35 / 432; odd moments 0
    assert torch.allclose(f["box_width"], torch.tensor([6 / 32] * 2), atol=1e-4)
    assert torch.allclose(f["box_fill"], torch.ones(2), atol=1e-3) and f["box_log_aspect"].abs().max() < 1e-4
    assert torch.allclose(f["eta20"], torch.tensor([35 / 432] * 2), atol=1e-5)
    assert f["eta11"].abs().max() < 1e-5 and f["eta30"].abs().max() < 1e-5 and f["eta21"].abs().max() < 1e-5
    # and the same along y (the feature order is the stack's): spread_yy = 35/12 px^2 in frame sides^2
    assert torch.allclose(f["box_height"], torch.tensor([6 / 32] * 2), atol=1e-4)
    assert torch.allclose(f["eta02"], torch.tensor([35 / 432] * 2), atol=1e-5)
    assert torch.allclose(f["spread_xx"], torch.tensor([35 / 12 / 1024] * 2), atol=1e-6)
    assert torch.allclose(f["spread_yy"], torch.tensor([35 / 12 / 1024] * 2), atol=1e-6)
    assert torch.allclose(f["min_area"], f["area"]) and f["eta03"].abs().max() < 1e-5 and f["eta12"].abs().max() < 1e-5
    # fill: area / sqrt(spread_xx spread_yy) = 36 / (35 / 12) in pixels
    assert torch.allclose(f["fill"], torch.tensor([36 / (35 / 12)] * 2), atol=1e-3)


def test_otsu_threshold_splits_two_levels_in_the_middle_of_the_gap():
    from vipo.critics.learn import worldnet

    clips = np.full((2, 9, 8, 8, 3), 20, dtype=np.uint8)
    clips[:, :, :4] = 200
    # every level in the gap 20..199 separates the two equally well: the middle of the plateau, (20 + 199) / 2 + 0.5
    assert worldnet.otsu_threshold(worldnet.brightness_histogram(clips)) == pytest.approx(110 / 255)
    # on a clean render (black background, one pure square) the tracker at Otsu's threshold finds the square
    square = _square_path([(4 + t, 10) for t in range(9)])
    z = worldnet.track(
        torch.from_numpy(square[None]).float() / 255, worldnet.otsu_threshold(worldnet.brightness_histogram(square))
    )
    f = dict(zip(worldnet.TRACK_FEATURES, z.T))
    assert float(f["area"][0]) == pytest.approx(36 / 1024, abs=1e-4) and float(f["colour_r"][0]) > 0.999


@pytest.mark.parametrize("components", [True, False])
def test_sigterm_stops_critic_training_between_steps(components):
    """The CLI's SIGTERM handler only sets a flag: the training loop has to look at it (before, `kill` of a
    `vipo critic train` was ignored until the end). Both networks train through the same loop."""
    from vipo import faults
    from vipo.critics.learn import worldnet

    clips = np.zeros((4, 9, 64, 64, 3), np.uint8)
    attrs = np.zeros((4, 3), np.int64)
    ex = worldnet.Example(clips, attrs, [(i, 0, 2) for i in range(4)], [])
    epochs = []

    def term_after_first_epoch(_net, row):
        epochs.append(row["epoch"])
        faults._term = True

    try:
        with pytest.raises(faults.Terminated, match="critic train"):
            worldnet.train(
                ex,
                worldnet.TrainOptions(epochs=5, batch_clips=2),
                worldnet.NetConfig(width=4, keypoints=2, hidden=8, components=components),
                progress=False,
                on_epoch=term_after_first_epoch,
            )
    finally:
        faults._term = False
    assert epochs == [1]


def test_pair_accuracy_by_hand():
    from vipo.critics.learn import worldnet

    net = worldnet.WorldCriticNet(worldnet.NetConfig(width=4, keypoints=2, hidden=8, components=False))
    # dimension 0: clip 1 well above clip 0; 1: equal; 2: clip 1 below clip 0
    scores = torch.tensor([[0.0, 0.5, 1.0], [1.0, 0.5, 0.0]])
    tie, a, b = worldnet.PAIR_INDEX["Tie"], worldnet.PAIR_INDEX["A"], worldnet.PAIR_INDEX["B"]
    with torch.no_grad():
        net.pair_tie.fill_(1.0)
    # a difference of 1 x softplus(0) x 5 = 3.47 against a tie half-width of softplus(1) = 1.31: A or B; none: Tie
    # right: (1, 0) on 0 is A, (0, 1) on 1 is a Tie, (1, 0) on 2 is B; wrong: (0, 1) on 0 is B, not A
    assert worldnet.pair_accuracy(net, scores, [(1, 0, 0, a), (0, 1, 0, a), (0, 1, 1, tie), (1, 0, 2, b)]) == 0.75
    assert worldnet.pair_accuracy(net, scores, [(1, 0, 2, a)]) == 0.0  # the dimension asked, not another
    assert math.isnan(worldnet.pair_accuracy(net, scores, []))


def test_training_searches_the_level_on_the_explained_pairwise_votes_only(monkeypatch):
    """worldnet.train hands choose_threshold the pairs whose vote a reason explains, and trains at the level it
    returns."""
    from vipo.critics.learn import componentnet, worldnet

    clips = np.stack(
        [render.random_clip(grammar.Attributes("red", "circle", "left"), random.Random(k), 64, 9) for k in range(4)]
    )
    attrs = np.zeros((4, 3), np.int64)
    b = worldnet.PAIR_INDEX["B"]
    ex = worldnet.Example(clips, attrs, [(0, 0, 2)], [(0, 1, 1, b), (2, 3, 0, b), (1, 2, 2, b)])
    ex.pair_explained = [True, False, True]
    ex.stated[:, 1] = [0.2, 0.4, 0.6, 0.8]
    got = {}

    def search(clips_, attrs_, stated, shows, passes, cfg, seed=0, steps=400, pairs=()):
        got["pairs"] = list(pairs)
        return 77.0, {0.9: {"pairwise_accuracy": 1.0, "stated_error": 0.1}}

    monkeypatch.setattr(componentnet, "choose_threshold", search)
    net, _ = worldnet.train(ex, worldnet.TrainOptions(epochs=1, batch_clips=4), worldnet.NetConfig(hidden=8), False)
    assert got["pairs"] == [(0, 1, 1, b), (1, 2, 2, b)]
    assert float(net.threshold) == 77.0 and net.threshold_search[0.9]["pairwise_accuracy"] == 1.0


def test_calibrate_ties_widens_a_band_that_calls_close_pairs_apart():
    from vipo.critics.learn import worldnet

    net = worldnet.WorldCriticNet(worldnet.NetConfig(width=4, keypoints=2, hidden=8, components=False))
    scores = torch.tensor([[0.0] * 3, [0.1] * 3, [0.2] * 3, [1.0] * 3])
    tie, a, b = worldnet.PAIR_INDEX["Tie"], worldnet.PAIR_INDEX["A"], worldnet.PAIR_INDEX["B"]
    # semantic (dimension 0): pairs within 0.2 are ties, 0.8 or more apart are not; motion (2): no pairs
    pairs = [(0, 1, 0, tie), (0, 2, 0, tie), (1, 2, 0, tie), (0, 3, 0, b), (3, 1, 0, a), (3, 2, 1, a)]
    before_band = float(net.pair_tie.detach()[0])
    got = worldnet.calibrate_ties(net, scores, pairs)
    assert set(got) == {0, 1} and got[0][0] < 1.0 and got[0][1] == 1.0
    assert float(net.pair_tie.detach()[0]) > before_band  # the band widened
    lp = net.pairwise_logp(scores[[0, 0, 3]], scores[[2, 3, 1]])[:, 0]
    assert lp.argmax(dim=-1).tolist() == [tie, b, a]
    # a band that is already right is kept (fidelity: A for 1.0 vs 0.2 at the start)
    assert got[1] == (1.0, 1.0) and float(net.pair_tie.detach()[1]) == -1.0
