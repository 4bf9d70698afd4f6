"""Tests of vipo.critics.learn.components: every measurement of the tracker checked by hand on exact pixels."""

import random

import numpy as np
import pytest

from vipo.critics.learn import components
from vipo.world import grammar, render


def _square_clip(side: int = 64, size: int = 6, frames: int = 9) -> np.ndarray:
    """A pure red ``size`` px square moving 1 px a frame to the right (top-left corner at (4 + t, 10))."""
    clip = np.zeros((frames, side, side, 3), dtype=np.uint8)
    for t in range(frames):
        clip[t, 10 : 10 + size, 4 + t : 4 + t + size, 0] = 255
    return clip


def test_a_moving_square_measured_by_hand():
    clip = _square_clip()
    clip[3, 50:52, 50:52] = 200  # a 2x2 stray blob in frame 3: clutter, and lit away from the square
    clip[5, 60, 2] = (40, 0, 0)  # one faint pixel in frame 5: above a quarter of the level (32), below a half (64)
    feats, sil = components.measure(clip, 128.0)
    f = dict(zip(components.FEATURES, feats))
    assert f["detected"] == 1.0
    # travel: 8 px over the clip in frame sides, nothing vertical; a straight constant-speed path
    assert f["travel_x"] == pytest.approx(8 / 64) and f["travel_y"] == pytest.approx(0.0, abs=1e-12)
    assert f["path_rms"] == pytest.approx(0.0, abs=1e-9) and f["log_path_rms"] == pytest.approx(np.log(1e-4))
    assert f["area"] == pytest.approx(36 / 64**2) and f["area_variation"] == pytest.approx(0.0)
    # interior colour: the square eroded by one pixel is pure red
    assert (f["colour_r"], f["colour_g"], f["colour_b"]) == pytest.approx((1.0, 0.0, 0.0))
    assert f["colour_variation"] == pytest.approx(0.0)
    # clutter: 4 px beside a 36 px object in one frame of nine
    assert f["clutter"] == pytest.approx(4 / 36 / 9)
    # faint: outside the square dilated twice (10 x 10 = 100 px), the blob's 4 px in frame 3 and 1 px in frame 5;
    # at half the level the faint pixel is not lit
    assert f["faint_quarter"] == pytest.approx((4 / (4096 - 100) + 1 / (4096 - 100)) / 9)
    assert f["faint_eighth"] == f["faint_quarter"] and f["faint_half"] == pytest.approx(4 / (4096 - 100) / 9)
    assert f["box_side"] == pytest.approx(6 / 64) and f["box_log_aspect"] == 0.0 and f["box_fill"] == 1.0
    # normalized central moments of an n x n block of unit pixels: eta20 = (n^2 - 1) / (12 n^2), odd ones 0
    assert f["eta20"] == pytest.approx(35 / 432) and f["eta02"] == pytest.approx(35 / 432)
    assert max(abs(f[k]) for k in ("eta11", "eta30", "eta03", "eta21", "eta12")) < 1e-12
    assert sil.shape == (9, components.GRID, components.GRID) and (sil == 1.0).all()  # a square fills its box


def test_the_path_rms_of_a_bobbing_square_by_hand():
    clip = np.zeros((9, 64, 64, 3), dtype=np.uint8)
    for t in range(9):
        y = 10 + t % 2  # 1 px down every other frame
        clip[t, y : y + 6, 4 + t : 10 + t] = 255
    f = dict(zip(components.FEATURES, components.measure(clip, 128.0)[0]))
    # y = 0,1,0,...,0: slope 0, mean 4/9, residuals -4/9 (5x) and 5/9 (4x): sqrt(20 / 81) px
    assert f["travel_y"] == pytest.approx(0.0, abs=1e-12)
    assert f["path_rms"] == pytest.approx((20 / 81) ** 0.5 / 64)
    assert f["colour_variation"] == pytest.approx(0.0)


