"""Tests of vipo.critics.learn.data."""

import json

import pytest
from record_helpers import GOOD, clip

from vipo.cli import main
from vipo.critics.learn import data as learn_data
from vipo.errors import UserError


def write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_records_round_trip_and_checks(tmp_path):
    clip(tmp_path / "videos" / "a.mp4")
    pair = dict(
        GOOD,
        id="y#motion",
        task="pairwise",
        dimension="motion",
        videos=["videos/a.mp4", "videos/a.mp4"],
        verdict="Tie",
        votes={"Tie": 3},
        split="test",
    )
    path = write(tmp_path / "d.jsonl", [GOOD, "", pair])
    recs = learn_data.read_records(path)
    assert [r.id for r in recs] == ["x#semantic", "y#motion"] and recs[0].paths() == [tmp_path / "videos" / "a.mp4"]
    assert [r.id for r in learn_data.read_records(path, split="test")] == ["y#motion"]
    assert learn_data.summary(recs) == {
        "train": {"pointwise": {"semantic": {"Good": 1}}},
        "test": {"pairwise": {"motion": {"Tie": 1}}},
    }
    learn_data.write_records(tmp_path / "again.jsonl", recs)
    assert (tmp_path / "again.jsonl").read_text() == "".join(json.dumps(r.as_dict()) + "\n" for r in recs)


@pytest.mark.parametrize(
    "change, expect",
    [
        ({"verdict": "A"}, ":1: verdict: 'A' is not one of Good/Normal/Bad (pointwise)"),
        ({"task": "ranking"}, ":1: task: 'ranking' is not one of pointwise/pairwise"),
        ({"dimension": "beauty"}, ":1: dimension: 'beauty' is not one of semantic/fidelity/motion"),
        ({"videos": ["videos/a.mp4", "videos/a.mp4"]}, ":1: videos: a pointwise record needs a list of 1 path(s)"),
        ({"videos": ["../a.mp4"]}, "a.mp4: file not found"),
        ({"videos": ["/etc/a.mp4"]}, ":1: videos: '/etc/a.mp4' must be a path relative"),
        ({"videos": ["videos/missing.mp4"]}, "videos/missing.mp4: file not found"),
        ({"votes": {"Good": -1}}, ":1: votes: expected counts per verdict"),
        ({"reasons": "fine"}, ":1: reasons: expected a list of texts"),
        ({"annotators": "3"}, ":1: annotators: expected a count"),
        ({"split": "dev"}, ":1: split: 'dev' is not one of train/test"),
        ({"prompt": " "}, ":1: prompt: must not be empty"),
        ({"question": None}, ":1: question: expected text"),
    ],
)
def test_bad_records_fail_with_file_line_and_field(tmp_path, change, expect):
    clip(tmp_path / "videos" / "a.mp4")
    path = write(tmp_path / "d.jsonl", [dict(GOOD, **change)])
    with pytest.raises(UserError, match="^" + str(path)) as e:
        learn_data.read_records(path)
    assert expect in str(e.value) and "\n" not in str(e.value)


def test_missing_key_duplicate_id_and_not_json(tmp_path, capsys):
    clip(tmp_path / "videos" / "a.mp4")
    bad = {k: v for k, v in GOOD.items() if k != "votes"}
    for rows, expect in (
        ([bad], ":1: votes: missing"),
        ([GOOD, GOOD], ":2: id: 'x#semantic' already used on line 1"),
        (["{nope"], ":1: not JSON"),
        ([], ": no records"),
    ):
        path = write(tmp_path / "d.jsonl", rows)
        with pytest.raises(UserError) as e:
            learn_data.read_records(path)
        assert str(e.value).startswith(str(path)) and expect in str(e.value)
    # through the CLI: exit 2, one line
    assert main(["critic", "train", str(tmp_path / "d.jsonl"), "--out", str(tmp_path / "c")]) == 2
    assert capsys.readouterr().err.strip().endswith("no records")
