"""Each critic owns its options (vipo/critics/options.py), is built by name from the registry, and the flat
``judge.*`` keys that recipes, ``--set`` lines and run folders' snapshots use keep meaning what they meant."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml

from vipo import config as C
from vipo.cli import main
from vipo.critics import CRITICS, critic_class
from vipo.critics.options import COMMON, OPTIONS, HumanOptions, OpenAIOptions, RewardOptions, VLMOptions
from vipo.errors import UserError
from vipo.stages.judge import make_critic
from vipo.train.state import config_hash

# -- the registry --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CRITICS))
def test_each_registered_critic_is_its_class_with_its_options(name):
    cls = critic_class(name)
    assert cls.name == name and cls.Options is OPTIONS[name]
    assert list(CRITICS) == list(OPTIONS) == list(C.CRITICS)


def test_make_critic_builds_by_name_with_the_critics_own_options(tmp_path):
    assert type(make_critic("world")).__name__ == "WorldCritic"
    critic = make_critic(C.JudgeConfig(critic="openai", base_url="http://h/v1/", model="m", frames=3, concurrency=7))
    assert type(critic.cfg) is OpenAIOptions  # only its own fields, picked out of the flat judge config
    assert (critic.cfg.frames, critic.cfg.concurrency, critic.url) == (3, 7, "http://h/v1/chat/completions")
    assert not hasattr(critic.cfg, "adapter") and not hasattr(critic.cfg, "dino")
    ens = make_critic(
        C.JudgeConfig(critic="ensemble", combine="mean", members=[{"critic": "world"}, {"critic": "pixelstats"}])
    )
    assert [m.name for m in ens.members] == ["world", "pixelstats"] and ens.combine == "mean"


def test_a_critics_earlier_name_still_makes_it():
    """``metric`` was pixelstats' name: recipes, --set lines and ensemble members that use it keep working."""
    assert C.JudgeConfig(critic="metric").critic == "pixelstats"
    assert critic_class("metric") is critic_class("pixelstats")
    ens = make_critic(C.JudgeConfig(critic="ensemble", members=[{"critic": "metric"}]))
    assert [m.name for m in ens.members] == ["pixelstats"]
    assert type(make_critic("metric")).__name__ == "PixelStatsCritic"


def test_an_unknown_critic_is_one_line_naming_the_known_ones():
    for make in (critic_class, lambda n: C.JudgeConfig(critic=n), make_critic):
        with pytest.raises(UserError) as e:
            make("gpt")
        msg = str(e.value)
        assert "unknown critic 'gpt'" in msg and "world, pixelstats, vlm, openai" in msg and "\n" not in msg


# -- the options: one definition each, checked where made --------------------------------------------------------


def test_the_flat_judge_config_is_the_union_of_the_critics_options():
    keys = [f.name for f in dataclasses.fields(C.JudgeConfig)]
    owned = {f.name for cls in [COMMON, *OPTIONS.values()] for f in dataclasses.fields(cls)}
    assert keys == list(C.JUDGE_KEYS) and set(keys) == owned
    docs = C.field_docs(C.JudgeConfig)
    assert "vlm: a local model folder" in docs["model"] and "openai: the served model name" in docs["model"]
    for cls in OPTIONS.values():  # every option a critic reads says what it is
        assert all(C.field_docs(cls).get(f.name) for f in dataclasses.fields(cls)), cls


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
        (lambda: C.build(C.JudgeConfig, {"critic": "world", "frames": 0}, "judge"), "judge.frames must be > 0"),
        (lambda: C.build(C.JudgeConfig, {"critic": "vlm"}, "judge"), "judge: the vlm critic needs model"),
        (lambda: C.JudgeConfig(critic="ensemble", members=[{"critic": "human"}]), "the human critic needs labels"),
    ],
)
def test_options_check_themselves_on_construction(make, message):
    with pytest.raises(UserError) as e:
        make()
    assert message in str(e.value) and "\n" not in str(e.value)


# -- vipo judge --critic X --help -----------------------------------------------------------------------------------


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


# -- old recipes and run folders keep working -----------------------------------------------------------------------

OLD_RECIPE = """
judge:
  critic: ensemble
  combine: mean
  frames: 8
  image_format: jpeg
  reward_thresholds: [-0.2, 0.3]
  dino: /models/dino
  members:
    - {critic: world}
    - {critic: openai, base_url: "http://127.0.0.1:8000/v1", model: qwen, api_key_env: VIPO_KEY, concurrency: 2}
"""

#: that recipe's judge section in a run folder's config.yaml, as vipo wrote it before the critics owned their options
OLD_SNAPSHOT = """\
critic: ensemble
model: ''
adapter: ''
base_url: ''
api_key_env: ''
frames: 8
frame_size: 448
image_format: jpeg
prompts_dir: ''
retries: 2
max_unparseable: 0.2
max_tokens: 256
temperature: 0.0
concurrency: 4
timeout_s: 120.0
http_retries: 4
backoff_s: 1.0
batch_size: 4
device: cpu
trust_remote_code: false
dtype: auto
labels: ''
members:
- critic: world
- critic: openai
  base_url: http://127.0.0.1:8000/v1
  model: qwen
  api_key_env: VIPO_KEY
  concurrency: 2
combine: mean
dino: /models/dino
clip: ''
aesthetic_clip: ''
aesthetic_head: ''
musiq: ''
xclip: ''
feature_batch: 32
reward_base: ''
reward_checkpoint: ''
reward_thresholds:
- -0.2
- 0.3
reward_tie_margin: 0.1
"""


def test_an_old_flat_recipe_loads_to_the_same_config_and_snapshot(tmp_path):
    (tmp_path / "r.yaml").write_text(OLD_RECIPE)
    cfg = C.load(C.RunConfig, tmp_path / "r.yaml", C.parse_overrides(["judge.max_tokens=256", "judge.device=cpu"]))
    judge = C.to_dict(cfg.judge)
    assert yaml.safe_dump(judge, sort_keys=False) == OLD_SNAPSHOT  # byte-identical, key order included
    assert config_hash(judge) == config_hash(yaml.safe_load(OLD_SNAPSHOT)) == "2cd4b88d47a6998f"
    assert json.dumps(judge, sort_keys=True) == json.dumps(yaml.safe_load(OLD_SNAPSHOT), sort_keys=True)