def test_frames_without_an_object_and_a_blank_clip():
    clip = _square_clip()
    clip[[2, 3, 5, 6]] = 0  # the square missing in four frames of nine
    f = dict(zip(components.FEATURES, components.measure(clip, 128.0)[0]))
    assert f["detected"] == pytest.approx(5 / 9)
    # the path is fitted at the frames' own times: still 1 px a frame, 8 px over the clip, straight
    assert f["travel_x"] == pytest.approx(8 / 64) and f["path_rms"] == pytest.approx(0.0, abs=1e-9)
    blank = np.zeros((9, 64, 64, 3), dtype=np.uint8)
    blank[4, 30, 30] = 20  # one faint pixel, nothing at the level
    feats, sil = components.measure(blank, 128.0)
    f = dict(zip(components.FEATURES, feats))
    assert f["detected"] == 0 and f["faint_eighth"] == pytest.approx(1 / 4096 / 9) and f["faint_quarter"] == 0
    assert all(v == 0 for k, v in f.items() if not k.startswith("faint")) and (sil == 0).all()
    # a single pixel is an object too; one frame with it gives no path
    dot = np.zeros((9, 64, 64, 3), dtype=np.uint8)
    dot[0, 5, 5] = 255
    f = dict(zip(components.FEATURES, components.measure(dot, 128.0)[0]))
    assert f["detected"] == pytest.approx(1 / 9) and f["area"] == pytest.approx(1 / 4096) and f["travel_x"] == 0
    assert f["colour_r"] == 1.0  # its erosion is empty: the colour of the whole blob
    with pytest.raises(ValueError, match=r"expected frames \[F, S, S, 3\]"):
        components.measure(blank[..., :2], 128.0)


def test_silhouettes_tell_the_world_shapes_apart():
    """The silhouette in its bounding box: a square fills it, a circle leaves its corners, the world's triangle (apex
    up) is narrow at the top and full at the bottom."""
    sil = {}
    for shape in grammar.SHAPES:
        clip = render.render(
            grammar.Attributes("white", shape, "right"), render.ClipGeometry(0.3, 0.5, 0.4, 0.3), side=64
        )
        sil[shape] = components.measure(clip, 128.0)[1].mean(axis=0)
    assert sil["square"].mean() > 0.97
    corners = sil["circle"][[0, 0, -1, -1], [0, -1, 0, -1]]
    assert corners.max() < 0.1 and sil["circle"][components.GRID // 2, :].min() > 0.9
    assert sil["triangle"][1, :].mean() < 0.25 and sil["triangle"][-2, :].mean() > 0.9
    assert sil["triangle"][:, 0].mean() < 0.2  # the left edge is touched only at the base


def test_measure_many_stacks_and_handles_none():
    clips = np.stack([_square_clip(), np.zeros((9, 64, 64, 3), np.uint8)])
    feats, sil = components.measure_many(clips, 128.0)
    assert feats.shape == (2, len(components.FEATURES)) and feats.dtype == np.float32
    assert sil.shape == (2, 9, components.GRID, components.GRID)
    assert feats[0, components.INDEX["detected"]] == 1 and feats[1, components.INDEX["detected"]] == 0
    empty_f, empty_s = components.measure_many(np.zeros((0, 9, 64, 64, 3), np.uint8), 128.0)
    assert empty_f.shape == (0, len(components.FEATURES)) and empty_s.shape == (0, 9, components.GRID, components.GRID)


def test_a_world_render_travels_its_geometry():
    """A clean render's path is straight and travels what its geometry says (within half a pixel)."""
    a = grammar.Attributes("green", "circle", "down")
    geom = render.random_geometry("down", random.Random(3))
    f = dict(zip(components.FEATURES, components.measure(render.render(a, geom, side=64), 90.0)[0]))
    assert f["travel_x"] == pytest.approx(0.0, abs=0.5 / 64)
    assert f["travel_y"] == pytest.approx(geom.travel, abs=0.5 / 64)
    assert f["path_rms"] < 0.5 / 64
