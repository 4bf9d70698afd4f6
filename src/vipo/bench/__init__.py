"""``vipo bench``: what vipo's training step, generation, judging and a round cost, as ratios measured in one run.

Every figure is a ratio of contenders timed in one interleaved run (:mod:`.timing`), with its median and range over
the rounds and the contenders' median seconds, so it holds on a loaded machine and transfers to another one better
than an absolute time. The run writes ``docs/benchmarks.md`` (``--out``) with the command line and the machine's
facts, and the raw numbers beside it as JSON.

- :mod:`.steps`: DPO, KTO and RWR steps against vipo's own SFT step on the same videos (live and cached reference),
  peak memory, VAE and text-encoder calls per training sample, and the same step as diffusers' CogVideoX LoRA and
  Diffusion-DPO examples write it, on a 4-layer 256-wide CogVideoX (:mod:`.tiny`);
- :mod:`.loop`: generation batched against one video at a time (the world and the CogVideoX model), judging both
  orders batched against sequential (a served critic stand-in), a round's wall time by stage (a recipe, round 1);
- :mod:`.gpu` (``--gpu``): real-size CogVideoX-2B/5B and Wan 2.1 1.3B from their published configs with random
  weights, bf16 on one GPU: step time, peak memory and model FLOPs utilization per recipe setting, generation seconds
  per video; appended to the same file.
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..io import atomic
from . import report
from .timing import Machine, Ratio, held_bytes, interleave, peak_memory

log = logging.getLogger(__name__)
PARTS = ("steps", "generation", "judging", "round")


@dataclass
class Options:
    out: Path = Path("docs/benchmarks.md")
    repeats: int = 5
    threads: int = 1
    device: str = "cpu"
    parts: tuple = PARTS
    round_config: str = "configs/world.yaml"
    round_set: dict = field(default_factory=dict)
    tiny: bool = False
    command: str = ""


def run(opts: Options) -> dict:
    """Measure ``opts.parts`` and write the report; return the raw results."""
    from . import loop, steps, tiny

    torch.set_num_threads(opts.threads)
    machine = Machine.here(opts.device)
    started = time.time()
    size = tiny.TEST if opts.tiny else tiny.BENCH
    results: dict = {"command": opts.command, "machine": machine.facts, "tiny": opts.tiny, "parts": list(opts.parts)}
    kept = keep_previous(opts.out, results, opts.parts)
    if kept:
        log.info(
            "bench: %s keeps its earlier measurement of %s (--only %s)", opts.out, ", ".join(kept), " ".join(opts.parts)
        )

    def done(part: str) -> None:  # the report after each part: a run stopped later keeps what it measured
        results["elapsed_s"] = round(time.time() - started, 1)
        results["done"] = results.get("done", []) + [part]
        write(opts.out, results)

    if "steps" in opts.parts:
        log.info("bench: training steps (%s)", size.describe())
        results["steps"] = measure_steps(steps.build(size, opts.device), opts.repeats, opts.device, size)
        done("steps")
    if "generation" in opts.parts:
        log.info("bench: generation")
        from ..models import load_model

        gen = {}
        world = load_model("world", device=opts.device)
        gen["world"] = loop.generation(
            world, 2 if opts.tiny else 8, 2 if opts.tiny else 15, 2.0, opts.repeats, opts.device
        )
        gen["cogvideox"] = loop.generation(
            tiny.cogvideox_model(size, opts.device),
            2 if opts.tiny else 4,
            2 if opts.tiny else 5,
            6.0,
            opts.repeats,
            opts.device,
        )
        results["generation"] = gen
        done("generation")
    if "judging" in opts.parts:
        log.info("bench: judging")
        results["judging"] = loop.judging(
            2 if opts.tiny else 4,
            opts.repeats,
            latency=0.01 if opts.tiny else 0.2,
            frames=2 if opts.tiny else 8,
            frame_size=32 if opts.tiny else 224,
        )
        done("judging")
    if "round" in opts.parts:
        log.info("bench: a round of %s", opts.round_config)
        results["round"] = loop.round_stages(opts.round_config, opts.round_set or None, opts.device)
        results["done"] = results.get("done", []) + ["round"]
    machine.note_end()
    results["elapsed_s"] = round(time.time() - started, 1)
    write(opts.out, results)
    return results


def measure_steps(b, repeats: int, device: str, size) -> dict:
    from .steps import RATIOS, STEPS, encoder_calls

    with b.model.pinned():  # as a training round runs its steps
        times = interleave(b.contenders, repeats, warmup=1, device=device)
        calls = encoder_calls(b)
        memory = {name: [] for name in ("sft", "dpo", "dpo_cached", "kto", "rwr", "diffusers_lora", "diffusers_dpo")}
        held = held_bytes(b.model.denoiser, optimizer=b.opt)  # the transformer with its LoRA, AdamW's moments
        for _ in range(max(1, min(3, repeats))):
            for name in memory:
                memory[name].append(peak_memory(b.contenders[name], device, held))
    ratios = {label: Ratio.of(times[a], times[c]) for label, a, c in RATIOS}
    # the cached step with its share of the reference pass: each epoch is one step over the 4 pairs here, so a step
    # carries 1/epochs of the pass (ref_cache draws of every pair)
    amortized = [d + p / b.epochs for d, p in zip(times["dpo_cached"], times["ref_cache_pass"])]
    ratios[f"DPO / SFT, ref_cache {b.ref_cache}, the pass amortized over {b.epochs} epochs"] = Ratio.of(
        amortized, times["sft"]
    )
    ratios["no-grad forward / SFT step (the live reference's share)"] = Ratio.of(times["forward_nograd"], times["sft"])
    ratios["VAE encode of the 8 clips / no-grad forward of the 8 latents"] = Ratio.of(
        times["vae_encode"], times["forward_nograd"]
    )
    ratios["text encoder on the 4 prompts / no-grad forward of the 8 latents"] = Ratio.of(
        times["text_encode"], times["forward_nograd"]
    )
    mem = {name: {k: statistics.median(m[k] for m in ms) for k in ("peak", "step")} for name, ms in memory.items()}
    return {
        "model": size.describe(),
        "size": size.as_dict(),
        "pairs": len(b.pairs),
        "epochs": b.epochs,
        "ref_cache": b.ref_cache,
        "repeats": repeats,
        "times": times,
        "ratios": ratios,
        "memory": mem,
        "encoder_calls": calls,
        "steps": list(STEPS),
    }


def keep_previous(out: Path, results: dict, parts: tuple) -> list[str]:
    """With ``--only``, the report keeps the parts an earlier run measured into ``out`` (its .json beside it) and this
    run does not: each keeps the command that measured it (``results["commands"]``). A tiny run never mixes with a
    real one. Returns the parts kept."""
    path = Path(out).with_suffix(".json")
    if set(parts) >= set(PARTS) or not path.is_file():
        return []
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        log.warning("bench: %s is unreadable; the report holds this run's parts only", path)
        return []
    if bool(old.get("tiny")) != bool(results.get("tiny")):
        return []
    kept = [p for p in PARTS if p not in parts and p in old.get("done", []) and old.get(p)]
    commands = dict(old.get("commands", {}))
    for p in kept:
        results[p] = old[p]
        commands.setdefault(p, old.get("command", ""))
    for p in parts:
        commands[p] = results["command"]
    if kept:
        results["commands"] = {p: commands[p] for p in PARTS if p in commands}
        results["done"] = kept
        results["parts"] = [p for p in PARTS if p in kept or p in parts]
    return kept


def write(out: Path, results: dict) -> None:
    out = Path(out)
    atomic.write_text(out, report.markdown(results))
    atomic.write_text(out.with_suffix(".json"), json.dumps(results, indent=1, default=_plain) + "\n")
    log.info("bench: wrote %s and %s", out, out.with_suffix(".json"))


def _plain(x):
    if isinstance(x, Ratio):
        return x.__dict__
    if isinstance(x, Path):
        return str(x)
    raise TypeError(type(x))
