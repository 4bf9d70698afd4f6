"""Tests of vipo.data.folders: a folder of videos read through its metadata.jsonl, and each video decoded or why not."""

import json

import numpy as np
import pytest

from vipo.data.folders import folder_samples, read_checked
from vipo.errors import UserError
from vipo.io.video import write_mp4


def _folder(root, rows, files=("a.mp4", "b.mp4", "c.mp4")):
    root.mkdir(parents=True, exist_ok=True)
    for name in files:
        write_mp4(root / name, np.zeros((3, 16, 16, 3), np.uint8), upscale_to=16)
    (root / "metadata.jsonl").write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return root


def test_samples_keep_their_line_and_one_prompt_is_one_group(tmp_path):
    root = _folder(
        tmp_path / "v",
        [
            {"file_name": "a.mp4", "prompt": "p"},
            "",
            {"file_name": "b.mp4", "prompt": "q"},
            {"file_name": "c.mp4", "prompt": "p"},
        ],
    )
    got = folder_samples(root)
    assert [(s["id"], s["prompt_id"], s["line"]) for s in got] == [("a.mp4", 0, 1), ("b.mp4", 1, 3), ("c.mp4", 0, 4)]
    assert got[0] == {"id": "a.mp4", "prompt_id": 0, "prompt": "p", "file_name": "a.mp4", "line": 1}


@pytest.mark.parametrize(
    "rows, message",
    [
        (None, r"v: no metadata.jsonl \(one JSON object per line with file_name and prompt\)$"),
        ([], r"metadata.jsonl: no videos listed$"),
        ([{"file_name": "a.mp4"}], r"metadata.jsonl:1: expected a JSON object with file_name and prompt$"),
        (
            [{"file_name": "a.mp4", "prompt": "p"}, {"file_name": "x.mp4", "prompt": "p"}],
            r"metadata.jsonl:2: x.mp4: file not found$",
        ),
        ([{"file_name": "../a.mp4", "prompt": "p"}], r"metadata.jsonl:1: file_name: '../a.mp4'"),
        (["not json"], r"metadata.jsonl:1"),
    ],
)
def test_a_bad_folder_is_one_line_naming_file_and_line(tmp_path, rows, message):
    root = tmp_path / "v"
    if rows is None:
        root.mkdir()
    else:
        _folder(root, rows)
    with pytest.raises(UserError, match=message) as e:
        folder_samples(root)
    assert "\n" not in str(e.value)


def test_read_checked_gives_frames_or_the_reason(tmp_path):
    root = _folder(tmp_path / "v", [{"file_name": "a.mp4", "prompt": "p"}], files=("a.mp4",))
    frames = read_checked(root / "a.mp4")
    assert isinstance(frames, np.ndarray) and frames.shape == (3, 16, 16, 3)
    assert read_checked(root / "a.mp4", frames=3).shape[0] == 3
    assert read_checked(root / "a.mp4", frames=5) == "3 frames, 5 expected"
    (root / "bad.mp4").write_bytes(b"not a video")
    why = read_checked(root / "bad.mp4")
    assert isinstance(why, str) and why.startswith("unreadable video (InvalidDataError:")
