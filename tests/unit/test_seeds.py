"""Tests of vipo.seeds: deterministic, disjoint training and evaluation seeds."""

import hashlib

from vipo import seeds


def _sha(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def test_seeds_are_the_first_8_bytes_of_sha256_of_their_named_parts():
    # pinned values: run folders resume by these seeds, so they never change between versions
    assert seeds.sample_seed(0, 1, 2, 3) == _sha("sample/0/1/2/3") % 2**31 == 396238753
    assert seeds.eval_seed(0, "indist", 0) == 2**31 + _sha("eval/0/indist/0") % 2**31 == 3716092525
    assert seeds.stream_seed("noise", 0, 1) == _sha("stream/noise/0/1") % 2**31 == 1555035654


def test_training_and_evaluation_seeds_never_meet():
    train = {seeds.sample_seed(s, r, p, i) for s in range(3) for r in range(3) for p in range(20) for i in range(4)}
    evals = {seeds.eval_seed(f, split, i) for f in range(3) for split in ("indist", "heldout") for i in range(200)}
    assert len(train) == 3 * 3 * 20 * 4 and len(evals) == 3 * 2 * 200  # no collisions among these either
    assert all(0 <= s < 2**31 for s in train) and all(2**31 <= s < 2**32 for s in evals)


def test_every_part_of_a_seed_changes_it():
    base = seeds.sample_seed(0, 1, 2, 3)
    assert len({base, seeds.sample_seed(1, 1, 2, 3), seeds.sample_seed(0, 2, 2, 3), seeds.sample_seed(0, 1, 3, 3)}) == 4
    assert seeds.sample_seed(0, 1, 2, 4) != base and seeds.sample_seed(0, 1, 2, 3) == base
    assert seeds.eval_seed(0, "indist", 5) != seeds.eval_seed(0, "heldout", 5)
    assert seeds.stream_seed("noise", 1) != seeds.stream_seed("real", 1)
