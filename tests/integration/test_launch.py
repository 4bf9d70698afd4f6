"""Every stage under a launcher: ``torchrun --standalone --nproc_per_node 2`` on the CPU (gloo), against one process.

The one-process runs here are plain ``python launch.py ...`` subprocesses (no launcher environment: no process group).
What must hold (docs/scale.md): samples, latents and the base model's evaluation clips byte-identical, the ledger's
rows the same and in the same order, the training log and the trained LoRA equal to float tolerance (the two ranks
sum gradients in another order than one process does), and a launch whose rank 1 is killed mid-generation resumes,
run again as it was, to that same result.
"""

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import TINY_RUN

pytestmark = pytest.mark.slow
# main() leaves the process group before it returns (dist.teardown: gloo left to interpreter exit can abort a rank)
LAUNCH = (
    "import sys, torch; torch.manual_seed(0); from vipo.cli import main; rc = main(sys.argv[1:]); "
    "assert not torch.distributed.is_initialized(), 'main() returned inside the process group'; sys.exit(rc)\n"
)
# 3 prompts x 3 samples in batches of 2: 5 batches, so both ranks generate; 3 pairs, 2 per micro-batch
ARGS = TINY_RUN + ["--set", "generate.batch_size=2", "--set", "eval.batch_size=2", "--set", "train.epochs=4"]
CONFIGS = Path(__file__).parents[2] / "configs" / "accelerate"
TABLES = ("samples", "judgments", "pairs", "examples", "quarantine")


def launch(n, *args, tmp, faults=None, extra=None, timeout=600):
    """``vipo *args`` in one plain process (n = 1) or under ``torchrun --standalone --nproc_per_node n``, with the
    environment variables ``extra`` added (an accelerate config's, from :func:`accelerate_env`)."""
    script = tmp / "launch.py"
    script.write_text(LAUNCH)
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower() and k != "VIPO_FAULTS"}
    env.update({"OMP_NUM_THREADS": "1", **(extra or {})})
    if faults:
        env["VIPO_FAULTS"] = faults
    head = (
        [sys.executable]
        if n == 1
        else [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n)]
    )
    return subprocess.run(
        [*head, str(script), *map(str, args)], capture_output=True, text=True, env=env, timeout=timeout
    )


def digest(folder, pattern="*"):
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.glob(pattern))
        if p.is_file()
    }


def ledger_rows(out, table):
    db = sqlite3.connect(out / "ledger.sqlite")
    try:
        return [json.loads(d) for (d,) in db.execute(f"select data from {table} order by rowid")]
    finally:
        db.close()


def lora(out):
    return load_file(str(out / "round-1" / "checkpoint" / "lora-round-1" / "pytorch_lora_weights.safetensors"))


def same_result(one, two):
    """The 2-process run folder ``two`` holds what the 1-process run ``one`` does (module docstring)."""
    for part in ("samples", "latents"):
        assert digest(two / "round-1" / part) == digest(one / "round-1" / part), part
    assert digest(two / "round-0" / "eval", "*.mp4") == digest(one / "round-0" / "eval", "*.mp4")
    assert (two / "round-0" / "eval" / "eval.json").read_text() == (one / "round-0" / "eval" / "eval.json").read_text()
    for table in TABLES:
        assert ledger_rows(two, table) == ledger_rows(one, table), table
    # training: the same steps and metrics, to float tolerance
    log1, log2 = (
        [json.loads(x) for x in (o / "round-1" / "train_log.jsonl").read_text().splitlines()] for o in (one, two)
    )
    assert len(log1) == len(log2) > 1
    for a, b in zip(log1, log2):
        assert a.keys() == b.keys()
        for k in a:
            # the errors, NLLs and loss agree to ~2e-7 relative (measured); rewards, margins, preference losses and
            # gradient norms are differences of close errors times beta * T: an error's 2e-8 becomes ~1e-4 there
            # (measured 1.5e-4 on a margin of 0.005 at step 2, 1e-4 on a reward of -0.56)
            if k == "implicit_acc" and a["step"] == 1:
                # at step 1 the policy is the reference: each margin is float noise (with ref_cache its errors come
                # from batches of another composition), so its sign, which the accuracy counts, is a coin flip
                continue
            if k.startswith(("err_", "nll_", "loss")):
                assert b[k] == pytest.approx(a[k], rel=1e-5, abs=1e-7), (a["step"], k)
            else:
                assert b[k] == pytest.approx(a[k], rel=2e-3, abs=1e-3), (a["step"], k)
    a, b = lora(one), lora(two)
    assert a.keys() == b.keys()
    scale = max(v.abs().max().item() for v in a.values())
    assert scale > 0
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    assert diff <= 1e-5 * scale, f"LoRA differs by {diff} (largest weight {scale})"
    # the trained policy's evaluation clips: as close as the weights (a pixel may round the other way; measured on
    # the world round: a mean of 0.70 levels of 255, a few levels at most)
    for name in digest(one / "round-1" / "eval", "*.mp4"):
        from vipo.io.video import read_mp4

        x, y = (read_mp4(o / "round-1" / "eval" / name).astype(int) for o in (one, two))
        assert x.shape == y.shape and np.abs(x - y).mean() < 2.0, name


