"""Bad input fails with one line naming the file, line or field (no traceback, exit 2); what vipo loads is safe."""

import json
import logging
import re

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
    assert (
        main(
            [
                "generate",
                "--model",
                str(model),
                "--prompt",
                "a red circle moving left",
                "--out",
                str(tmp_path / "g"),
                "--quiet",
            ]
        )
        == 2
    )
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
        "generate.after_commit": (3, False, "kill"),
        "train.loss": (2, True, "nan"),
    }
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


# -- issue 14: every user error one line, checked before anything is written, nothing read from outside ------------
def _clips(root, names=("a.mp4", "b.mp4"), prompt="a red circle moving left"):
    """A folder of two rendered world clips with metadata.jsonl naming ``prompt`` (no model)."""
    import random

    from vipo.io.video import write_mp4
    from vipo.world import grammar, render

    root.mkdir(parents=True)
    for i, name in enumerate(names):
        write_mp4(root / name, render.random_clip(grammar.ALL[i], random.Random(i), 32, 9))
    (root / "metadata.jsonl").write_text("".join(json.dumps({"file_name": n, "prompt": prompt}) + "\n" for n in names))
    return root


@pytest.mark.parametrize("content, said", [(b"", "unreadable video"), (b"\x00" * 300, "unreadable video")])
def test_eval_dir_with_a_zero_byte_or_corrupt_mp4_is_one_line(tmp_path, capsys, content, said):
    root = _clips(tmp_path / "v")
    (root / "b.mp4").write_bytes(content)
    assert main(["eval", str(root), "--quiet"]) == 2
    err = one_line(capsys)
    assert str(root / "b.mp4") in err and said in err


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


def test_conflicting_human_labels_name_both_lines(tmp_path, capsys):
    from vipo.critics.human import HumanCritic

    good = {"semantic": "Good", "fidelity": "Good", "motion": "Good"}
    rows = [
        {"video": "a.mp4", "labels": good},
        {"video": "b.mp4", "labels": good},
        {"video": "a.mp4", "labels": dict(good, motion="Bad")},
    ]
    path = tmp_path / "labels.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(
        UserError,
        match=r"labels.jsonl:3: conflicts with line 1: two different annotations of "
        r"video 'a.mp4'",
    ):
        HumanCritic(path)
    verdicts = {"semantic": "A", "fidelity": "Tie", "motion": "B"}
    pairs = [
        {"a": "a.mp4", "b": "b.mp4", "verdicts": verdicts},
        {"b": "a.mp4", "a": "b.mp4", "verdicts": {"semantic": "B", "fidelity": "Tie", "motion": "A"}},
        {"a": "a.mp4", "b": "b.mp4", "verdicts": dict(verdicts, motion="A")},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows[:2] + pairs))
    with pytest.raises(UserError, match=r"labels.jsonl:5: conflicts with line 3"):  # line 4 agrees, swapped
        HumanCritic(path)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows[:2] * 2 + pairs[:2]))  # repeated, same answers
    assert len(HumanCritic(path).point) == 2


def test_out_naming_an_existing_file_is_one_line(tmp_path, tiny_model_dir, capsys):
    root = _clips(tmp_path / "v")
    taken = tmp_path / "taken"
    taken.write_text("a file")
    model = ["--model", str(tiny_model_dir)]
    for argv in (
        ["run", "--out", str(taken), *model],
        ["generate", "--out", str(taken), "--prompt", "x", *model],
        ["eval", str(root), "--out", str(taken)],
        ["world", "pretrain", "--out", str(taken)],
        ["ablate", "--out", str(taken), *model],
        ["critic", "eval", str(root), "--out", str(tmp_path)],
    ):
        assert main([*argv, "--quiet"]) == 2, argv
        err = one_line(capsys)
        assert str(taken if argv[0] != "critic" else tmp_path) in err, err
    assert taken.read_text() == "a file"
    assert main(["prompts", "build", "--out", str(tmp_path), "-n", "2"]) == 2  # any other verb: the OS's one line
    assert one_line(capsys) == f"vipo: error: {tmp_path}: Is a directory"
    # vipo judge's --out is a file: one vipo did not write is never overwritten without --force
    assert main(["judge", str(root), "--out", str(taken), "--quiet"]) == 2
    assert "was not written by vipo judge" in one_line(capsys) and taken.read_text() == "a file"
    assert main(["judge", str(root), "--out", str(taken), "--quiet", "--force"]) == 0
    assert '"critic": "world"' in taken.read_text()


def test_model_folder_with_missing_components_is_one_line(tmp_path, tiny_model_dir, capsys):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    shutil.rmtree(model / "text_encoder")
    assert (
        main(
            [
                "generate",
                "--model",
                str(model),
                "--prompt",
                "a red circle moving left",
                "--out",
                str(tmp_path / "g"),
                "--quiet",
            ]
        )
        == 2
    )
    assert "component 'text_encoder' (CLIPTextModel) has no folder" in one_line(capsys)
    assert not (tmp_path / "g").exists()


