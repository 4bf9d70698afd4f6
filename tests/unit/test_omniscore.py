"""OmniScore's weight-free dimensions on rendered clips whose answers are known, and its way into pairs."""

import sys

import pytest

from vipo.critics import omniscore
from vipo.critics.base import Video
from vipo.data import pairs as data_pairs
from vipo.world import grammar, render

A = grammar.Attributes("red", "circle", "left")


def clip(travel):
    return render.render(A, render.ClipGeometry(0.7, 0.5, 0.4, travel), side=64, frames=9)


STATIC, SMOOTH = clip(0.0), clip(0.5)
FLICKER = STATIC.copy()
FLICKER[1::2] = 0  # the shape blinks off every other frame
JITTERY = SMOOTH[[0, 2, 1, 4, 3, 6, 5, 8, 7]]  # the same motion, jumping back and forth


def test_known_answers():
    assert omniscore.temporal_flickering(STATIC) == 1.0 and omniscore.motion_smoothness(STATIC) == 1.0
    assert omniscore.dynamic_degree(STATIC) == 0.0 and omniscore.dynamic_degree(SMOOTH) == 1.0
    assert omniscore.temporal_flickering(FLICKER) < omniscore.temporal_flickering(SMOOTH) < 1.0
    assert (
        omniscore.motion_smoothness(FLICKER)
        < omniscore.motion_smoothness(JITTERY)
        < omniscore.motion_smoothness(SMOOTH)
        < 1.0
    )
    norm = omniscore.normalized({"temporal_flickering": 1.0, "motion_smoothness": 0.706, "dynamic_degree": 1.0})
    assert norm == {"temporal_flickering": 1.0, "motion_smoothness": 0.0, "dynamic_degree": 1.0}
    # quality only (dynamic degree weighted 0.5), and (4 Q + S) / 5 once a semantic dimension is there
    assert omniscore.omniscore(norm) == pytest.approx((1 + 0 + 0.5) / 2.5)
    assert omniscore.omniscore(dict(norm, overall_consistency=1.0)) == pytest.approx((4 * 0.6 + 1) / 5)


def test_numpy_fallback_for_dynamic_degree(monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)  # as if OpenCV were not installed
    assert omniscore.dynamic_degree(STATIC) == 0.0 and omniscore.dynamic_degree(SMOOTH) == 1.0


def test_critic_ranks_and_plugs_into_pairs(caplog):
    c = omniscore.OmniScoreCritic()
    assert "subject_consistency" in caplog.text and "overall_consistency" in caplog.text  # skipped, named
    clips = {"smooth": SMOOTH, "jittery": JITTERY, "flicker": FLICKER}
    videos = {k: Video(A.prompt(), v) for k, v in clips.items()}
    pw = {k: c.pointwise(v) for k, v in videos.items()}
    assert pw["smooth"].overall > pw["jittery"].overall > pw["flicker"].overall
    assert pw["smooth"].labels["semantic"] == "Normal" and "omniscore: total=" in pw["smooth"].raw
    verdicts = {}
    for x in clips:
        for y in clips:
            if x != y:
                verdicts[(x, y)] = c.pairwise(videos[x], videos[y]).overall
    assert verdicts[("smooth", "flicker")] == "A" and verdicts[("flicker", "smooth")] == "B"
    scores = {k: p.overall for k, p in pw.items()}
    pairs, stats = data_pairs.build_pairs({0: list(clips)}, verdicts, scores, alpha=1.0)
    assert stats.inconsistent == 0 and pairs[0]["chosen"] == "smooth" and pairs[0]["rejected"] == "flicker"
    assert pairs[0]["gap"] == pytest.approx(scores["smooth"] - scores["flicker"]) and pairs[0]["weight"] == 1.0
