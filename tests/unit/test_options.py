"""Tests of vipo.critics.options."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from vipo import config
from vipo.cli import main
from vipo.critics.options import OPTIONS, HumanOptions, OpenAIOptions, RewardOptions, VLMOptions
from vipo.errors import UserError


def test_an_api_key_pasted_as_the_variable_name_is_refused_unechoed(tmp_path, capsys):
    for key in ("sk-proj-4f9c2Ab8d1e0F7a6b5c4", "4f9c2ab8d1e0f7a6b5c4d3e2f1a0b9c8"):
        out = tmp_path / "run"
        assert (
            main(
                [
                    "run",
                    "--out",
                    str(out),
                    "--set",
                    "judge.critic=openai",
                    "--set",
                    "judge.base_url=http://h/v1",
                    "--set",
                    "judge.model=m",
                    "--set",
                    f"judge.api_key_env={key}",
                ]
            )
            == 2
        )
        err = capsys.readouterr().err
        assert "judge.api_key_env: expects the name of an environment variable" in err and key not in err
        assert not out.exists()


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: OpenAIOptions(image_format="gif"), "image_format must be png or jpeg, got 'gif'"),
        (lambda: OpenAIOptions(api_key_env="sk-not a name"), "api_key_env: expects the name of an environment"),
        (lambda: VLMOptions(frames=0), "frames must be > 0, got 0"),
        (lambda: VLMOptions(dtype="fp8"), "unknown dtype 'fp8'"),
        (lambda: RewardOptions(reward_thresholds=[0.5, -0.5]), "reward_thresholds must be [bad_below, good_from]"),
        (lambda: OpenAIOptions(model="m").require(), "the openai critic needs base_url and model"),
        (lambda: HumanOptions().require(), "the human critic needs labels"),
        (
            lambda: config.build(config.JudgeConfig, {"critic": "world", "frames": 0}, "judge"),
            "judge.frames must be > 0",
        ),
        (lambda: config.build(config.JudgeConfig, {"critic": "vlm"}, "judge"), "judge: the vlm critic needs model"),
        (lambda: config.JudgeConfig(critic="ensemble", members=[{"critic": "human"}]), "the human critic needs labels"),
    ],
)
def test_options_check_themselves_on_construction(make, message):
    with pytest.raises(UserError) as e:
        make()
    assert message in str(e.value) and "\n" not in str(e.value)


def test_judge_help_shows_the_chosen_critics_options_only(capsys):
    with pytest.raises(SystemExit) as e:
        main(["judge", "--critic", "openai", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out.split("the judge options common to every critic")[1]  # the epilog (not the flags)
    assert "[judge: openai]" in out and "  judge.base_url: ''\n      the endpoint's base URL" in out
    assert "judge.api_key_env" in out and "judge.frames: 16" in out and "judge.max_unparseable: 0.2" in out
    for other in ("judge.adapter", "judge.dino", "judge.reward_base", "judge.labels", "judge.members"):
        assert other not in out
    with pytest.raises(SystemExit):
        main(["judge", "--help"])
    out = capsys.readouterr().out.split("the judge options common to every critic")[1]
    assert "--critic X --help" in out and "  vlm: a local transformers image-text-to-text model" in out
    assert "judge.base_url" not in out
    assert main(["judge", "DIR", "--critic=gpt", "-h"]) == 2
    assert "unknown critic 'gpt' (known: world," in capsys.readouterr().err
    assert main(["config", "judge"]) == 0  # every critic's options, as before
    out = capsys.readouterr().out
    assert "judge.base_url: ''" in out and "judge.adapter: ''" in out and "judge.reward_tie_margin: 0.1" in out


def test_docs_list_each_critics_options():
    text = (Path(__file__).resolve().parents[2] / "docs" / "critics.md").read_text(encoding="utf-8")
    for name, cls in OPTIONS.items():
        keys = ", ".join(f"`{f.name}`" for f in dataclasses.fields(cls)) or "(none)"
        assert f"| `{name}` | `{cls.__name__}` | {keys} |" in text
