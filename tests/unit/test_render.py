"""Tests of vipo.world.render."""

import random

import numpy as np
import pytest

from vipo.world import grammar, render


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
