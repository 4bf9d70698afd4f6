"""Tests of vipo.critics.learn.componentnet (the learned world critic's network, version 4)."""

import math
import random

import numpy as np
import pytest
import torch
from learned_helpers import one_thread  # noqa: F401

from vipo.critics.learn import componentnet, components, worldnet
from vipo.world import grammar, render


def _clips(combos, seed=0):
    return np.stack(
        [render.random_clip(a, random.Random(seed + k), 64, 9) for k, a in enumerate(combos)]
    )  # uint8 [N, 9, 64, 64, 3]


def _net(clips, shows, threshold=90.0):
    net = componentnet.ComponentCriticNet(worldnet.NetConfig(hidden=16))
    net.threshold.fill_(threshold)
    feats, sil = net.read(clips)
    net.fit_prototypes(feats, sil, shows)
    return net, feats, sil


COMBOS = [
    grammar.Attributes("red", "circle", "left"),
    grammar.Attributes("red", "square", "right"),
    grammar.Attributes("blue", "triangle", "up"),
    grammar.Attributes("blue", "circle", "down"),
]


def test_prototypes_start_at_the_mean_of_the_clips_that_show_each_word():
    clips = _clips(COMBOS)
    shows = np.array([worldnet.attr_index(a) for a in COMBOS])
    shows[0, 2] = -1  # no clip is said to move left
    net, feats, sil = _net(clips, shows)
    colour = feats[:, components.INDEX["colour_r"] : components.INDEX["colour_b"] + 1]
    red, blue = worldnet.COLORS.index("red"), worldnet.COLORS.index("blue")
    assert torch.allclose(net.colours[red], colour[:2].mean(dim=0))
    assert torch.allclose(net.colours[blue], colour[2:].mean(dim=0))
    # the interior of a clean render is the palette colour
    assert torch.allclose(net.colours[red] * 255, torch.tensor([220.0, 40.0, 40.0]), atol=1.0)
    # no clip shows green or a left turn: their prototypes stay where they started (grey; no direction)
    assert torch.equal(net.colours[worldnet.COLORS.index("green")], torch.full((3,), 0.5))
    assert torch.equal(net.directions[worldnet.DIRECTIONS.index("left")], torch.zeros(2))
    # a direction word's vector is the mean travel of the clips showing it, normalized: right is +x, up is -y
    assert torch.allclose(net.directions[worldnet.DIRECTIONS.index("right")], torch.tensor([1.0, 0.0]), atol=0.02)
    assert torch.allclose(net.directions[worldnet.DIRECTIONS.index("up")], torch.tensor([0.0, -1.0]), atol=0.02)
    # a shape word's template: the mean silhouette over the frames of the clips showing it (one square clip here)
    square = torch.sigmoid(net.templates[worldnet.SHAPES.index("square")])
    assert torch.allclose(square, sil[1].mean(dim=0).clamp(0.02, 0.98), atol=1e-6)
    # standardization: the measurements' mean and spread over the clips given
    assert torch.allclose(net.feature_mean, feats.mean(dim=0))


def test_the_semantic_score_is_one_term_per_attribute_and_passes_count_whole_in_evaluation():
    clips = _clips(COMBOS)
    net, feats, sil = _net(clips, np.array([worldnet.attr_index(a) for a in COMBOS]))
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.3)

    def semantic(colour, shape, training):
        net.train(training)
        attrs = torch.tensor([[worldnet.COLORS.index(colour), worldnet.SHAPES.index(shape), 0]] * len(clips))
        with torch.no_grad():
            scores, shows, aux = net.heads_from(feats, sil, attrs)
        return scores[:, 0], aux, shows

    for training in (True, False):
        # asking another colour changes the score by the same amount whatever shape is asked: no term reads two
        # attributes, so an unseen combination of known words is scored by terms trained on each word
        d1 = semantic("red", "circle", training)[0] - semantic("blue", "circle", training)[0]
        d2 = semantic("red", "triangle", training)[0] - semantic("blue", "triangle", training)[0]
        assert torch.allclose(d1, d2, atol=1e-5)
    for training in (True, False):  # a pass counts whole, in training as in evaluation
        s, aux, shows = semantic("red", "circle", training)
        assert torch.allclose(s - aux["grade"], (aux["passes"] > 0).float().sum(dim=1))
    assert shows.shape == (len(clips), 13)
    # in training the count's gradient is the pass probability's (straight-through)
    net.train()
    attrs = torch.tensor([[0, 0, 0]] * len(clips))
    scores, _, aux = net.heads_from(feats, sil, attrs)
    logits = aux["passes"]
    logits.retain_grad()
    scores[:, 0].sum().backward()
    soft = torch.sigmoid(logits.detach())
    assert torch.allclose(logits.grad, soft * (1 - soft))


