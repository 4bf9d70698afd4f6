"""The fault matrix (docs/reliability.md): the real CLI in subprocesses at tiny size, killed or broken, re-run with the
same command and compared with one uninterrupted run.

Each process seeds torch's global generator first (``LAUNCH``): this torch build seeds it randomly per process, and
it initializes LoRA's A matrices, so only then can two separate processes be compared weight for weight.

A command that must die (a ``kill`` or ``term`` fault) runs in a process of its own; every other command (the
uninterrupted runs, the resumptions, the runs that stop with an error code) runs in this one through
``vipo.cli.main``, set up as that process would be (seeded, one thread, its environment and fault plan, its own
stderr): it checks the same things and saves a Python, torch and diffusers start-up per command.
"""

import contextlib
import hashlib
import io
import json
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
import traceback

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.conftest import TINY_RUN

pytestmark = pytest.mark.slow
LAUNCH = "import sys, torch; torch.manual_seed(0); from vipo.cli import main; sys.exit(main(sys.argv[1:]))"
# 3 prompts x 3 samples, committed 2 at a time; 3 pairs, 6 training steps, a state saved after each
ARGS = TINY_RUN + ["--set", "generate.batch_size=2", "--set", "train.epochs=4"]
LORA = "round-1/checkpoint/lora-round-1/pytorch_lora_weights.safetensors"
SECRET = "sk-fault-matrix-0123456789"


def vipo(*args, faults=None, env=None, timeout=300):
    """``vipo *args``: in a process of its own when a fault ends that process (``kill``, ``term``), else in this one
    (module docstring); either way a :class:`subprocess.CompletedProcess`."""
    if faults and any(f.partition("=")[2] in ("kill", "term") for f in faults.split(",")):
        e = {k: v for k, v in os.environ.items() if "proxy" not in k.lower() and k != "VIPO_FAULTS"}
        e.update(OMP_NUM_THREADS="1", **(env or {}))
        e["VIPO_FAULTS"] = faults
        return subprocess.run(
            [sys.executable, "-c", LAUNCH, *map(str, args)], capture_output=True, text=True, env=e, timeout=timeout
        )
    return in_process([str(a) for a in args], faults or "", env or {})


def in_process(argv, plan, env):
    """``main(argv)`` as ``LAUNCH`` runs it in a fresh process with ``vipo``'s environment: the global generator
    seeded, one thread, no proxy, ``env`` added, the fault plan ``plan`` parsed anew; stdout, stderr and an uncaught
    exception's traceback (exit status 1, as Python's) captured; the logging, environment and threads restored."""
    from vipo import faults
    from vipo.cli import main

    saved_env, root = dict(os.environ), logging.getLogger()
    saved_log, threads = (root.handlers[:], root.level), torch.get_num_threads()
    saved_plan = (faults._PLAN, faults._hits)
    out, err = io.StringIO(), io.StringIO()
    try:
        for k in [k for k in os.environ if "proxy" in k.lower()]:
            del os.environ[k]
        os.environ.pop(faults.ENV, None)
        os.environ.update(env)
        faults._PLAN, faults._hits = faults._parse(plan), faults.Counter()
        torch.set_num_threads(1)
        torch.manual_seed(0)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 1
            except Exception:
                traceback.print_exc()
                code = 1
    finally:
        for h in root.handlers[:]:
            if h not in saved_log[0]:
                h.close()
        root.handlers[:], root.level = saved_log
        faults._PLAN, faults._hits = saved_plan
        torch.set_num_threads(threads)
        os.environ.clear()
        os.environ.update(saved_env)
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


def run_cmd(model, out, rounds=1, *extra):
    return ["run", "--model", model, "--out", out, "--rounds", rounds, *ARGS, *extra]


def ledger(out, sql, *args):
    db = sqlite3.connect(out / "ledger.sqlite")
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


def digest(folder, pattern="*"):
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.glob(pattern))
        if p.is_file()
    }


def no_temp(out):
    return not [p for p in out.rglob(".tmp-*")]


def one_line_error(proc):
    lines = proc.stderr.strip().splitlines()
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    return lines[-1]


