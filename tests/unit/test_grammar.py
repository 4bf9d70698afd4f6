"""Tests of vipo.world.grammar."""

import random

from vipo.world import grammar


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
