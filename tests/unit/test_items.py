"""Tests of vipo.annotate.items."""

from annotate_helpers import make_folder

from vipo.annotate.items import folder_items


def test_items_of_a_folder(tmp_path):
    root = make_folder(tmp_path / "d")
    items = folder_items(root)
    pairs = [i for i in items if i.task == "pairwise"]
    assert [p.videos for p in pairs] == [
        ("clip-0.mp4", "clip-1.mp4"),
        ("clip-0.mp4", "clip-2.mp4"),
        ("clip-1.mp4", "clip-2.mp4"),
        ("clip-3.mp4", "clip-4.mp4"),
    ]
    assert len([i for i in items if i.task == "pointwise"]) == 5
    few = [i for i in folder_items(root, "pairwise", pairs_per_prompt=1, seed=3)]
    assert len(few) == 2 and few == folder_items(root, "pairwise", pairs_per_prompt=1, seed=3)
