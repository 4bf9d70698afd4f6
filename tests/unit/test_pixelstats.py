"""critics.pixelstats: the placeholder critic built on pixel statistics prefers smooth, steady clips."""

import numpy as np


def test_metric_critic_prefers_smooth_steady_clips():
    from vipo.critics.base import Video
    from vipo.critics.pixelstats import PixelStatsCritic

    rng = np.random.default_rng(0)
    smooth = np.full((9, 32, 32, 3), 120, np.uint8)
    noisy = rng.integers(0, 256, (9, 32, 32, 3)).astype(np.uint8)
    critic = PixelStatsCritic()
    a, b = Video("anything", smooth), Video("anything", noisy)
    assert critic.pointwise(a).labels == {"semantic": "Normal", "fidelity": "Good", "motion": "Good"}
    assert critic.pointwise(b).labels["fidelity"] == "Bad" and critic.pointwise(b).overall < 0.5
    pair = critic.pairwise(a, b)
    assert pair.verdicts["semantic"] == "Tie" and pair.overall == "A"
    assert critic.pairwise(b, a).overall == "B"
