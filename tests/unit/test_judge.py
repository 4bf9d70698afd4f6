"""Tests of vipo.stages.judge."""

from __future__ import annotations

import pytest

from vipo import config
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


def test_an_unknown_critic_is_one_line_naming_the_known_ones():
    for make in (critic_class, lambda n: config.JudgeConfig(critic=n), make_critic):
        with pytest.raises(UserError) as e:
            make("gpt")
        msg = str(e.value)
        assert "unknown critic 'gpt'" in msg and "world, pixelstats, vlm, openai" in msg and "\n" not in msg
