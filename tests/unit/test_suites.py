"""Training and evaluation prompts never overlap: one file split (seeded), two files checked, VBench's extra split."""

import pytest
from suite_helpers import PROMPTS, _cfg, _file

from vipo import seeds
from vipo.data import suites
from vipo.errors import UserError


def test_one_file_is_split_the_same_way_every_time(tmp_path):
    f = _file(tmp_path / "p.txt", ["# a suite"] + PROMPTS + ["A red kite over a beach, at dawn!"])  # a duplicate
    train, held = suites.split_heldout(
        [(i + 2, t) for i, t in enumerate(PROMPTS)] + [(12, PROMPTS[0].upper())], 0.3, seed=0
    )
    assert len(held) == 3 and len(train) == 7  # 10 distinct, round(0.3 * 10) held out
    assert not {t for _, t in train} & {t for _, t in held}
    again = [(i + 2, t) for i, t in enumerate(PROMPTS)]
    assert suites.split_heldout(again, 0.3, seed=0)[1] == held and suites.split_heldout(again, 0.3, 1)[1] != held
    p = suites.resolve(_cfg(prompts={"source": f}, eval={"heldout_fraction": 0.3}))  # eval.prompts auto = the file
    assert p.heldout_of == f and len(p.splits["heldout"]) == 3 and len(p.train) == 7
    keys = {t.lower().strip("!") for _, t in p.train}
    assert not keys & {t.lower() for t in p.splits["heldout"]}
    # a tiny fraction still holds one out, and one prompt always stays to train on
    assert len(suites.split_heldout([(1, "a"), (2, "b")], 0.01, 0)[1]) == 1
    assert len(suites.split_heldout([(1, "a"), (2, "b")], 0.99, 0)[0]) == 1
    with pytest.raises(UserError, match="1 distinct prompt"):
        suites.split_heldout([(1, "a cat"), (2, "A cat.")], 0.5, 0, "p.txt")


def test_an_evaluation_prompt_that_is_trained_on_is_refused(tmp_path):
    train = _file(tmp_path / "train.txt", PROMPTS[:6])
    held = _file(tmp_path / "held.txt", PROMPTS[6:])
    bench = _file(tmp_path / "vbench.txt", ["a dog running", PROMPTS[2].upper() + "."])
    p = suites.resolve(_cfg(prompts={"source": train}, eval={"prompts": held}))
    assert p.splits == {"heldout": PROMPTS[6:]} and len(p.train) == 6 and p.extra == {}
    bad = _file(tmp_path / "bad.txt", ["a dog running", PROMPTS[4]])
    with pytest.raises(UserError) as e:
        suites.resolve(_cfg(prompts={"source": train}, eval={"prompts": bad}))
    assert str(e.value).startswith(f"{bad}:2: evaluation prompt {PROMPTS[4]!r} is also a training prompt ({train}:5)")
    with pytest.raises(UserError, match=r"vbench.txt:2: evaluation prompt .* is also a training prompt .*train.txt:3"):
        suites.resolve(_cfg(prompts={"source": train}, eval={"prompts": held, "vbench": bench}))
    # the world trains on every phrasing of its in-distribution combinations; its held-out ones may be evaluated
    world = _file(tmp_path / "w.txt", ["a green triangle moving right", "A red circle moving left"])
    with pytest.raises(UserError, match="w.txt:2: .* in-distribution combination of the world"):
        suites.resolve(_cfg(eval={"prompts": world}))


def test_rows_cycle_over_a_splits_prompts_with_fixed_eval_seeds():
    rows = suites.rows({"heldout": ["a", "b"], "vbench": ["c"]}, 3, seed=7)
    assert [(r["file_name"], r["prompt"]) for r in rows] == [
        ("heldout-000.mp4", "a"),
        ("heldout-001.mp4", "b"),
        ("heldout-002.mp4", "a"),
        ("vbench-000.mp4", "c"),
        ("vbench-001.mp4", "c"),
        ("vbench-002.mp4", "c"),
    ]
    assert all(r["seed"] == seeds.eval_seed(7, r["split"], int(r["file_name"][-7:-4])) >= seeds.SPAN for r in rows)
