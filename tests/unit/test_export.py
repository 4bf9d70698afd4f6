"""Tests of vipo.annotate.export."""

from annotate_helpers import PROMPTS, make_folder

from vipo.annotate.export import ExportOptions, write_export
from vipo.annotate.items import folder_items
from vipo.annotate.votes import Answer


def test_simulated_annotators_need_no_store(tmp_path):
    """What issue #17 does: answers made in code go through the same vote and export."""
    root = make_folder(tmp_path / "d", PROMPTS[:2])
    items = folder_items(root, "pointwise")
    answers = [
        Answer(
            it.id,
            f"sim{k}",
            "pointwise",
            {"semantic": "Good", "fidelity": "Bad", "motion": "Normal"},
            {"semantic": "ok"},
        )
        for it in items
        for k in range(3)
    ]
    summary = write_export(tmp_path / "o", root, items, answers, ExportOptions(min_annotators=3))
    assert summary["critic_train_records"] == 6 and summary["labels_rows"] == 2
    assert summary["agreement"]["pointwise"]["dimensions"]["semantic"]["percent_agreement"] == 1.0
