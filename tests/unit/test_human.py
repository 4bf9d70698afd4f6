"""Tests of vipo.critics.human."""

import json

import pytest

from vipo.errors import UserError


def test_conflicting_human_labels_name_both_lines(tmp_path, capsys):
    from vipo.critics.human import HumanCritic

    good = {"semantic": "Good", "fidelity": "Good", "motion": "Good"}
    rows = [
        {"video": "a.mp4", "labels": good},
        {"video": "b.mp4", "labels": good},
        {"video": "a.mp4", "labels": dict(good, motion="Bad")},
    ]
    path = tmp_path / "labels.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(
        UserError,
        match=r"labels.jsonl:3: conflicts with line 1: two different annotations of "
        r"video 'a.mp4'",
    ):
        HumanCritic(path)
    verdicts = {"semantic": "A", "fidelity": "Tie", "motion": "B"}
    pairs = [
        {"a": "a.mp4", "b": "b.mp4", "verdicts": verdicts},
        {"b": "a.mp4", "a": "b.mp4", "verdicts": {"semantic": "B", "fidelity": "Tie", "motion": "A"}},
        {"a": "a.mp4", "b": "b.mp4", "verdicts": dict(verdicts, motion="A")},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows[:2] + pairs))
    with pytest.raises(UserError, match=r"labels.jsonl:5: conflicts with line 3"):  # line 4 agrees, swapped
        HumanCritic(path)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows[:2] * 2 + pairs[:2]))  # repeated, same answers
    assert len(HumanCritic(path).point) == 2
