"""Tests of vipo.stages.judge."""

from __future__ import annotations

import json

import pytest
from cli_helpers import _clips

from vipo import config
from vipo.cli import main
from vipo.critics import critic_class
from vipo.critics.options import OpenAIOptions
from vipo.errors import UserError
from vipo.stages.judge import make_critic


def test_make_critic_builds_by_name_with_the_critics_own_options(tmp_path):
    assert type(make_critic("world")).__name__ == "WorldCritic"
    critic = make_critic(
        config.JudgeConfig(critic="openai", base_url="http://h/v1/", model="m", frames=3, concurrency=7)
    )
    assert type(critic.cfg) is OpenAIOptions  # only its own fields, picked out of the flat judge config
    assert (critic.cfg.frames, critic.cfg.concurrency, critic.url) == (3, 7, "http://h/v1/chat/completions")
    assert not hasattr(critic.cfg, "adapter") and not hasattr(critic.cfg, "dino")
    ens = make_critic(
        config.JudgeConfig(critic="ensemble", combine="mean", members=[{"critic": "world"}, {"critic": "pixelstats"}])
    )
    assert [m.name for m in ens.members] == ["world", "pixelstats"] and ens.combine == "mean"


def test_a_critics_earlier_name_still_makes_it():
    """``metric`` was pixelstats' name: recipes, --set lines and ensemble members that use it keep working."""
    assert config.JudgeConfig(critic="metric").critic == "pixelstats"
    assert critic_class("metric") is critic_class("pixelstats")
    ens = make_critic(config.JudgeConfig(critic="ensemble", members=[{"critic": "metric"}]))
    assert [m.name for m in ens.members] == ["pixelstats"]
    assert type(make_critic("metric")).__name__ == "PixelStatsCritic"
    assert "[judge: pixelstats] The pixelstats critic" in config.describe_critic("metric")  # --critic metric --help


def test_a_folder_judged_under_a_critics_earlier_name_is_judged_on_under_its_new_one(tmp_path):
    folder = _clips(tmp_path / "clips")
    out = tmp_path / "j.jsonl"
    assert main(["judge", str(folder), "--critic", "metric", "--out", str(out), "--quiet"]) == 0
    record = out.with_name(out.name + ".provenance.json")
    stored = json.loads(record.read_text())
    stored["judge"]["critic"] = "metric"  # as a vipo before the rename recorded it
    record.write_text(json.dumps(stored))
    assert main(["judge", str(folder), "--critic", "pixelstats", "--out", str(out), "--quiet"]) == 0  # not refused
    assert main(["judge", str(folder), "--critic", "world", "--out", str(out), "--quiet"]) == 2  # another critic is
    assert json.loads(record.read_text())["judge"]["critic"] == "metric"  # the refused run wrote nothing


def test_an_unknown_critic_is_one_line_naming_the_known_ones():
    for make in (critic_class, lambda n: config.JudgeConfig(critic=n), make_critic):
        with pytest.raises(UserError) as e:
            make("gpt")
        msg = str(e.value)
        assert "unknown critic 'gpt'" in msg and "world, pixelstats, vlm, openai" in msg and "\n" not in msg
