"""Tests of vipo.data.prompts."""

import json
import logging

import pytest
from cli_helpers import one_line
from hypothesis import given, settings
from hypothesis import strategies as st

from vipo.cli import main
from vipo.data import prompts as data_prompts
from vipo.data.prompts import MAX_CHARS, parse_prompts
from vipo.errors import UserError


@pytest.mark.parametrize(
    "data, expect",
    [
        (b"a red circle moving left\n\n# only comments\n", None),
        (b"", "no prompts"),
        (b"# nothing\n   \n", "no prompts"),
        (b"a red circle\nblue \xff square\n", ":2: not UTF-8"),
        (b"fine\nbad \x00 nul\n", ":2: control character"),
    ],
)
def test_prompt_files(tmp_path, tiny_model_dir, capsys, data, expect):
    path = tmp_path / "prompts.txt"
    path.write_bytes(data)
    rc = main(
        [
            "generate",
            "--model",
            str(tiny_model_dir),
            "--prompts",
            str(path),
            "--out",
            str(tmp_path / "g"),
            "--steps",
            "1",
            "--samples-per-prompt",
            "1",
            "--quiet",
        ]
    )
    if expect is None:
        assert rc == 0
        return
    assert rc == 2
    err = one_line(capsys)
    assert str(path) in err and expect in err


def test_long_prompts_are_cut_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        ((n, text),) = parse_prompts(b"\n" + b"x" * (MAX_CHARS + 50) + b"\n", "p.txt")
    assert n == 2 and len(text) == MAX_CHARS and "p.txt:2" in caplog.text


def test_prompts_longer_than_the_text_encoder_warn(tiny_model_dir, caplog):
    from vipo.data.prompts import warn_long
    from vipo.models import load_model

    model = load_model(str(tiny_model_dir))
    with caplog.at_level(logging.WARNING):
        warn_long(model, ["a red circle " * 40])
    assert "the text encoder reads the first" in caplog.text


lines = st.lists(st.text(st.characters(blacklist_categories=("Cs",)), max_size=40), max_size=8)


@settings(max_examples=200, deadline=None)
@given(lines)
def test_prompt_parser_properties(rows):
    data = "\n".join(rows).encode("utf-8")
    try:
        out = parse_prompts(data, "p.txt")
    except UserError as e:
        assert str(e).startswith("p.txt")
        return
    text_lines = data.decode("utf-8").removeprefix("\ufeff").splitlines()
    assert out and [n for n, _ in out] == sorted({n for n, _ in out})
    for n, prompt in out:
        assert prompt and prompt == prompt.strip() and not prompt.startswith("#") and len(prompt) <= MAX_CHARS
        assert text_lines[n - 1].strip().startswith(prompt)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_prompt_parser_refuses_any_bytes_with_a_user_error(data):
    try:
        parse_prompts(data, "p.txt")
    except UserError as e:
        assert str(e).startswith("p.txt")


def test_jsonl_bad_lines_reported_with_line_numbers(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text(
        '{"prompt": "a cat runs"}\n{"prompt": \n\n{"text": "a dog sits"}\n{"id": 3}\n"a bare string"\n'
        '{"prompt": "bad \\u0007 bell"}\n'
    )
    rows, problems = data_prompts.import_prompts(f)
    assert rows == [(1, "a cat runs"), (4, "a dog sits"), (6, "a bare string")]
    assert [p.split(": ")[0] for p in problems] == [f"{f}:2", f"{f}:5", f"{f}:7"]
    assert "not JSON" in problems[0] and "control character" in problems[2]


def test_csv_and_vidprom(tmp_path):
    f = tmp_path / "VidProM_unique.csv"
    f.write_text('uuid,prompt,nsfw\n1,"a red car, at night",0.1\n2,"unterminated,0.2\n')
    rows, problems = data_prompts.import_prompts(f, "vidprom")
    assert rows == [(2, "a red car, at night")] and problems and problems[0].startswith(f"{f}:")
    g = tmp_path / "short.csv"
    g.write_text("uuid,prompt\n1,a boat\n2\n3,a train\n")
    rows, problems = data_prompts.import_prompts(g)
    assert [t for _, t in rows] == ["a boat", "a train"] and problems == [f"{g}:3: 1 fields, the header has 2"]
    with pytest.raises(UserError, match=":1: no .*column"):
        data_prompts.import_prompts(g, field="caption")


def test_json_and_vbench_suite(tmp_path):
    f = tmp_path / "VBench_full_info.json"
    f.write_text(
        json.dumps(
            [{"prompt_en": "a person is swimming", "dimension": ["human_action"]}, {"x": 1}, "a panda eating bamboo"]
        )
    )
    rows, problems = data_prompts.import_prompts(f, "vbench")
    assert [t for _, t in rows] == ["a person is swimming", "a panda eating bamboo"]
    assert problems == [f"{f}:item 2: no prompt/prompt_en/text/caption string"]
    bad = tmp_path / "bad.json"
    bad.write_text('[\n  "a",\n  oops\n]')
    with pytest.raises(UserError, match="bad.json:3: not JSON"):
        data_prompts.import_prompts(bad)
    assert (
        data_prompts.vbench_file_name("a cat", 4) == "a cat-4.mp4"
        and data_prompts.vbench_prompt("a-b cat-4.mp4") == "a-b cat"
    )
    assert data_prompts.vbench_prompt("nonumber.mp4") is None and data_prompts.VBENCH_SAMPLES == 5
    latin = tmp_path / "latin.txt"
    latin.write_bytes(b"ok\ncaf\xe9\n")
    with pytest.raises(UserError, match="latin.txt:2: not UTF-8"):
        data_prompts.import_prompts(latin)


def test_template_expansion_deterministic_per_seed(tmp_path, capsys):
    a, b, c = (
        data_prompts.build_suite(30, seed=1),
        data_prompts.build_suite(30, seed=1),
        data_prompts.build_suite(30, seed=2),
    )
    assert a == b and a != c and len(a) == 30
    assert all(4 <= len(p.split()) <= 60 for p in a) and len({data_prompts._key(p) for p in a}) == 30
    short = data_prompts.build_suite(10, seed=1, max_words=9)
    assert all(len(p.split()) <= 9 for p in short)
    assert main(["prompts", "build", "-n", "30", "--seed", "1", "--out", str(tmp_path / "s.txt")]) == 0
    assert (tmp_path / "s.txt").read_text().splitlines() == a


def test_dedupe_exact_and_near():
    got = data_prompts.dedupe(
        ["A cat runs on the beach.", "a cat  runs on the beach", "A cat runs on the beaches", "A dog sleeps in a barn"]
    )
    assert got == ["A cat runs on the beach.", "A dog sleeps in a barn"]
    assert len(data_prompts.dedupe(["A cat runs on the beach.", "A cat runs on the beaches"], near=1.0)) == 2


def test_import_cli_reports_bad_lines(tmp_path, capsys):
    f = tmp_path / "p.jsonl"
    f.write_text('{"prompt": "a cat"}\nnot json\n{"prompt": "A cat"}\n')
    assert main(["prompts", "import", str(f), "--out", str(tmp_path / "out.txt")]) == 0
    assert f"skipped {f}:2: not JSON" in capsys.readouterr().err
    assert (tmp_path / "out.txt").read_text() == "a cat\n"
    (tmp_path / "empty.jsonl").write_text("nope\n")
    assert main(["prompts", "import", str(tmp_path / "empty.jsonl"), "--out", str(tmp_path / "o2.txt")]) == 2