def test_inputs_are_checked_before_the_run_folder_is_written(tmp_path, tiny_model_dir, capsys):
    out = tmp_path / "run"
    assert main(["run", "--out", str(out), "--model", "/no/such/path", "--quiet"]) == 2
    assert "/no/such/path" in one_line(capsys) and not out.exists()  # the corrected command is not "a changed config"
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle moving left\na cat playing the piano\n")
    assert (
        main(
            ["run", "--out", str(out), "--model", str(tiny_model_dir), "--set", f"prompts.source={prompts}", "--quiet"]
        )
        == 2
    )
    err = one_line(capsys)
    assert f"{prompts}:2: prompt 'a cat playing the piano': the world critic cannot judge it" in err
    assert not out.exists()
    assert (
        main(
            [
                "run",
                "--out",
                str(out),
                "--model",
                str(tiny_model_dir),
                "--set",
                "judge.critic=human",
                "--set",
                f"judge.labels={tmp_path / 'none.jsonl'}",
                "--quiet",
            ]
        )
        == 2
    )
    assert "judge.labels" in one_line(capsys) and not out.exists()
    root = _clips(tmp_path / "v", prompt="a cat playing the piano")  # and vipo judge DIR, naming metadata's line
    assert main(["judge", str(root), "--out", str(tmp_path / "j.jsonl"), "--quiet"]) == 2
    assert f"{root / 'metadata.jsonl'}:1: prompt 'a cat" in one_line(capsys)


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


def test_paths_in_user_files_stay_in_their_folder(tmp_path, tiny_model_dir, capsys):
    from vipo.data.real import read_dataset
    from vipo.io.paths import inside
    from vipo.models.policy import read_policy

    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    for entry, said in (
        ({"adapters": ["../../elsewhere"]}, "adapters[0]: '../../elsewhere': '..' is refused"),
        ({"adapters": [], "denoiser": "/etc"}, "denoiser: '/etc': absolute paths are refused"),
    ):
        (ckpt / "policy.json").write_text(json.dumps({"base": str(tiny_model_dir), **entry}))
        with pytest.raises(UserError, match=re.escape(said)):
            read_policy(ckpt)
    assert (
        main(
            [
                "generate",
                "--model",
                str(tiny_model_dir),
                "--lora",
                str(ckpt),
                "--prompt",
                "a red circle moving left",
                "--out",
                str(tmp_path / "g"),
                "--quiet",
            ]
        )
        == 2
    )
    assert "policy.json: denoiser" in one_line(capsys)
    labels = tmp_path / "labels.jsonl"
    labels.write_text(
        json.dumps({"video": "../x.mp4", "labels": {"semantic": "Good", "fidelity": "Good", "motion": "Good"}}) + "\n"
    )
    from vipo.critics.human import HumanCritic

    with pytest.raises(UserError, match=r"labels.jsonl:1: video: '../x.mp4': '..' is refused"):
        HumanCritic(labels)
    # real-video manifests: relative paths confined to the manifest's folder, absolute ones allowed (documented)
    data = tmp_path / "data"
    data.mkdir()
    (tmp_path / "v.mp4").write_bytes(b"x")
    manifest = data / "m.jsonl"
    manifest.write_text(json.dumps({"video": "../v.mp4", "caption": "c"}) + "\n")
    with pytest.raises(UserError, match=r"m.jsonl: line 1: video: '../v.mp4': '..' is refused"):
        read_dataset(manifest)
    manifest.write_text(json.dumps({"video": str(tmp_path / "v.mp4"), "caption": "c"}) + "\n")
    assert read_dataset(manifest)[0].video == tmp_path / "v.mp4"
    (data / "in.mp4").symlink_to(data / "m.jsonl")  # a symlink that stays inside is fine
    assert inside(data, "in.mp4", "x") == data / "in.mp4"


def test_report_gallery_file_name_stays_in_the_eval_folder(tiny_run_dir, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run_dir, run)
    meta = run / "round-0" / "eval" / "metadata.jsonl"
    rows = [json.loads(x) for x in meta.read_text().splitlines()]
    rows[0]["file_name"] = "../../../ledger.sqlite"
    meta.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["report", str(run)]) == 2
    assert f"{meta}:1: file_name: '../../../ledger.sqlite': '..' is refused" in one_line(capsys)


def test_run_lock_refuses_a_second_holder_and_is_freed_by_its_exit(tmp_path):
    import subprocess
    import sys

    from vipo.io.lock import LOCK_NAME, folder_lock

    hold = (
        "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
        "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, str(os.getpid()).encode()); print('held', flush=True); "
        "time.sleep(60)"
    )
    tmp_path.joinpath("run").mkdir()
    other = subprocess.Popen(
        [sys.executable, "-c", hold, str(tmp_path / "run" / LOCK_NAME)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert other.stdout.readline().strip() == "held"
        with pytest.raises(UserError, match=rf"run: in use by another vipo process \(pid {other.pid}\)"):
            with folder_lock(tmp_path / "run"):
                pass
    finally:
        other.kill()
        other.wait()
    with folder_lock(tmp_path / "run"), folder_lock(tmp_path / "run"):  # free again; re-entrant in one process
        assert (tmp_path / "run" / LOCK_NAME).read_text().strip() == str(__import__("os").getpid())


def test_atomic_writes_follow_the_umask(tmp_path):
    import os
    import stat

    from vipo.io import atomic

    atomic.write_text(tmp_path / "f.txt", "x")
    with atomic.atomic_dir(tmp_path / "d") as d:
        (d / "y").write_text("y")
    assert stat.S_IMODE((tmp_path / "f.txt").stat().st_mode) == 0o666 & ~atomic.UMASK
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o777 & ~atomic.UMASK
    assert atomic.UMASK == os.umask(atomic.UMASK)  # read without changing it


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