def same_training(out, ref, round_="round-1"):
    assert (out / round_ / "train_log.jsonl").read_text() == (ref / round_ / "train_log.jsonl").read_text()
    a, b = (
        load_file(str(out / LORA.replace("round-1", round_, 1))),
        load_file(str(ref / LORA.replace("round-1", round_, 1))),
    )
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="session")
def ref(tmp_path_factory, tiny_model_dir):
    """The uninterrupted run every row compares with (two rounds, for row 9)."""
    out = tmp_path_factory.mktemp("ref") / "run"
    proc = vipo(*run_cmd(tiny_model_dir, out, 2))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_row1_sigkill_during_generation(ref, tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    cmd = run_cmd(tiny_model_dir, out)
    assert vipo(*cmd, faults="generate.after_commit:4=kill").returncode == -9
    committed = [r[0] for r in ledger(out, "select id from samples where round=1")]
    assert len(committed) == 4
    samples = out / "round-1" / "samples"
    stamps = {sid: (samples / f"{sid}.mp4").stat().st_mtime_ns for sid in committed}
    (samples / ".tmp-r1-p0002-s2.mp4.stray").write_bytes(b"half a video")  # a writer killed mid-file
    proc = vipo(*cmd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "generating 5 of 9 samples" in proc.stderr
    assert all((samples / f"{sid}.mp4").stat().st_mtime_ns == t for sid, t in stamps.items())  # never regenerated
    assert no_temp(out)
    for part in ("samples", "latents"):
        assert digest(out / "round-1" / part) == digest(ref / "round-1" / part)


# -- the judge rows: the openai critic against a scripted local server that counts the questions ------------------
def scripted_answer(body):
    """A deterministic answer from the question itself (its text and images)."""
    text = json.dumps(body, sort_keys=True)
    h = int(hashlib.sha256(text.encode()).hexdigest(), 16)
    if "Video B:" in text:
        return f"Looked at both.\nVerdict: {('A', 'B', 'Tie')[h % 3]}"
    return f"Looked at it.\nVerdict: {('Good', 'Normal', 'Bad')[h % 3]}"


@pytest.fixture(scope="module")
def judge_world(tmp_path_factory, tiny_model_dir):
    """A server, and a run folder generated for round 1 under a config naming that server as the critic."""
    from tests.integration.test_openai_critic import Server

    srv = Server(default=scripted_answer)
    base = tmp_path_factory.mktemp("judge") / "run"
    critic = [
        "--set",
        "judge.critic=openai",
        "--set",
        f"judge.base_url={srv.url}",
        "--set",
        "judge.model=m",
        "--set",
        "judge.frames=2",
        "--set",
        "judge.frame_size=16",
        "--set",
        "judge.backoff_s=0",
        "--set",
        "judge.http_retries=0",
        "--set",
        "judge.retries=1",
        "--set",
        "judge.timeout_s=0.5",
        "--set",
        "judge.api_key_env=VIPO_KEY",
        "--set",
        "judge.max_unparseable=0.3",
    ]
    gen = ["generate", "--round", 1, "--model", tiny_model_dir, "--out", base, *ARGS, *critic]
    assert vipo(*gen, env={"VIPO_KEY": SECRET}).returncode == 0
    yield srv, base, critic
    srv.close()


def judge_cmd(out, critic, *extra):
    return ["judge", "--round", 1, "--out", out, *ARGS, *critic, *extra]


def judgments(out):
    rows = ledger(out, "select key, data from judgments where round=1 order by key")
    return [(k, {f: v for f, v in json.loads(d).items()}) for k, d in rows]


def test_row2_sigkill_during_judging(judge_world, tmp_path):
    srv, base, critic = judge_world
    srv.default = scripted_answer
    clean, out = tmp_path / "clean", tmp_path / "run"
    shutil.copytree(base, clean)
    shutil.copytree(base, out)
    key = {"VIPO_KEY": SECRET}
    n0 = len(srv.requests)
    assert vipo(*judge_cmd(clean, critic), env=key).returncode == 0
    asked_clean = len(srv.requests) - n0
    # killed inside the second prompt's ledger transaction, then right after the third prompt's commit
    assert vipo(*judge_cmd(out, critic), faults="judge.mid_record:2=kill", env=key).returncode == -9
    assert {r[0] for r in ledger(out, "select prompt_id from judgments")} == {0}  # the torn record rolled back
    assert vipo(*judge_cmd(out, critic), faults="judge.after_commit:1=kill", env=key).returncode == -9
    proc = vipo(*judge_cmd(out, critic), env=key)
    assert proc.returncode == 0, proc.stderr[-3000:]
    per_group = 3 * 3 + 6 * 3  # 3 videos and 6 ordered pairs, one question per dimension
    # every committed judgment survived and was never asked again: only the rolled-back group was asked twice
    assert len(srv.requests) - n0 - asked_clean == asked_clean + per_group
    assert judgments(out) == judgments(clean)
    # the API key went only into the Authorization header: in no file of the run folder, nor on stderr
    assert all(SECRET.encode() not in p.read_bytes() for p in out.rglob("*") if p.is_file())
    assert SECRET not in proc.stderr and srv.requests[-1]["auth"] == f"Bearer {SECRET}"


def test_row3_unparseable_empty_and_timed_out_answers(judge_world, tmp_path):
    srv, base, critic = judge_world

    def answer(body):
        text = json.dumps(body, sort_keys=True)
        if "Video B:" in text:
            return scripted_answer(body)
        h = int(hashlib.sha256(text.encode()).hexdigest(), 16) % 9
        return {0: "I'm sorry, I cannot judge videos.", 1: "", 2: "slow"}.get(h, scripted_answer(body))

    srv.default = answer
    out, strict = tmp_path / "run", tmp_path / "strict"
    shutil.copytree(base, out)
    shutil.copytree(base, strict)
    proc = vipo(*judge_cmd(out, critic), env={"VIPO_KEY": SECRET})
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [d for _, d in judgments(out)]
    bad = [r for r in rows if "error" in r]
    assert bad and all("labels" not in r for r in bad)  # recorded with the raw text, left unparsed
    assert vipo("pairs", "--round", 1, "--out", out, *ARGS, *critic, env={"VIPO_KEY": SECRET}).returncode == 0
    bad_ids = {r["a"] for r in bad if r["kind"] == "pointwise"}
    examples = [json.loads(x) for x in (out / "round-1" / "examples.jsonl").read_text().splitlines()]
    assert not bad_ids & {e["sample"] for e in examples}  # excluded
    # above the threshold: a clear one-line message and a non-zero exit
    proc = vipo(*judge_cmd(strict, critic, "--force", "--set", "judge.max_unparseable=0.01"), env={"VIPO_KEY": SECRET})
    assert proc.returncode == 2
    assert "unparseable" in one_line_error(proc) and "max_unparseable=0.01" in proc.stderr
    export = strict / "round-1" / "judgments.jsonl"  # the file the message points at was written first
    assert one_line_error(proc).endswith(f"in {export}") and "error" in export.read_text()


def test_row4_corrupt_truncated_wrong_length_and_nan(tiny_model_dir, tmp_path):
    from vipo.io.video import write_mp4

    out = tmp_path / "run"
    cmd = run_cmd(tiny_model_dir, out, 1, "--set", "generate.max_quarantined=0.6")
    gen = [
        "generate",
        "--round",
        1,
        "--rounds",
        1,
        "--model",
        tiny_model_dir,
        "--out",
        out,
        *ARGS,
        "--set",
        "generate.max_quarantined=0.6",
    ]
    assert vipo(*gen, faults="generate.latents:1=nan").returncode == 0  # the first 2 samples: NaN, found on write
    r1 = out / "round-1"
    shutil.copytree(out, tmp_path / "strict")
    mp4 = r1 / "samples" / "r1-p0001-s0.mp4"
    mp4.write_bytes(mp4.read_bytes()[: mp4.stat().st_size // 2])  # truncated
    import numpy as np

    write_mp4(r1 / "samples" / "r1-p0000-s2.mp4", np.zeros((3, 32, 32, 3), np.uint8))  # 3 frames, not 9
    lat = r1 / "latents" / "r1-p0002-s0.safetensors"
    save_file({"latent": torch.full_like(load_file(str(lat))["latent"], float("nan"))}, str(lat))  # found on read
    proc = vipo(*cmd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    reasons = dict(ledger(out, "select id, json_extract(data, '$.reason') from quarantine"))
    assert set(reasons) == {"r1-p0000-s0", "r1-p0000-s1", "r1-p0001-s0", "r1-p0000-s2", "r1-p0002-s0"}
    assert "3 frames, 9 expected" in reasons["r1-p0000-s2"] and "latent" in reasons["r1-p0002-s0"]
    assert "frames" in reasons["r1-p0001-s0"] or "unreadable" in reasons["r1-p0001-s0"]
    on_read = set(reasons) - {"r1-p0002-s0"}  # that one is found by training, after pairs were built
    pairs = [json.loads(x) for x in (r1 / "pairs.jsonl").read_text().splitlines()]
    assert not {p["chosen"] for p in pairs} & on_read and not {p["rejected"] for p in pairs} & on_read
    train = json.loads(ledger(out, "select data from stages where round=1 and stage='train'")[0][0])
    assert train["items"] == sum("r1-p0002-s0" not in (p["chosen"], p["rejected"]) for p in pairs) > 0
    assert (r1 / "quarantine.jsonl").is_file() and (r1 / "checkpoint" / "COMPLETE").is_file()
    assert not [j for j in ledger(out, "select a from judgments") if j[0] in on_read]  # never shown to the critic
    # above the threshold the stage stops with one line
    strict = tmp_path / "strict"
    for name in ("r1-p0001-s0", "r1-p0001-s1"):
        (strict / "round-1" / "samples" / f"{name}.mp4").write_bytes(b"\0" * 100)
    proc = vipo(*run_cmd(tiny_model_dir, strict, 1, "--force", "--set", "generate.max_quarantined=0.3"))
    assert proc.returncode == 2 and "quarantined" in one_line_error(proc)


# -- training: one run killed, killed mid-checkpoint, stopped by SIGTERM, then finished -----------------------------
@pytest.fixture(scope="module")
def train_chain(ref, tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("train") / "run"
    cmd, seen = run_cmd(tiny_model_dir, out), {}
    state = out / "round-1" / "train_state"
    seen["kill"] = vipo(*cmd, faults="train.after_step:3=kill").returncode
    seen["after_kill"] = json.loads((state / "state.json").read_text())["info"]["step"]
    # resumed at 2; its saves are steps 3, 4, ...: killed inside the second, the one of step 4
    seen["mid"] = vipo(*cmd, faults="train.mid_checkpoint:2=kill").returncode
    seen["partial"] = [p.name for p in state.parent.glob(".tmp-train_state.*")]
    seen["after_mid"] = json.loads((state / "state.json").read_text())["info"]["step"]
    term = vipo(*cmd, faults="train.after_step:2=term")  # resumed at 3: SIGTERM during step 5
    seen["term"], seen["term_err"] = term.returncode, term.stderr
    seen["after_term"] = json.loads((state / "state.json").read_text())["info"]
    final = vipo(*cmd)
    assert final.returncode == 0, final.stderr[-3000:]
    seen["final_err"] = final.stderr
    return out, seen


def test_row5_sigkill_during_training(train_chain, ref):
    out, seen = train_chain
    assert seen["kill"] == -9 and seen["after_kill"] == 2  # step 3 was taken, not saved: it is done again
    same_training(out, ref)


def test_row6_sigkill_mid_checkpoint(train_chain, ref):
    out, seen = train_chain
    assert seen["mid"] == -9 and seen["partial"] and seen["after_mid"] == 3  # the previous state still loads
    assert no_temp(out)  # the partial one was cleaned
    same_training(out, ref)


def test_row10_sigterm_checkpoints_and_exits_143(train_chain, ref):
    out, seen = train_chain
    assert seen["term"] == 143 and "SIGTERM" in seen["term_err"].strip().splitlines()[-1]
    info = seen["after_term"]
    assert info["step"] == 5 and info["micro"] == 0 and info["data_position"] == 5 and info["config_hash"]
    assert "resumed training at step 5/6" in seen["final_err"]
    same_training(out, ref)


def test_row7_nan_loss_is_skipped_and_repeated_skips_or_a_spike_stop(tiny_model_dir, tmp_path):
    extra = ("--set", "train.max_skipped_steps=3", "--set", "train.loss_spike_factor=10")
    out = tmp_path / "run"
    proc = vipo(*run_cmd(tiny_model_dir, out, 1, *extra), faults="train.loss:1+=nan")
    assert proc.returncode == 2 and "3 consecutive steps" in one_line_error(proc)
    for name in ("skip", "spike"):
        shutil.copytree(out, tmp_path / name)
        shutil.rmtree(tmp_path / name / "round-1" / "train_state")
    proc = vipo(*run_cmd(tiny_model_dir, tmp_path / "spike", 1, *extra), faults="train.loss:3=x1000")
    assert proc.returncode == 2 and "loss_spike_factor=10" in one_line_error(proc)
    skip = tmp_path / "skip"
    proc = vipo(*run_cmd(tiny_model_dir, skip, 1, *extra), faults="train.loss:2=nan")
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = [json.loads(x) for x in (skip / "round-1" / "train_log.jsonl").read_text().splitlines()]
    assert [bool(h.get("skipped")) for h in log] == [False, True] + [False] * 4
    assert "step skipped (1 in a row, 1 in all)" in proc.stderr
    info = json.loads(ledger(skip, "select data from stages where round=1 and stage='train'")[0][0])
    assert info["skipped_steps"] == 1


def test_row8_disk_full(ref, tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    cmd = run_cmd(tiny_model_dir, out)
    samples = out / "round-1" / "samples"
    for fault, committed in (("write.video:11=enospc", 4), ("write.record:2=enospc", 6)):
        before = digest(samples, "*.mp4")
        proc = vipo(*cmd, faults=fault)
        assert proc.returncode == 3 and "disk full" in one_line_error(proc)
        assert no_temp(out) and len(ledger(out, "select id from samples")) == committed
        assert all(digest(samples, "*.mp4").get(k) == v for k, v in before.items())  # earlier artifacts intact
    proc = vipo(*cmd, faults="write.checkpoint:2=enospc")
    assert proc.returncode == 3 and no_temp(out)
    assert json.loads((out / "round-1" / "train_state" / "state.json").read_text())["info"]["step"] == 1
    proc = vipo(*cmd)  # space again: it resumes
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert digest(samples) == digest(ref / "round-1" / "samples")
    same_training(out, ref)


def test_row8_free_space_is_checked_before_each_stage(tiny_model_dir, tmp_path, capsys):
    from vipo.cli import main

    assert main(run_cmd(str(tiny_model_dir), str(tmp_path / "run"), "1", "--set", "min_free_gb=1e9")) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "GB free, below min_free_gb=1000000000.0" in err and "round 0 eval" in err


def test_row9_crash_after_training_before_the_record(ref, tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    cmd = run_cmd(tiny_model_dir, out, 2)
    assert vipo(*cmd, faults="driver.after_train_before_record:1=kill").returncode == -9
    assert not ledger(out, "select 1 from stages where round=1 and stage='train'")
    ckpt = digest(out / "round-1" / "checkpoint", "**/*")
    proc = vipo(*cmd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "not training again" in proc.stderr and "round 1 step" not in proc.stderr
    assert digest(out / "round-1" / "checkpoint", "**/*") == ckpt
    trained = json.loads(ledger(out, "select data from stages where round=1 and stage='train'")[0][0])["policy"]
    used = json.loads(ledger(out, "select data from stages where round=2 and stage='generate'")[0][0])["policy"]
    assert trained == used
    same_training(out, ref)
    assert digest(out / "round-2" / "samples") == digest(ref / "round-2" / "samples")


def test_row11_changed_config_is_refused_unless_forced(ref, tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(ref, out)
    changed = ("--set", "train.beta=7", "--set", "eval.seed=3")
    proc = vipo(*run_cmd(tiny_model_dir, out, 2, *changed))
    err = one_line_error(proc)
    assert proc.returncode == 2 and "train.beta" in err and "eval.seed" in err and "--force" in err
    proc = vipo(*run_cmd(tiny_model_dir, out, 2, *changed, "--force"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "beta: 7.0" in (out / "config.yaml").read_text()