def test_the_label_noise_layer_by_hand():
    net = componentnet.ComponentCriticNet(worldnet.NetConfig(hidden=16))
    with torch.no_grad():
        net.label_noise.copy_(
            torch.logit(1.5 * torch.tensor([[0.1, 0.2, 0.0], [0.3, 0.0, 0.0]]).clamp_min(1e-9))
        )  # eta = 2/3 sigmoid
    p = torch.tensor([[[0.7, 0.2, 0.1], [0.7, 0.2, 0.1], [0.7, 0.2, 0.1]]])
    got = net.observed(p.log(), "pointwise").exp()[0]
    # eta 0.1: 0.9 p + 0.1 (1 - p) / 2
    assert torch.allclose(got[0], torch.tensor([0.645, 0.22, 0.135]), atol=1e-5)
    assert torch.allclose(got[1], torch.tensor([0.59, 0.24, 0.17]), atol=1e-5)  # eta 0.2: 0.8 p + 0.1 (1 - p)
    assert torch.allclose(got[2], p[0, 2], atol=1e-5)  # eta 0: the critic's own
    assert torch.allclose(got.sum(dim=-1), torch.ones(3))
    # an explained vote (its reason states the measurement) is taken as it is
    both = torch.cat([p, p])
    got2 = net.observed(both.log(), "pointwise", torch.tensor([True, False])).exp()
    assert torch.allclose(got2[0], p[0]) and torch.allclose(got2[1, 0], torch.tensor([0.645, 0.22, 0.135]), atol=1e-5)
    got = net.observed(p.log(), "pairwise").exp()[0]
    assert torch.allclose(
        got[0], torch.tensor([0.7 * 0.7 + 0.15 * 0.3, 0.7 * 0.2 + 0.15 * 0.8, 0.7 * 0.1 + 0.15 * 0.9])
    )


def test_shown_values_leave_out_what_the_reasons_say_failed():
    """A prototype starts from clips that show its word: what the reasons say the clip shows, else the asked value
    unless the reasons say that attribute failed ("a loose circle" is no example of a circle)."""
    ex = worldnet.Example(
        np.zeros((3, 9, 64, 64, 3), np.uint8),
        np.array([[0, 0, 0], [1, 1, 1], [2, 2, 2]]),
        [],
        [],
        shows=np.array([[3, -1, -1], [-1, -1, -1], [-1, 2, -1]]),
        passes=np.array([[0, 0, 1], [-1, -1, -1], [1, 1, 0]]),
    )
    assert componentnet.shown_values(ex).tolist() == [[3, -1, 0], [1, 1, 1], [2, 2, -1]]


def test_reason_loss_by_hand():
    net = componentnet.ComponentCriticNet(worldnet.NetConfig(hidden=16))
    net.spread.copy_(torch.tensor([2.0, 0.5, 0.25]))
    scores = torch.tensor([[3.5, 0.7, 0.9], [1.2, 0.4, 0.8]])
    aux = {"grade": torch.tensor([0.5, 0.3]), "passes": torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])}
    stated = torch.tensor([[3.7, 0.6, float("nan")], [float("nan"), 0.5, 0.6]])
    passes = torch.tensor([[1, -1, 0], [-1, -1, -1]])
    loss, sq, n = net.reason_loss(scores, aux, stated, passes)
    # fidelity (0.1/0.5)^2 + (0.1/0.5)^2, motion (0.2/0.25)^2, semantic grade 0.5 against 3.7 - 3 = 0.7: (0.2/2)^2
    want = 0.04 + 0.04 + 0.64 + 0.01
    bce = math.log(1 + math.exp(-2.0)) + math.log(1 + math.exp(-1.0))  # pass 1 at logit 2, pass 0 at logit -1
    assert float(loss) == pytest.approx(want + bce, rel=1e-5)
    assert sq == pytest.approx(0.01 + 0.01 + 0.04 + 0.04, rel=1e-5) and n == 4