#: a round stage by stage, as a user drives one verb at a time (each verb a launch of its own)
STAGES = (
    ("eval", "--round", 0),
    ("generate", "--round", 1),
    ("judge", "--round", 1),
    ("pairs", "--round", 1),
    ("train", "--round", 1),
    ("eval", "--round", 1),
)


@pytest.fixture(scope="module")
def world_runs(tmp_path_factory, tiny_model_dir):
    """A world KTO round by ``vipo run`` in one process, and stage by stage (``vipo eval``, ``generate``, ``judge``,
    ``pairs``, ``train``, ``eval``) under 2 processes in configs/accelerate/ddp.yaml's environment."""
    base = tmp_path_factory.mktemp("launch-world")
    common = ["--model", tiny_model_dir, "--method", "kto", *ARGS, "--set", "train.kto_kl_pool=4"]
    one, two = base / "n1", base / "n2"
    proc = launch(1, "run", "--out", one, "--rounds", 1, *common, tmp=base)
    assert proc.returncode == 0, proc.stderr[-4000:]
    ddp = accelerate_env(CONFIGS / "ddp.yaml")[1]
    stderr = {}
    for verb, *rest in STAGES:
        proc = launch(2, verb, *rest, "--out", two, *common, tmp=base, extra=ddp)
        assert proc.returncode == 0, (verb, proc.stderr[-4000:])
        stderr[verb] = stderr.get(verb, "") + proc.stderr
    return one, two, stderr


def test_world_round_stage_by_stage_under_the_ddp_launch_equals_one_process(world_runs):
    """Every stage verb under 2 processes (configs/accelerate/ddp.yaml's environment) gives what one process's
    ``vipo run`` of the same round gives."""
    one, two, stderr = world_runs
    assert "generating 9 of 9 samples on 2 processes" in stderr["generate"]
    same_result(one, two)
    # KTO's pool holds every rank's rewards: the logged rewards and kto_z0 are equal above. (In this tiny round every
    # reward stays <= 0, so the clamped z0 stays 0: a pool that moves z0 is not exercised here.)
    assert not list(two.rglob(".tmp-*"))  # no stray temporary file


