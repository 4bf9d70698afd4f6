"""Tests of vipo.io.provenance."""

import pytest
from cli_helpers import one_line

from vipo.cli import main
from vipo.errors import UserError


def test_world_render_refuses_other_prompts_and_force_renders_again(tmp_path, capsys):
    out = tmp_path / "r"
    assert (
        main(
            [
                "world",
                "render",
                "--out",
                str(out),
                "--prompt",
                "a red circle moving left",
                "--prompt",
                "a blue square moving up",
            ]
        )
        == 0
    )
    assert main(["world", "render", "--out", str(out), "--prompt", "a red circle moving left"]) == 2
    assert "prompts: ['a red circle moving left', 'a blue square moving up'] then" in one_line(capsys)
    assert main(["world", "render", "--out", str(out), "--prompt", "a red circle moving left", "--force"]) == 0
    assert sorted(p.name for p in out.glob("*.mp4")) == ["000.mp4"]  # the stale 001.mp4 is gone


def test_provenance_names_changes_and_force_starts_over_even_from_a_torn_record(tmp_path):
    from vipo.io import provenance

    path, calls = tmp_path / "provenance.json", []
    assert provenance.check(path, {"a": 1, "b": [1, 2]}, False, "changed ({changes})") == []
    assert provenance.check(path, {"a": 1, "b": [1, 2]}, False, "changed ({changes})") == []
    with pytest.raises(UserError, match=r"changed \(a: 1 then, 2 now; b: \[1, 2\] then, \[1\] now\)"):
        provenance.check(path, {"a": 2, "b": [1]}, False, "changed ({changes})")
    path.write_text("{torn")
    with pytest.raises(UserError, match="unreadable record"):
        provenance.check(path, {"a": 2}, False, "changed ({changes})")
    assert provenance.check(path, {"a": 2}, True, "x", start_over=lambda: calls.append(1))
    assert calls == [1] and provenance.read(path) == {"a": 2}
