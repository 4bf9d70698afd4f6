"""Bad input fails with one line naming the file, line or field (no traceback, exit 2); what vipo loads is safe."""
import json
import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vipo import faults
from vipo.cli import main
from vipo.data.prompts import MAX_CHARS, parse_prompts
from vipo.errors import UserError


def one_line(capsys):
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err, err
    return err.splitlines()[-1]  # earlier lines are log lines


@pytest.mark.parametrize("data, expect", [
    (b"a red circle moving left\n\n# only comments\n", None),
    (b"", "no prompts"),
    (b"# nothing\n   \n", "no prompts"),
    (b"a red circle\nblue \xff square\n", ":2: not UTF-8"),
    (b"fine\nbad \x00 nul\n", ":2: control character"),
])
def test_prompt_files(tmp_path, tiny_model_dir, capsys, data, expect):
    path = tmp_path / "prompts.txt"
    path.write_bytes(data)
    rc = main(["generate", "--model", str(tiny_model_dir), "--prompts", str(path), "--out", str(tmp_path / "g"),
               "--steps", "1", "--samples-per-prompt", "1", "--quiet"])
    if expect is None:
        assert rc == 0
        return
    assert rc == 2
    err = one_line(capsys)
    assert str(path) in err and expect in err


def test_long_prompts_are_cut_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        (n, text), = parse_prompts(b"\n" + b"x" * (MAX_CHARS + 50) + b"\n", "p.txt")
    assert n == 2 and len(text) == MAX_CHARS and "p.txt:2" in caplog.text


def test_prompts_longer_than_the_text_encoder_warn(tiny_model_dir, caplog):
    from vipo.data.prompts import warn_long
    from vipo.models import load_model

    model = load_model(str(tiny_model_dir))
    with caplog.at_level(logging.WARNING):
        warn_long(model, ["a red circle " * 40])
    assert "the text encoder reads the first" in caplog.text


@pytest.mark.parametrize("setting, field", [
    ("train.betta=1", "train.betta"), ("train.beta=-1", "beta"), ("generate.samples_per_prompt=0",
                                                                  "samples_per_prompt"),
    ("generate.samples_per_prompt=2", "samples_per_prompt"), ("train.max_skipped_steps=0", "max_skipped_steps"),
    ("train.loss_spike_factor=0.5", "loss_spike_factor"), ("generate.max_quarantined=2", "max_quarantined"),
    ("min_free_gb=-1", "min_free_gb"), ("eval.critic=oracle", "eval.critic.unknown critic 'oracle'"),
    ("eval.critic=openai", "eval.critic.the openai critic needs base_url and model"),
    ("eval.critic={critic: world, frame: 3}", "eval.critic.frame"),
])
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
    assert metric_name(cfg(judge={"critic": "world"}, eval={"critic": "metric"})) == "indist_score"
    other = eval_judge(cfg(judge=served, eval={"critic": {"model": "judge-2"}}))
    assert (other.critic, other.model, other.frames, other.base_url) == ("openai", "judge-2", 8, "http://h/v1")
    ens = cfg(judge={"critic": "ensemble", "members": [{"critic": "world"}, {"critic": "metric"}]},
              eval={"critic": "world"})
    assert eval_judge(ens).members == []  # an ensemble's members do not follow a single critic


def test_missing_model_folder_and_video_without_frames(tmp_path, capsys):
    assert main(["run", "--out", str(tmp_path / "r"), "--model", str(tmp_path / "nope"), "--quiet"]) == 2
    assert "nope" in one_line(capsys)
    folder = tmp_path / "videos"
    folder.mkdir()
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "metadata.jsonl").write_text(json.dumps({"file_name": "empty.mp4", "prompt": "a red circle moving left"}))
    assert main(["critic", "eval", str(folder), "--critic", "world"]) == 2
    assert "empty.mp4" in one_line(capsys)


def test_pickle_weights_are_refused_unless_allowed(tmp_path, tiny_model_dir, capsys):
    import shutil

    from vipo.models import check_weights, set_allow_pickle

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    for f in (model / "unet").glob("*.safetensors"):
        f.rename(f.with_suffix(".bin"))
    assert main(["generate", "--model", str(model), "--prompt", "a red circle moving left", "--out",
                 str(tmp_path / "g"), "--quiet"]) == 2
    err = one_line(capsys)
    assert "diffusion_pytorch_model.bin" in err and "--allow-pickle" in err
    set_allow_pickle(True)
    try:
        check_weights(model)  # allowed when asked for
    finally:
        set_allow_pickle(False)


def test_remote_code_is_off_by_default():
    from vipo.config import JudgeConfig

    assert JudgeConfig().trust_remote_code is False


def test_fault_spec_and_noop():
    assert faults._parse("generate.after_commit:3=kill, train.loss:2+=nan") == {
        "generate.after_commit": (3, False, "kill"), "train.loss": (2, True, "nan")}
    assert faults.value("anything", 1.5) == 1.5  # unset: a no-op
    faults.point("anything")


def test_interrupted_replacement_is_recovered(tmp_path):
    from vipo.io import atomic

    with atomic.atomic_dir(tmp_path / "state") as d:
        (d / "x").write_text("1")
    (tmp_path / "state").rename(tmp_path / ".tmp-state.old")  # killed between atomic_dir's two renames
    atomic.recover(tmp_path / "state")
    assert (tmp_path / "state" / "x").read_text() == "1" and atomic.is_complete(tmp_path / "state")


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