def test_cogvideox_rank_killed_mid_generation_resumes_to_the_one_process_result(tmp_path, tiny_family_dir):
    model = tiny_family_dir("cogvideox")
    # a DPO round on cached reference errors (train.ref_cache): their pass is sharded too (3 pairs x 2 draws in
    # batches of 2: rank 0 computes 2 batches, rank 1 one, then repeats a batch it drops)
    args = ["--model", model, "--rounds", 1, *ARGS, "--set", "judge.critic=pixelstats", "--set", "train.ref_cache=2"]
    one, two = tmp_path / "one", tmp_path / "two"
    proc = launch(1, "run", "--out", one, *args, tmp=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    # the standalone stage verb, rank 1 SIGKILLed right after writing its second batch (before rank 0 commits it)
    proc = launch(
        2, "generate", "--round", 1, "--out", two, *args, tmp=tmp_path, faults="generate.after_batch:2=kill@1"
    )
    assert proc.returncode != 0
    committed = [r["id"] for r in ledger_rows(two, "samples")]
    assert len(committed) == 4  # the first round of batches (one per rank), nothing of the second
    samples = two / "round-1" / "samples"
    stamps = {sid: (samples / f"{sid}.mp4").stat().st_mtime_ns for sid in committed}
    proc = launch(2, "run", "--out", two, *args, tmp=tmp_path)  # the same launch again, as a whole run
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "generating 5 of 9 samples on 2 processes" in proc.stderr
    assert (two / "report.md").is_file() and not list(two.rglob(".tmp-*"))  # written once, by rank 0
    assert all((samples / f"{sid}.mp4").stat().st_mtime_ns == t for sid, t in stamps.items())  # never redone
    same_result(one, two)
    cached = [load_file(str(o / "round-1" / "ref_cache.safetensors")) for o in (one, two)]
    assert bool(cached[0]["done"].all()) and bool(cached[1]["done"].all())
    assert torch.allclose(cached[0]["errors"], cached[1]["errors"], rtol=1e-6, atol=0)
    # the text cache holds each prompt once, written by one rank before sampling
    assert len(list((two / "cache" / "text").glob("*/*.safetensors"))) == len(
        list((one / "cache" / "text").glob("*/*.safetensors"))
    )


def accelerate_env(config, n=2):
    """The environment ``accelerate launch --config_file CONFIG --num_processes n`` gives its workers, from
    accelerate's own parser (on a CPU-only machine ``accelerate launch`` itself runs one process)."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_multi_gpu_env

    args = launch_command_parser().parse_args(["--config_file", str(config), "--num_processes", str(n), "x.py"])
    args, defaults, _ = _validate_launch_command(args)
    if args.use_deepspeed:  # as accelerate's launch_command does before its DeepSpeed launcher
        from accelerate.utils.launch import prepare_deepspeed_cmd_env

        args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config) if defaults else ""
        env = prepare_deepspeed_cmd_env(args)[1]
    else:
        env = prepare_multi_gpu_env(args)
    return args, {k: v for k, v in env.items() if os.environ.get(k) != v}  # what the launcher adds


def test_accelerate_configs_parse():
    assert sorted(p.name for p in CONFIGS.glob("*.yaml")) == ["ddp.yaml", "fsdp.yaml"]
    args, env = accelerate_env(CONFIGS / "ddp.yaml")
    assert args.multi_gpu and not args.use_fsdp and "ACCELERATE_USE_FSDP" not in env
    args, env = accelerate_env(CONFIGS / "fsdp.yaml")
    assert args.use_fsdp and env["ACCELERATE_USE_FSDP"] == "true" and env["FSDP_VERSION"] == "2"
    assert env["FSDP_AUTO_WRAP_POLICY"] == "TRANSFORMER_BASED_WRAP"


def full_weights(out):
    return load_file(str(out / "round-1" / "checkpoint" / "unet" / "diffusion_pytorch_model.safetensors"))


def test_fsdp_full_finetune_under_the_accelerate_config_equals_one_process(tmp_path, tiny_model_dir):
    """A full fine-tune sharded by FSDP2 over 2 ranks (the environment of configs/accelerate/fsdp.yaml), its rank 1
    killed after step 3 and launched again, trains what one process trains: the resumable state is gathered whole to
    rank 0, written in the one-process format and sharded again on load."""
    _, env = accelerate_env(CONFIGS / "fsdp.yaml")
    args = ["--model", tiny_model_dir, "--rounds", 1, *ARGS, "--set", "train.finetune=full", "--set", "train.lr=1e-4"]
    one, two = tmp_path / "one", tmp_path / "two"
    proc = launch(1, "run", "--out", one, *args, tmp=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    proc = launch(2, "run", "--out", two, *args, tmp=tmp_path, faults="train.after_step:3=kill@1", extra=env)
    assert proc.returncode != 0 and (two / "round-1" / "train_state" / "COMPLETE").is_file()
    proc = launch(2, "run", "--out", two, *args, tmp=tmp_path, extra=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "FSDP2: the denoiser and its reference sharded over 2 processes" in proc.stderr
    assert "resumed training at step 2" in proc.stderr
    log1, log2 = (
        [json.loads(x) for x in (o / "round-1" / "train_log.jsonl").read_text().splitlines()] for o in (one, two)
    )
    assert len(log1) == len(log2) > 1
    for a, b in zip(log1, log2):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4, abs=1e-6) and b["grad_norm"] == pytest.approx(
            a["grad_norm"], rel=1e-3
        )
    # The weights: the ranks sum gradients in another order than one process, and AdamW turns a float-rounding
    # difference in a near-zero gradient into up to 2 lr per step on that element (m / sqrt(v) flips sign), so the
    # elementwise bound is Adam's, 2 lr per step; the update as a whole must agree to 1%
    base = load_file(str(Path(tiny_model_dir) / "unet" / "diffusion_pytorch_model.safetensors"))
    a, b = full_weights(one), full_weights(two)
    assert a.keys() == b.keys() == base.keys()
    steps = len(log1)
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 2 * 1e-4 * steps
    da = torch.cat([(a[k] - base[k]).flatten() for k in a])
    db = torch.cat([(b[k] - base[k]).flatten() for k in a])
    assert da.norm() > 0 and (da - db).norm() <= 1e-2 * da.norm(), float((da - db).norm() / da.norm())


# LiFT's engine (DeepSpeed ZeRO-2), as a user would bring it: refused at start, every rank, one line, exit 2
DEEPSPEED = """compute_environment: LOCAL_MACHINE
distributed_type: DEEPSPEED
deepspeed_config:
  zero_stage: 2
  gradient_accumulation_steps: 1
  offload_optimizer_device: none
  offload_param_device: none
num_machines: 1
num_processes: 2
machine_rank: 0
mixed_precision: 'no'
use_cpu: false
"""


def test_deepspeed_config_is_refused_at_start(tmp_path, tiny_model_dir):
    from vipo import dist

    config = tmp_path / "deepspeed.yaml"
    config.write_text(DEEPSPEED)
    args, env = accelerate_env(config)
    assert args.use_deepspeed and env["ACCELERATE_USE_DEEPSPEED"] == "true"
    proc = launch(
        2, "run", "--model", tiny_model_dir, "--out", tmp_path / "run", "--rounds", 1, *ARGS, tmp=tmp_path, extra=env
    )
    # one line per rank (the two ranks write to one stderr: their lines may run together, so count the messages)
    assert proc.returncode != 0 and proc.stderr.count("vipo: error: ") == 2, proc.stderr[-3000:]
    assert proc.stderr.count("vipo: error: " + dist.DEEPSPEED_REFUSED) == 2
    assert "DeepSpeed" in dist.DEEPSPEED_REFUSED and "configs/accelerate/fsdp.yaml" in dist.DEEPSPEED_REFUSED
    assert not (tmp_path / "run" / "ledger.sqlite").exists()  # refused before anything was written