def test_a_version_4_critic_saves_and_loads_and_scores_the_same(tmp_path):
    clips = _clips(COMBOS)
    net, _, _ = _net(clips, np.array([worldnet.attr_index(a) for a in COMBOS]))
    attrs = np.array([worldnet.attr_index(a) for a in COMBOS])
    worldnet.save(net, tmp_path, {})
    back = worldnet.load(tmp_path)
    assert isinstance(back, componentnet.ComponentCriticNet) and back.cfg.version == 4
    assert float(back.threshold) == 90.0
    assert torch.equal(worldnet.scores(net, clips, attrs), worldnet.scores(back, clips, attrs))
    with pytest.raises(ValueError, match="reads 64x64 frames"):
        worldnet.scores(back, clips[:, :, :32, :32], attrs)


def _search_set(n_combos_repeats=2):
    combos = [
        grammar.Attributes(c, s, d) for c in ("red", "blue") for s in ("circle", "square") for d in grammar.DIRECTIONS
    ]
    clips = _clips(combos * n_combos_repeats)
    n = len(clips)
    attrs = np.array([worldnet.attr_index(a) for a in combos * n_combos_repeats])
    stated = np.full((n, 3), np.nan, dtype=np.float32)
    stated[:, 1] = np.linspace(0.2, 1.0, n)
    return clips, attrs, stated, np.full((n, 3), -1)


def test_choose_threshold_keeps_the_level_that_answers_held_out_pairs_best(monkeypatch):
    clips, attrs, stated, passes = _search_set()
    n, b = len(clips), worldnet.PAIR_INDEX["B"]
    # clips 0-1-2 chained by two pairs (dimension 0): one group of three; every other clip paired with one more
    # (dimension 1): 14 groups of two, and clip 31 alone
    pairs = [(0, 1, 0, b), (1, 2, 0, b)] + [(k, k + 1, 1, b) for k in range(3, n - 1, 2)]
    seen = {"held": [], "fit": [], "n": []}
    real_accuracy, real_calibrate = componentnet.pair_accuracy, componentnet.calibrate_ties
    fake = iter([0.5, 0.9, 0.6, 0.7] + [0.9, 0.5, 0.6, 0.7] + [0.7] * 4)  # per level, in THRESHOLD_FRACTIONS order

    def accuracy(net, scores, rows):
        seen["held"].append(rows)
        seen["n"].append(len(scores))
        real_accuracy(net, scores, rows)  # runs on the real rows (indices in range)
        return next(fake)

    def calibrate(net, scores, rows):
        seen["fit"].append(rows)
        return real_calibrate(net, scores, rows)

    monkeypatch.setattr(componentnet, "pair_accuracy", accuracy)
    monkeypatch.setattr(componentnet, "calibrate_ties", calibrate)
    cfg = worldnet.NetConfig(hidden=16)
    otsu = worldnet.otsu_threshold(worldnet.brightness_histogram(clips)) * 255
    search = lambda: componentnet.choose_threshold(clips, attrs, stated, attrs, passes, cfg, steps=5, pairs=pairs)  # noqa: E731
    # the most held-out pairs answered wins, whatever the stated error says: two orders, two different levels
    level, found = search()
    assert level == pytest.approx(otsu * 0.8) and found[0.8]["pairwise_accuracy"] == 0.9
    assert all(math.isfinite(r["stated_error"]) for r in found.values())
    assert search()[0] == pytest.approx(otsu * 0.7)
    # equal accuracy: the smaller held-out stated error
    level, found = search()
    assert level == pytest.approx(otsu * min(found, key=lambda f: found[f]["stated_error"]))
    # every clip is read (32 < SEARCH_CLIPS); whole groups are held out, listed first: no pair straddles the split,
    # and the chain's two pairs are on one side together; the split is the same at every level and every call
    assert set(seen["n"]) == {n}
    held, fit = seen["held"][0], seen["fit"][0]
    n_held = 1 + max(max(a, b) for a, b, _, _ in held)
    assert all(a < n_held and b < n_held for a, b, _, _ in held) and all(
        a >= n_held and b >= n_held for a, b, _, _ in fit
    )
    assert len(held) + len(fit) == len(pairs) and sum(d == 0 for *_, d, _ in held) in (0, 2)
    assert all(rows == held for rows in seen["held"]) and all(rows == fit for rows in seen["fit"])


