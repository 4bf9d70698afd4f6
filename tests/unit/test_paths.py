"""Tests of vipo.io.paths."""

import json
import os
import re

import pytest
from annotate_helpers import make_folder
from cli_helpers import one_line

from vipo.annotate.items import folder_items
from vipo.cli import main
from vipo.errors import UserError
from vipo.io.paths import OutsideFolder, confined


def test_confined_paths(tmp_path):
    root = make_folder(tmp_path / "d")
    (tmp_path / "secret.txt").write_text("no")
    os.symlink(tmp_path / "secret.txt", root / "out.mp4")
    os.symlink(root / "clip-0.mp4", root / "in.mp4")
    assert confined(root, "in.mp4") == (root / "clip-0.mp4").resolve()
    for bad in ("../secret.txt", "/etc/passwd", "out.mp4", "a/../../secret.txt", "~/x", "C:\\x.mp4"):
        with pytest.raises(OutsideFolder):
            confined(root, bad)
    meta = root / "metadata.jsonl"
    meta.write_text(json.dumps({"file_name": "../secret.txt", "prompt": "p"}) + "\n")
    with pytest.raises(UserError, match=r"metadata.jsonl:1: file_name.*'\.\.'"):
        folder_items(root)
    # the app refuses to serve such a folder, with one line and exit 2 (before binding anything)
    assert main(["annotate", "serve", str(root), "--port", "0"]) == 2
    meta.write_text(json.dumps({"file_name": "out.mp4", "prompt": "p"}) + "\n")
    assert main(["annotate", "serve", str(root), "--port", "0"]) == 2
    assert main(["annotate", "export", str(root), "--out", str(tmp_path / "o")]) == 2  # no database yet


def test_paths_in_user_files_stay_in_their_folder(tmp_path, tiny_model_dir, capsys):
    from vipo.data.real import read_dataset
    from vipo.io.paths import inside
    from vipo.models.policy import read_policy

    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    for entry, said in (
        ({"adapters": ["../../elsewhere"]}, "adapters[0]: '../../elsewhere': '..' is refused"),
        ({"adapters": [], "denoiser": "/etc"}, "denoiser: '/etc': absolute paths are refused"),
    ):
        (ckpt / "policy.json").write_text(json.dumps({"base": str(tiny_model_dir), **entry}))
        with pytest.raises(UserError, match=re.escape(said)):
            read_policy(ckpt)
    assert (
        main(
            [
                "generate",
                "--model",
                str(tiny_model_dir),
                "--lora",
                str(ckpt),
                "--prompt",
                "a red circle moving left",
                "--out",
                str(tmp_path / "g"),
                "--quiet",
            ]
        )
        == 2
    )
    assert "policy.json: denoiser" in one_line(capsys)
    labels = tmp_path / "labels.jsonl"
    labels.write_text(
        json.dumps({"video": "../x.mp4", "labels": {"semantic": "Good", "fidelity": "Good", "motion": "Good"}}) + "\n"
    )
    from vipo.critics.human import HumanCritic

    with pytest.raises(UserError, match=r"labels.jsonl:1: video: '../x.mp4': '..' is refused"):
        HumanCritic(labels)
    # real-video manifests: relative paths confined to the manifest's folder, absolute ones allowed (documented)
    data = tmp_path / "data"
    data.mkdir()
    (tmp_path / "v.mp4").write_bytes(b"x")
    manifest = data / "m.jsonl"
    manifest.write_text(json.dumps({"video": "../v.mp4", "caption": "c"}) + "\n")
    with pytest.raises(UserError, match=r"m.jsonl: line 1: video: '../v.mp4': '..' is refused"):
        read_dataset(manifest)
    manifest.write_text(json.dumps({"video": str(tmp_path / "v.mp4"), "caption": "c"}) + "\n")
    assert read_dataset(manifest)[0].video == tmp_path / "v.mp4"
    (data / "in.mp4").symlink_to(data / "m.jsonl")  # a symlink that stays inside is fine
    assert inside(data, "in.mp4", "x") == data / "in.mp4"
