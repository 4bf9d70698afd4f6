"""vipo.io.text: UTF-8 decoding with a BOM dropped, bad bytes refused naming file and line, the JSONL walk."""

import pytest
from cli_helpers import _clips, one_line

from vipo.cli import main
from vipo.errors import UserError
from vipo.io.text import decode_utf8, jsonl_objects, numbered_lines, read_utf8


def test_decode_drops_one_leading_bom_and_keeps_the_rest():
    # U+00E9 is 0xC3 0xA9 in UTF-8; the BOM U+FEFF is 0xEF 0xBB 0xBF
    assert decode_utf8(b"\xef\xbb\xbfcaf\xc3\xa9\n", "p.txt") == "caf\u00e9\n"
    assert decode_utf8("caf\u00e9".encode(), "p.txt") == "caf\u00e9"
    # only a leading BOM is dropped, and only one
    assert decode_utf8(b"a\xef\xbb\xbf", "p.txt") == "a\ufeff"
    assert decode_utf8(b"\xef\xbb\xbf\xef\xbb\xbfx", "p.txt") == "\ufeffx"


def test_non_utf8_byte_is_refused_naming_file_line_and_byte():
    # latin-1 e-acute (0xE9) on the third line; a later valid line does not matter
    data = b"one\ntwo\ncaf\xe9\nfour\n"
    with pytest.raises(UserError) as e:
        decode_utf8(data, "prompts.txt")
    assert str(e.value) == "prompts.txt:3: not UTF-8 text (byte 0xe9); save the file as UTF-8"
    # a bad first byte is line 1
    with pytest.raises(UserError, match=r"^x:1: not UTF-8 text \(byte 0xff\)"):
        decode_utf8(b"\xffabc", "x")


def test_read_utf8_names_the_path(tmp_path):
    good = tmp_path / "good.txt"
    good.write_bytes(b"\xef\xbb\xbfhello\r\nworld")
    assert read_utf8(good) == "hello\r\nworld"
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"ok\n\x80")
    with pytest.raises(UserError, match=rf"^{bad}:2: not UTF-8 text \(byte 0x80\)"):
        read_utf8(str(bad))


def test_numbered_lines_skips_blank_lines_but_keeps_their_numbers(tmp_path):
    p = tmp_path / "p.txt"
    p.write_text("first\n\n   \nfourth\r\n\t\nsixth", encoding="utf-8")
    assert list(numbered_lines(p)) == [(1, "first"), (4, "fourth"), (6, "sixth")]
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    assert list(numbered_lines(empty)) == []


def test_jsonl_objects_yields_line_numbers_and_objects(tmp_path):
    p = tmp_path / "m.jsonl"
    p.write_text('{"a": 1}\n\n{"b": [2, 3]}\n', encoding="utf-8")
    assert list(jsonl_objects(p)) == [(1, {"a": 1}), (3, {"b": [2, 3]})]


def test_jsonl_invalid_json_names_path_and_line(tmp_path):
    p = tmp_path / "m.jsonl"
    p.write_text('{"a": 1}\n\n{"b": \n', encoding="utf-8")
    rows = jsonl_objects(p)
    assert next(rows) == (1, {"a": 1})  # lazy: the good line comes back before the bad one is read
    with pytest.raises(UserError) as e:
        next(rows)
    assert str(e.value) == f"{p}:3: invalid JSON (Expecting value)"


@pytest.mark.parametrize("line", ["[1, 2]", "3", '"text"', "null"])
def test_jsonl_line_that_is_not_an_object_is_refused(tmp_path, line):
    p = tmp_path / "m.jsonl"
    p.write_text(f'{{"ok": true}}\n{line}\n', encoding="utf-8")
    with pytest.raises(UserError) as e:
        list(jsonl_objects(p))
    assert str(e.value) == f"{p}:2: expected a JSON object"


def test_jsonl_where_callback_words_the_location(tmp_path):
    p = tmp_path / "m.jsonl"
    p.write_text("\n\nnot json\n", encoding="utf-8")
    with pytest.raises(UserError) as e:
        list(jsonl_objects(p, where=lambda n: f"labels row {n}"))
    assert str(e.value).startswith("labels row 3: invalid JSON (")


def test_jsonl_non_utf8_is_refused_before_parsing(tmp_path):
    p = tmp_path / "m.jsonl"
    p.write_bytes(b'{"a": 1}\n{"b": "\xe9"}\n')
    with pytest.raises(UserError, match=rf"^{p}:2: not UTF-8 text \(byte 0xe9\)"):
        list(jsonl_objects(p))


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