def test_choose_threshold_with_too_few_groups_holds_clips_out_one_by_one(monkeypatch):
    clips, attrs, stated, passes = _search_set()
    cfg, b = worldnet.NetConfig(hidden=16), worldnet.PAIR_INDEX["B"]
    seen = {"held": [], "fit": []}
    real_accuracy, real_calibrate = componentnet.pair_accuracy, componentnet.calibrate_ties

    def accuracy(net, scores, rows):
        seen["held"].append(rows)
        return real_accuracy(net, scores, rows)

    def calibrate(net, scores, rows):
        seen["fit"].append(rows)
        return real_calibrate(net, scores, rows)

    monkeypatch.setattr(componentnet, "pair_accuracy", accuracy)
    monkeypatch.setattr(componentnet, "calibrate_ties", calibrate)
    otsu = worldnet.otsu_threshold(worldnet.brightness_histogram(clips)) * 255

    def best(found):
        return min(found, key=lambda f: (-np.nan_to_num(found[f]["pairwise_accuracy"]), found[f]["stated_error"]))

    # every clip in one chain: one group (before, all of it was held out, nothing was left to fit and the fit
    # raised); now clips are held out one by one, and a pair counts where both its clips fall on one side
    chain = [(k, k + 1, 1, b) for k in range(len(clips) - 1)]
    level, found = componentnet.choose_threshold(clips, attrs, stated, attrs, passes, cfg, steps=5, pairs=chain)
    assert set(found) == set(componentnet.THRESHOLD_FRACTIONS)
    assert all(math.isfinite(r["stated_error"]) for r in found.values())
    assert level == pytest.approx(otsu * best(found))
    # 32 clips, a fifth held out one by one: local indices 0-5 held, 6-31 fitted; a pair straddling them is neither
    held, fit = seen["held"][0], seen["fit"][0]
    assert all(a < 6 and b < 6 for a, b, _, _ in held) and all(a >= 6 and b >= 6 for a, b, _, _ in fit)
    assert len(held) + len(fit) < len(chain)
    # every level starts from the same weights and is judged on the same split: at one level, one result
    assert componentnet.choose_threshold(clips, attrs, stated, attrs, passes, cfg, steps=5, pairs=chain)[1] == found
    # no pairs: the held-out stated error alone decides
    level, found = componentnet.choose_threshold(clips, attrs, stated, attrs, passes, cfg, steps=5)
    assert all(math.isnan(r["pairwise_accuracy"]) for r in found.values())
    assert level == pytest.approx(otsu * min(found, key=lambda f: found[f]["stated_error"]))
    # nothing stated: Otsu's threshold itself
    assert componentnet.choose_threshold(clips, attrs, stated * np.nan, attrs, passes, cfg) == (otsu, {})


def test_sigterm_stops_the_threshold_search_too():
    """The foreground search fits before training starts; a `kill` there must not wait for it to end."""
    from vipo import faults

    combos = [grammar.Attributes("red", "circle", d) for d in grammar.DIRECTIONS]
    clips = _clips(combos * 3)
    attrs = np.array([worldnet.attr_index(a) for a in combos * 3])
    stated = np.full((len(clips), 3), 0.5, dtype=np.float32)
    faults._term = True
    try:
        with pytest.raises(faults.Terminated, match="critic train"):
            componentnet.choose_threshold(
                clips, attrs, stated, attrs, np.full((len(clips), 3), -1), worldnet.NetConfig()
            )
    finally:
        faults._term = False
