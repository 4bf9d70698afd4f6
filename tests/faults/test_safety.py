"""Nothing stale, nothing outside, nothing executed (docs/reliability.md, rows 12-19): the real CLI in subprocesses,
given stale folders, a second writer, a killed lock holder, paths leading out, a forged pickle and script in every
field of a report. (The one-line error of each bad input is tested in process in tests/unit/, in the file of the module that raises it.)
"""

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time

import pytest

from tests.faults.test_fault_matrix import digest, one_line_error, run_cmd
from vipo.cli import main

pytestmark = pytest.mark.slow
PROMPTS = ("a red circle moving left", "a blue square moving up")


def cli(*args, faults=None, umask=None, popen=False, timeout=300):
    """``vipo ARGS`` in a fresh process (``python -m vipo.cli``: torch is imported only by the verbs that need it).
    The refusals whose point is not the process boundary run in process (``main``), which costs no start-up."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower() and k != "VIPO_FAULTS"}
    env.update(OMP_NUM_THREADS="1", **({"VIPO_FAULTS": faults} if faults else {}))
    cmd = [sys.executable, "-m", "vipo.cli", *map(str, args)]
    pre = (lambda: os.umask(umask)) if umask is not None else None
    if popen:
        return subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env, preexec_fn=pre
        )
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, preexec_fn=pre)


def gen_cmd(model, out, *extra, prompts=PROMPTS):
    return [
        "generate",
        "--model",
        model,
        "--out",
        out,
        "--samples-per-prompt",
        2,
        "--steps",
        2,
        "--quiet",
        *[x for p in prompts for x in ("--prompt", p)],
        *extra,
    ]


def in_process(capsys, *args):
    """``main(args)`` and its last stderr line (asserted traceback-free)."""
    rc = main([str(a) for a in args])
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return rc, (err.strip().splitlines() or [""])[-1]


def test_row12_stale_generate_is_refused_and_force_starts_over(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "gen"
    proc = cli(*gen_cmd(tiny_model_dir, out), umask=0o027)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # Hugging Face's videofolder layout: the mp4s and metadata.jsonl straight in --out (no samples/samples/)
    meta = [json.loads(x) for x in (out / "metadata.jsonl").read_text().splitlines()]
    assert len(meta) == 4 and all((out / m["file_name"]).is_file() for m in meta) and not (out / "samples").exists()
    # written with the process umask (027): group-readable, like anything else the user writes
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in [out, *out.iterdir()]}
    assert modes.pop("gen") == 0o750 and set(modes.values()) == {0o640}, modes
    (out / "notes.txt").write_text("mine")
    before, seeds = digest(out, "*.mp4"), {m["seed"] for m in meta}
    changed = ("--seed", 7, "--steps", 3)
    rc, err = in_process(
        capsys, *gen_cmd(tiny_model_dir, out, *changed, prompts=PROMPTS[:1] + ("a green triangle moving down",))
    )
    assert rc == 2 and "--force" in err
    assert all(f in err for f in ("seed: 0 then, 7 now", "generate.num_steps: 2 then, 3 now", "prompts"))
    assert digest(out, "*.mp4") == before  # the old videos are neither kept as if new nor deleted
    assert main([str(a) for a in gen_cmd(tiny_model_dir, out, *changed, "--force", prompts=PROMPTS[::-1])]) == 0
    meta = [json.loads(x) for x in (out / "metadata.jsonl").read_text().splitlines()]
    assert [m["prompt"] for m in meta][::2] == list(PROMPTS[::-1]) and {m["seed"] for m in meta}.isdisjoint(seeds)
    after = digest(out, "*.mp4")
    assert after.keys() == before.keys() and all(after[k] != before[k] for k in after)  # made again, not kept
    assert (out / "notes.txt").read_text() == "mine"  # --force deletes only what generate made


def _render_folder(root, prompts):
    """A folder of world clips with metadata.jsonl, rendered (no model): the clip of prompt i, sample j."""
    import random

    from vipo.io.video import write_mp4
    from vipo.world import grammar, render

    root.mkdir()
    rows = []
    for i, p in enumerate(prompts):
        for j in range(2):
            name = f"c{i}{j}.mp4"
            write_mp4(root / name, render.random_clip(grammar.parse(p), random.Random(10 * i + j), 32, 9))
            rows.append({"file_name": name, "prompt": p})
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def judgments(path):
    return {r["key"]: r for r in map(json.loads, path.read_text().splitlines())}


def test_row13_judge_dir_is_a_cache_of_exactly_what_changed(tmp_path):
    import random

    from vipo.io.video import write_mp4
    from vipo.world import grammar, render

    root, out = tmp_path / "videos", tmp_path / "j.jsonl"
    rows = _render_folder(root, PROMPTS)
    judge = ["judge", root, "--out", out, "--pairwise", "--quiet"]
    assert cli(*judge).returncode == 0
    first = judgments(out)
    assert len(first) == 4 + 2 * 2 and {r["critic"] for r in first.values()} == {"world"}
    proc = cli(*judge, "--critic", "pixelstats")  # another critic: refused, its answers are not the world's
    assert proc.returncode == 2 and "judge.critic: 'world' then, 'pixelstats' now" in one_line_error(proc)
    rows[0]["prompt"] = "a red circle moving right"  # c00's prompt changed (and its group with it)
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    write_mp4(root / "c10.mp4", render.random_clip(grammar.parse(PROMPTS[1]), random.Random(99), 32, 9))  # bytes
    proc = cli(*judge)
    assert proc.returncode == 0 and "2 videos changed since they were judged" in proc.stderr
    second = judgments(out)
    kept = {"pw:c01.mp4", "pw:c11.mp4"}
    asked = {"pw:c00.mp4", "pw:c10.mp4", "pair:c10.mp4|c11.mp4", "pair:c11.mp4|c10.mp4"}
    assert second.keys() == kept | asked  # c00|c01 is no pair any more: its prompts differ now
    same = lambda r: {f: v for f, v in r.items() if f != "prompt_id"}  # noqa: E731  (prompt numbers move)
    assert all(same(second[k]) == same(first[k]) for k in kept)  # never asked again
    assert all(second[k]["raw"] != first[k]["raw"] for k in ("pw:c00.mp4", "pw:c10.mp4"))
    assert second["pw:c01.mp4"]["prompt_id"] != second["pw:c00.mp4"]["prompt_id"]  # the groups are the current ones
    assert "not clearly right" in second["pw:c00.mp4"]["raw"]  # judged against its new prompt
    proc = cli(*judge, "--critic", "pixelstats", "--force")  # --force: judged again, all of it
    assert proc.returncode == 0 and {r["critic"] for r in judgments(out).values()} == {"pixelstats"}


def _wait(cond, proc, what, timeout=240):
    deadline = time.time() + timeout
    while not cond():
        assert proc.poll() is None, f"exited {proc.returncode} before {what}: {proc.stderr.read()[-2000:]}"
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_row14_one_writer_a_killed_holder_frees_the_folder_and_sigterm_stops_eval_between_clips(
    tiny_model_dir, tmp_path, capsys
):
    out = tmp_path / "run"
    cmd = run_cmd(tiny_model_dir, out, 1, "--set", "eval.batch_size=1")
    clips = out / "round-0" / "eval"
    holder = cli(*cmd, faults="write.video:2=hang", popen=True)  # hangs inside the 2nd eval clip's write
    try:
        _wait(lambda: (clips / "indist-000.mp4").is_file() and list(clips.glob(".tmp-*")), holder, "the 2nd clip")
        assert (out / ".vipo.lock").read_text().strip() == str(holder.pid)
        log = (out / "vipo.log").read_text()
        for second in (cmd, ["generate", "--round", 1, *cmd[1:]]):  # another run, a stage verb
            rc, err = in_process(capsys, *second)
            assert rc == 2 and f"in use by another vipo process (pid {holder.pid})" in err
        assert (out / "vipo.log").read_text() == log  # the refused writers wrote nothing
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (out / ".vipo.lock").is_file()  # left behind by the killed holder: it locks nothing
    proc = cli(*cmd, faults="write.video:2=term")  # proceeds; SIGTERM during eval: stops after that clip
    assert proc.returncode == 143 and "SIGTERM" in one_line_error(proc)
    assert len(list(clips.glob("*.mp4"))) == 3 and not (clips / "eval.json").exists()
    assert main([str(a) for a in ["eval", "--round", 0, *cmd[1:]]]) == 0  # the stage verb finishes the eval
    assert len(list(clips.glob("*.mp4"))) == 6 and (clips / "eval.json").is_file()


def test_row15_paths_leading_out_of_the_folder_are_refused(tmp_path):
    root = tmp_path / "videos"
    _render_folder(root, PROMPTS[:1])
    secret = tmp_path / "outside.mp4"
    shutil.copy(root / "c00.mp4", secret)
    meta = root / "metadata.jsonl"
    lines = meta.read_text().splitlines()
    (root / "link.mp4").symlink_to(secret)
    for bad, verb, said in (
        ("../outside.mp4", "judge", "'..' is refused"),
        (str(secret), "eval", "absolute paths are refused"),
        ("link.mp4", "judge", "a symlink leads outside"),
    ):
        meta.write_text(lines[0] + "\n" + json.dumps({"file_name": bad, "prompt": PROMPTS[0]}) + "\n")
        args = [verb, root, "--out", tmp_path / f"{verb}-out", "--quiet"]
        proc = cli(*args)
        assert proc.returncode == 2 and f"{meta}:2: file_name: {bad!r}" in one_line_error(proc), proc.stderr
        assert said in one_line_error(proc) and not (tmp_path / f"{verb}-out").exists()


def test_row16_a_forged_pickle_state_is_never_executed(tmp_path, capsys):
    out, pwned = tmp_path / "pretrain", tmp_path / "PWNED"
    state = out / "state"
    state.mkdir(parents=True)

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {pwned}",))

    import pickle

    (state / "state.pt").write_bytes(pickle.dumps({"step": Payload()}))
    (state / "COMPLETE").write_text("ok\n")
    args = [
        "world",
        "pretrain",
        "--out",
        out,
        "--steps",
        2,
        "--set",
        "widths=[16,32,32]",
        "--set",
        "text_width=32",
        "--set",
        "batch_size=2",
        "--quiet",
    ]
    proc = cli(*args)
    assert proc.returncode == 2 and "pickle-format state" in one_line_error(proc) and "--allow-pickle" in proc.stderr
    try:
        rc, err = in_process(capsys, *args, "--allow-pickle")  # even trusted, only torch's restricted unpickler
    finally:
        from vipo.models import set_allow_pickle

        set_allow_pickle(False)
    assert rc == 2 and "not a plain pretraining state" in err
    assert not pwned.exists()


XSS = "<script>document.body.dataset.pwned+='{0}'</script><img src=x onerror=\"document.body.dataset.pwned+='{0}'\">"


def dom(chromium, page):
    return subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=3000",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout


def test_row17_script_in_every_report_field_shows_as_text(tiny_run_dir, chromium, tmp_path):
    """Every field of every record run/report.py reads carries a script; the page shows it as text, runs none."""
    run = tmp_path / XSS.format("folder").replace("</script>", "")  # a folder name cannot hold '/'
    shutil.copytree(tiny_run_dir, run)
    summary = json.loads((run / "summary.json").read_text())
    summary.update({k: XSS.format(k) for k in ("method", "model", "last_round", "patience")}, stopped_early=True)
    (run / "summary.json").write_text(json.dumps(summary))
    for k in (0, 1):
        ev = json.loads((run / f"round-{k}" / "eval" / "eval.json").read_text())
        ev["indist"] = {key: XSS.format(f"eval{k}.{key}") for key in [*ev["indist"], "n"]}
        ev["heldout"] = XSS.format(f"eval{k}.heldout")
        if k:  # round 0's intervals are text, round 1's a mapping of text
            ev["indist"]["ci95"] = {"semantic_pass": XSS.format("ci"), "color": [XSS.format("lo"), 1]}
        (run / f"round-{k}" / "eval" / "eval.json").write_text(json.dumps(ev))
        res = run / f"round-{k}" / "eval" / "results.jsonl"
        rows = [json.loads(x) for x in res.read_text().splitlines()]
        rows[0]["labels"] = XSS.format("labels")
        rows[1]["labels"] = {d: XSS.format(f"label.{d}") for d in ("semantic", "fidelity", "motion")}
        rows[2].update(passed=XSS.format("passed"), file_name=XSS.format("results.file_name"))
        res.write_text("".join(json.dumps(r) + "\n" for r in rows))
    meta = run / "round-0" / "eval" / "metadata.jsonl"
    rows = [json.loads(x) for x in meta.read_text().splitlines()]
    for i, r in enumerate(rows):
        r.update(prompt=XSS.format(f"prompt{i}"), seed=XSS.format(f"seed{i}"))
    rows[1]["split"] = XSS.format("split")
    rows[2]["file_name"] = XSS.format("file_name").replace("</script>", "")  # no such file: a row without strips
    meta.write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary_file = run / "round-1" / "checkpoint" / "train_summary.json"
    train = json.loads(summary_file.read_text())
    summary_file.write_text(
        json.dumps(
            {
                key: XSS.format(f"train.{key}")
                for key in [
                    *train,
                    "steps",
                    "grad_norm_preference",
                    "grad_norm_winner_nll",
                    "lambda_desirable",
                    "n_desirable",
                ]
            }
        )
    )
    for name, keys in (("pairs.jsonl", ("gap",)), ("train_log.jsonl", ("implicit_acc", "reward_margin"))):
        path = run / "round-1" / name
        rows = [dict(json.loads(x), **{key: XSS.format(key) for key in keys}) for x in path.read_text().splitlines()]
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    proc = cli("report", run)
    assert proc.returncode == 0, proc.stderr[-3000:]
    control = tmp_path / "control.html"  # the same payload unescaped does run: the check below can fail
    control.write_text(f"<html><body><p>{XSS.format('control')}</p></body></html>")
    assert 'data-pwned="undefinedcontrol' in dom(chromium, control)
    got = dom(chromium, run / "report.html")
    assert "vipo report" in got and "data-pwned" not in got  # no script ran, no handler fired
    shown = ["folder", "method", "model", "eval0.semantic_pass", "eval1.fidelity_good", "prompt0", "seed0", "seed3"]
    for field in shown:  # shown as text: the markup arrives escaped in the DOM's text
        assert f"&lt;img src=x onerror=\"document.body.dataset.pwned+='{field}'\"&gt;" in got, field
    assert "<script>document" not in got and "<img src=x" not in got
    md = (run / "report.md").read_text()
    assert "<script>" not in md and "&lt;script&gt;document.body.dataset.pwned+=&#x27;method" in md


def test_row18_quiet_silences_the_libraries_progress_bars(tiny_family_dir, tmp_path, capsys):
    import diffusers

    model = tiny_family_dir("cogvideox")
    diffusers.utils.logging.enable_progress_bar()  # the library's default (an earlier --quiet in this process)
    diffusers.DiffusionPipeline.from_pretrained(str(model))
    assert "Loading pipeline components" in capsys.readouterr().err  # what --quiet must silence: the test can fail
    quiet = cli(
        "generate",
        "--model",
        model,
        "--prompt",
        PROMPTS[0],
        "--samples-per-prompt",
        1,
        "--steps",
        2,
        "--out",
        tmp_path / "gen",
        "--quiet",
    )
    assert quiet.returncode == 0 and "it/s]" not in quiet.stderr and "Loading" not in quiet.stderr, quiet.stderr


def test_row19_a_yaml_value_that_does_not_parse_is_one_line(tmp_path):
    proc = cli("run", "--out", tmp_path / "run", "--set", "train.timestep_window=[0.9,1.0")
    assert proc.returncode == 2 and "--set train.timestep_window: '[0.9,1.0' is not a YAML value" in one_line_error(
        proc
    )
    assert not (tmp_path / "run").exists()
