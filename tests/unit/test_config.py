"""config: every section checks itself where it is made (Python, YAML, --set, CLI flags), naming the field."""

import dataclasses
from pathlib import Path

import pytest

from vipo import config as C
from vipo.cli import main
from vipo.config import TrainConfig, load
from vipo.critics.learn.train import CriticTrainConfig
from vipo.errors import UserError


@pytest.mark.parametrize(
    "cls, kwargs, field",
    [
        (C.TrainConfig, {"beta": -1.0}, "beta"),
        (C.TrainConfig, {"method": "ppo"}, "method"),
        (C.GenerateConfig, {"num_steps": 0}, "num_steps"),
        (C.GenerateConfig, {"guidance": 0.5}, "guidance"),
        (C.JudgeConfig, {"critic": "oracle"}, "oracle"),
        (C.JudgeConfig, {"critic": "openai"}, "base_url"),
        (C.PairsConfig, {"filter_ratio": 1.0}, "filter_ratio"),
        (C.EvalConfig, {"metric": "pass"}, "metric"),
        (C.PromptConfig, {"phrasing": "poetic"}, "phrasing"),
        (C.PretrainConfig, {"side": 36}, "side"),
        (C.RunConfig, {"rounds": 0}, "rounds"),
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
        C.build(C.RunConfig, {"train": {"beta": -1}})
    assert str(e.value) == "train.beta must be > 0, got -1.0"
    with pytest.raises(UserError) as e:
        C.load(C.RunConfig, overrides=C.parse_overrides(["eval.critic=openai"]))
    assert str(e.value) == "eval.critic: the openai critic needs base_url and model"


def test_yaml_meets_the_same_checks(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("generate:\n  guidance: 0.5\n")
    with pytest.raises(UserError, match="generate.guidance must be >= 1"):
        C.load(C.RunConfig, path)


def test_samples_per_prompt_is_a_run_rule_not_a_sampling_rule():
    C.GenerateConfig(samples_per_prompt=1)  # standalone inference may draw one video per prompt
    with pytest.raises(UserError, match="generate.samples_per_prompt must be at least 3"):
        C.RunConfig(generate=C.GenerateConfig(samples_per_prompt=2))
    with pytest.raises(UserError, match="samples_per_prompt must be > 0"):
        C.GenerateConfig(samples_per_prompt=0)


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
    for section in C.sections():
        assert f"[{section}] " in out
    assert "  rounds: 3\n      IPO rounds" in out and "  judge.critic: world\n" in out
    doc = C.field_docs(C.EvalConfig)["metric"]
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
    cfg = C.load(C.RunConfig, ROOT / "configs" / name)  # validation only: nothing is downloaded
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
