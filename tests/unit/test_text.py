"""Tests of vipo.io.text."""

from cli_helpers import _clips, one_line

from vipo.cli import main


def test_non_utf8_metadata_and_labels_name_file_and_line(tmp_path, capsys):
    root = _clips(tmp_path / "v")
    meta = root / "metadata.jsonl"
    good = meta.read_bytes()
    meta.write_bytes(good + b'{"file_name": "a.mp4", "prompt": "caf\xe9"}\n')
    for verb in (["judge", str(root), "--out", str(tmp_path / "j.jsonl")], ["eval", str(root)]):
        assert main([*verb, "--quiet"]) == 2
        assert f"{meta}:3: not UTF-8 text (byte 0xe9)" in one_line(capsys)
    meta.write_bytes(good)
    labels = tmp_path / "labels.jsonl"
    labels.write_bytes(
        b'{"video": "a.mp4", "labels": {"semantic": "Good", "fidelity": "Good", "motion": "Bad"}}\n\xff\n'
    )
    assert (
        main(
            [
                "judge",
                str(root),
                "--out",
                str(tmp_path / "j.jsonl"),
                "--critic",
                "human",
                "--labels",
                str(labels),
                "--quiet",
            ]
        )
        == 2
    )
    assert f"{labels}:2: not UTF-8 text (byte 0xff)" in one_line(capsys)
    assert not (tmp_path / "j.jsonl").exists()
