"""config: every section checks itself where it is made (Python, YAML, --set, CLI flags), naming the field."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml
from cli_helpers import one_line
from family_helpers import BF16

from vipo import config
from vipo.cli import main
from vipo.config import RunConfig, TrainConfig, load, to_dict
from vipo.critics.learn.train import CriticTrainConfig
from vipo.critics.options import COMMON, OPTIONS
from vipo.errors import UserError
from vipo.models import load_model
from vipo.run import driver
from vipo.train.state import config_hash


@pytest.mark.parametrize(
    "cls, kwargs, field",
    [
        (config.TrainConfig, {"beta": -1.0}, "beta"),
        (config.TrainConfig, {"method": "ppo"}, "method"),
        (config.GenerateConfig, {"num_steps": 0}, "num_steps"),
        (config.GenerateConfig, {"guidance": 0.5}, "guidance"),
        (config.JudgeConfig, {"critic": "oracle"}, "oracle"),
        (config.JudgeConfig, {"critic": "openai"}, "base_url"),
        (config.PairsConfig, {"filter_ratio": 1.0}, "filter_ratio"),
        (config.EvalConfig, {"metric": "pass"}, "metric"),
        (config.PromptConfig, {"phrasing": "poetic"}, "phrasing"),
        (config.PretrainConfig, {"side": 36}, "side"),
        (config.RunConfig, {"rounds": 0}, "rounds"),
        (CriticTrainConfig, {"fraction": 2.0}, "fraction"),
    ],
)
def test_a_section_made_in_python_is_checked(cls, kwargs, field):
    with pytest.raises(UserError, match=field):
        cls(**kwargs)
    cls()  # the defaults pass
    with pytest.raises(UserError, match=field):
        dataclasses.replace(cls(), **kwargs)  # so does every other way of making one


def test_a_nested_error_names_its_path_once():
    with pytest.raises(UserError) as e:
        config.build(config.RunConfig, {"train": {"beta": -1}})
    assert str(e.value) == "train.beta must be > 0, got -1.0"
    with pytest.raises(UserError) as e:
        config.load(config.RunConfig, overrides=config.parse_overrides(["eval.critic=openai"]))
    assert str(e.value) == "eval.critic: the openai critic needs base_url and model"


def test_yaml_meets_the_same_checks(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("generate:\n  guidance: 0.5\n")
    with pytest.raises(UserError, match="generate.guidance must be >= 1"):
        config.load(config.RunConfig, path)


def test_samples_per_prompt_is_a_run_rule_not_a_sampling_rule():
    config.GenerateConfig(samples_per_prompt=1)  # standalone inference may draw one video per prompt
    with pytest.raises(UserError, match="generate.samples_per_prompt must be at least 3"):
        config.RunConfig(generate=config.GenerateConfig(samples_per_prompt=2))
    with pytest.raises(UserError, match="samples_per_prompt must be > 0"):
        config.GenerateConfig(samples_per_prompt=0)


@pytest.mark.parametrize(
    "flags, field",
    [
        (["--steps", "0"], "num_steps must be > 0, got 0"),
        (["--guidance", "0.5"], "guidance must be >= 1, got 0.5"),
        (["--samples-per-prompt", "0"], "samples_per_prompt must be > 0"),
        (["--set", "num_steps=0"], "num_steps must be > 0"),
    ],
)
def test_generate_flags_are_overrides_of_checked_fields(tmp_path, capsys, flags, field):
    assert main(["generate", "--out", str(tmp_path / "g"), "--prompt", "a red circle moving left", *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err, err
    line = err.splitlines()[-1]
    assert line.startswith("vipo: error: ") and field in line
    assert not (tmp_path / "g").exists()  # refused before anything was loaded or written


# -- the option docs reach users: `vipo config [SECTION]` and --help ------------------------------------------------


def test_vipo_config_prints_each_option_with_its_default_and_docs(capsys):
    assert main(["config", "train"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("[train] Preference training of the policy")
    assert "  train.beta: 5000.0\n      DPO/KTO temperature" in out
    assert "  train.timestep_window: [0.0, 1.0]\n" in out and "  train.real_videos: ''\n" in out
    assert "[generate]" not in out
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    for section in config.sections():
        assert f"[{section}] " in out
    assert "  rounds: 3\n      IPO rounds" in out and "  judge.critic: world\n" in out
    doc = config.field_docs(config.EvalConfig)["metric"]
    assert " ".join(doc.split())[:60] in " ".join(out.split())  # every field's docstring, unwrapped
    assert main(["config", "trian"]) == 2
    assert "unknown config section 'trian' (known: run, prompts" in capsys.readouterr().err


@pytest.mark.parametrize(
    "verb, shown, absent",
    [
        (["run"], ["vipo config", "train.beta: 5000.0", "generate.num_steps: 15", "eval.clips_per_split: 96"], []),
        (["train", "--round", "1"], ["vipo config", "train.lora_rank: 16"], ["generate.num_steps"]),
        (["generate"], ["generate.guidance: 2.0", "classifier-free guidance scale"], ["train.lora_rank"]),
    ],
)
def test_help_shows_the_options_with_their_docs(capsys, verb, shown, absent):
    with pytest.raises(SystemExit) as e:
        main([*verb, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for text in shown:
        assert text in out
    for text in absent:
        assert text not in out


def test_memory_options_are_validated():
    for bad, msg in (
        ({"finetune": "qlora"}, "finetune"),
        ({"mixed_precision": "fp16"}, "mixed_precision"),
        ({"optimizer": "sgd"}, "optimizer"),
        ({"ref_offload": True}, "ref_offload"),
    ):
        with pytest.raises(UserError, match=msg):
            load(TrainConfig, None, bad)
    assert load(TrainConfig, None, {"finetune": "full", "ref_offload": "true"}).ref_offload is True


# the GPU recipes in configs/ load and validate without downloading anything
ROOT = Path(__file__).resolve().parents[2]
RECIPES = [
    ("cogvideox-2b-dpo.yaml", "THUDM/CogVideoX-2b", "dpo"),
    ("cogvideox-5b-kto.yaml", "THUDM/CogVideoX-5b", "kto"),
    ("wan-1.3b-dpo.yaml", "Wan-AI/Wan2.1-T2V-1.3B-Diffusers", "dpo"),
]


@pytest.mark.parametrize("name,model,method", RECIPES)
def test_gpu_recipes_validate_and_are_documented(name, model, method, monkeypatch):
    cfg = config.load(config.RunConfig, ROOT / "configs" / name)  # validation only: nothing is downloaded
    assert (cfg.model, cfg.train.method, cfg.device) == (model, method, "cuda")
    assert cfg.train.mixed_precision == "bf16" and cfg.train.gradient_checkpointing
    assert cfg.model_dtype == "bfloat16"  # frozen weights in bf16 (docs/models.md: memory)
    assert f"configs/{name}" in (ROOT / "docs" / "models.md").read_text()
    # a prompt-reading critic; evaluation on the suite's held-out prompts and VBench's, never a training prompt
    assert cfg.judge.critic in ("openai", "reward")
    from vipo.data import suites

    monkeypatch.chdir(ROOT)  # the recipes name their prompt files relative to the repository
    got = suites.resolve(cfg)
    assert got.heldout_of == cfg.prompts.source and len(got.splits["heldout"]) >= 30 and len(got.extra["vbench"]) == 66
    assert (cfg.generate.frames, cfg.generate.height) == ((81, 480) if "wan" in name else (49, 480))


@pytest.mark.parametrize(
    "setting, field",
    [
        ("train.betta=1", "train.betta"),
        ("train.beta=-1", "beta"),
        ("generate.samples_per_prompt=0", "samples_per_prompt"),
        ("generate.samples_per_prompt=2", "samples_per_prompt"),
        ("train.max_skipped_steps=0", "max_skipped_steps"),
        ("train.loss_spike_factor=0.5", "loss_spike_factor"),
        ("generate.max_quarantined=2", "max_quarantined"),
        ("min_free_gb=-1", "min_free_gb"),
        ("eval.critic=oracle", "eval.critic: unknown critic 'oracle'"),
        ("eval.critic=openai", "eval.critic: the openai critic needs base_url and model"),
        ("judge.critic=gpt", "judge.critic: unknown critic 'gpt' (known: world,"),
        ("judge.critic=openai", "judge: the openai critic needs base_url and model"),
        ("judge.frames=0", "judge.frames must be > 0"),
        ("eval.critic={critic: world, frame: 3}", "eval.critic.frame"),
    ],
)
def test_config_fields(tmp_path, capsys, setting, field):
    assert main(["run", "--out", str(tmp_path / "r"), "--set", setting]) == 2
    assert field in one_line(capsys)


def test_eval_critic_lays_its_options_over_the_judge():
    from vipo.config import RunConfig, build, eval_judge, validate_tree
    from vipo.run.driver import metric_name

    def cfg(**data):
        made = build(RunConfig, data)
        validate_tree(made)
        return made

    served = {"critic": "openai", "base_url": "http://h/v1", "model": "m", "frames": 8}
    assert eval_judge(cfg(judge=served)) == cfg(judge=served).judge  # empty: the run's judge
    run = cfg(judge=served, eval={"critic": "world"})
    assert eval_judge(run).critic == "world" and metric_name(run) == "indist_pass"
    assert metric_name(cfg(judge={"critic": "world"}, eval={"critic": "pixelstats"})) == "indist_score"
    other = eval_judge(cfg(judge=served, eval={"critic": {"model": "judge-2"}}))
    assert (other.critic, other.model, other.frames, other.base_url) == ("openai", "judge-2", 8, "http://h/v1")
    ens = cfg(
        judge={"critic": "ensemble", "members": [{"critic": "world"}, {"critic": "pixelstats"}]},
        eval={"critic": "world"},
    )
    assert eval_judge(ens).members == []  # an ensemble's members do not follow a single critic


def test_remote_code_is_off_by_default():
    from vipo.config import JudgeConfig

    assert JudgeConfig().trust_remote_code is False


def test_the_flat_judge_config_is_the_union_of_the_critics_options():
    keys = [f.name for f in dataclasses.fields(config.JudgeConfig)]
    owned = {f.name for cls in [COMMON, *OPTIONS.values()] for f in dataclasses.fields(cls)}
    assert keys == list(config.JUDGE_KEYS) and set(keys) == owned
    docs = config.field_docs(config.JudgeConfig)
    assert "vlm: a local model folder" in docs["model"] and "openai: the served model name" in docs["model"]
    for cls in OPTIONS.values():  # every option a critic reads says what it is
        assert all(config.field_docs(cls).get(f.name) for f in dataclasses.fields(cls)), cls


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
    cfg = config.load(
        config.RunConfig, tmp_path / "r.yaml", config.parse_overrides(["judge.max_tokens=256", "judge.device=cpu"])
    )
    judge = config.to_dict(cfg.judge)
    assert yaml.safe_dump(judge, sort_keys=False) == OLD_SNAPSHOT  # byte-identical, key order included
    assert config_hash(judge) == config_hash(yaml.safe_load(OLD_SNAPSHOT)) == "2cd4b88d47a6998f"
    assert json.dumps(judge, sort_keys=True) == json.dumps(yaml.safe_load(OLD_SNAPSHOT), sort_keys=True)


def test_model_dtype_is_validated_and_old_snapshots_load(tmp_path, tiny_model_dir, tiny_family_dir):
    for over, msg in (
        ({"model_dtype": "fp8"}, "model_dtype must be float32 or bfloat16"),
        ({"model_dtype": "float16"}, "model_dtype must be float32 or bfloat16 .float16 trains without"),
        ({"model_dtype": "bfloat16"}, "model_dtype: the embedded world model loads in float32 only"),
    ):
        with pytest.raises(UserError, match=msg):
            load(RunConfig, None, over)
    with pytest.raises(UserError, match="model_dtype: the world family loads in float32 only, got 'bfloat16'"):
        load_model(str(tiny_model_dir), dtype="bfloat16")
    with pytest.raises(UserError, match="model_dtype must be one of float32, bfloat16, float16, got 'half'"):
        load_model(str(tiny_family_dir("wan")), dtype="half")
    cfg = load(RunConfig, None, {"model": str(tiny_family_dir("wan")), "model_dtype": "bfloat16"})
    assert cfg.model_dtype == "bfloat16" and RunConfig().model_dtype == "float32"
    assert driver.Round(cfg, tmp_path, 1, None).policy().dtype == BF16  # the loop loads in it
    old = to_dict(RunConfig(model=cfg.model))  # a run folder started before the option existed resumes unchanged
    del old["model_dtype"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    driver.snapshot(RunConfig(model=cfg.model), tmp_path)
    with pytest.raises(UserError, match="model_dtype: 'float32' then, 'bfloat16' now"):
        driver.snapshot(cfg, tmp_path)


def test_kto_config_refuses_a_reference_point_on_fewer_than_two_rewards():
    with pytest.raises(UserError, match="kto_kl_pool"):
        TrainConfig(method="kto", kto_kl_pool=1).validate()
    with pytest.raises(UserError, match="fewer than 2"):
        TrainConfig(method="kto", kto_kl_pool=0, batch_size=1).validate()
    TrainConfig(method="kto", kto_kl_pool=0, batch_size=8).validate()  # the old micro-batch mean, on 8 items
    TrainConfig(method="kto", kto_kl_pool=128, batch_size=1).validate()
    TrainConfig(method="dpo", kto_kl_pool=1, batch_size=1).validate()  # not KTO: not asked


def test_timestep_window_is_validated():
    from vipo.config import TrainConfig
    from vipo.errors import UserError

    for bad in ([0.5, 0.5], [0.9, 0.2], [-0.1, 1.0], [0.0, 1.5], [0.5]):
        with pytest.raises(UserError, match="timestep_window"):
            TrainConfig(timestep_window=bad).validate()
    TrainConfig(timestep_window=[0.8, 1.0]).validate()
