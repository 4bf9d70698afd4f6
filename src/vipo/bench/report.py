"""``docs/benchmarks.md`` from a bench run's results: the targets, then every figure with its median and range."""

from __future__ import annotations

import statistics

from .timing import Ratio

VIPO_STEPS = ("sft", "dpo", "dpo_cached", "kto", "kto_cached", "rwr")
TITLES = {
    "sft": "vipo SFT",
    "dpo": "vipo DPO",
    "dpo_cached": "vipo DPO, ref_cache 4",
    "kto": "vipo KTO",
    "kto_cached": "vipo KTO, ref_cache 4",
    "rwr": "vipo RWR",
    "diffusers_lora": "diffusers CogVideoX-LoRA example",
    "diffusers_dpo": "diffusers Diffusion-DPO example",
    "ref_cache_pass": "the reference-error pass (4 draws)",
    "forward_nograd": "a no-grad forward (8 videos)",
    "vae_encode": "VAE encode (8 clips)",
    "text_encode": "text encoder (4 prompts)",
}


def _r(x) -> Ratio:
    return x if isinstance(x, Ratio) else Ratio(**x)


def _med(xs, scale=1.0, digits=2) -> str:
    return f"{scale * statistics.median(xs):.{digits}f} [{scale * min(xs):.{digits}f}, {scale * max(xs):.{digits}f}]"


def targets(results: dict) -> list[tuple[str, str, str]]:
    """(target, measured, verdict) for the issue's targets that this run measured."""
    out = []

    def row(name: str, value: float, text: str, ok: bool):
        out.append((name, text, "met" if ok else "**missed** (docs/performance.md explains the gap)"))

    st = results.get("steps")
    if st:
        r = {k: _r(v) for k, v in st["ratios"].items()}
        live = r["DPO / SFT, live reference"]
        row("DPO / SFT <= 1.45 (live reference)", live.median, live.fmt(), live.median <= 1.45)
        amort = next(v for k, v in r.items() if k.startswith("DPO / SFT, ref_cache") and "amortized" in k)
        row(
            f"DPO / SFT <= 1.10 with ref_cache 4 at the world recipe's {st['epochs']} epochs (the pass amortized)",
            amort.median,
            amort.fmt(),
            amort.median <= 1.10,
        )
        peak = st["memory"]["dpo"]["peak"] / st["memory"]["sft"]["peak"]
        row("peak memory DPO / SFT <= 1.10", peak, f"{peak:.3f}", peak <= 1.10)
        enc = max(max(v.values()) for k, v in st["encoder_calls"].items() if k in VIPO_STEPS)
        row(
            "0 VAE encodes and 0 text-encoder forwards per training sample (vipo's steps)",
            enc,
            f"{enc:g} (largest over vipo's steps)",
            enc == 0,
        )
        rwr = r["RWR / SFT"]
        row("RWR / SFT <= 1.05", rwr.median, rwr.fmt(), rwr.median <= 1.05)
    gen = results.get("generation")
    if gen:
        for fam, g in gen.items():
            s = _r(g["speedup"])
            row(
                f"batched generation >= 1.3x one at a time on the CPU ({fam}, {g['n']} seeds)",
                s.median,
                s.fmt() + "x",
                s.median >= 1.3,
            )
    return out


def markdown(results: dict) -> str:
    lines = [
        "# Benchmarks",
        "",
        "Written by `vipo bench` (src/vipo/bench/); do not edit by hand: run the command again. Every figure is a "
        "ratio of contenders timed in one interleaved run (round r runs each contender once, odd rounds in "
        "reverse order), given as the median over the rounds with [min, max]; seconds are medians. "
        "docs/performance.md explains the figures, what the reference cache trades away, and each gap.",
        "",
    ]
    if results.get("tiny"):
        lines += ["**A tiny-size run (`--tiny`): it checks the machinery; its numbers mean nothing.**", ""]
    lines += ["Command:", "", "```", results.get("command") or "vipo bench", "```", "", "| machine | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in results.get("machine", {}).items()]
    lines += [f"| bench wall time | {results.get('elapsed_s', 0):.0f} s |", ""]
    earlier = {p: c for p, c in results.get("commands", {}).items() if c != results.get("command")}
    if earlier:  # parts kept from an earlier run (this one measured --only the others)
        lines += ["Parts measured by an earlier run, on its own machine state:", ""]
        lines += [f"- {p}: `{c}`" for p, c in earlier.items()]
        lines.append("")
    rows = targets(results)
    if rows:
        lines += ["## Targets (issue #19)", "", "| target | measured | |", "|---|---|---|"]
        lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
        lines.append("")
    if results.get("steps"):
        lines += _steps(results["steps"])
    if results.get("generation"):
        lines += _generation(results["generation"])
    if results.get("judging"):
        lines += _judging(results["judging"])
    if results.get("round"):
        lines += _round(results["round"])
    missing = [p for p in results.get("parts", []) if p not in results.get("done", p)]
    if missing:
        lines += [
            "## Not measured in this run",
            "",
            "This run did not measure (it was stopped, or is still running): "
            + ", ".join(missing)
            + ". Run the command again (or with `--only PART`) where the machine allows.",
            "",
        ]
    if not results.get("tiny"):
        lines += GPU_NOT_MEASURED
    return "\n".join(lines).rstrip() + "\n"


#: the GPU section until ``vipo bench --gpu`` has run somewhere (it appends its own section below this one)
GPU_NOT_MEASURED = [
    "## GPU",
    "",
    "**Not measured here**: this report was written on a machine without a GPU. On a machine with one CUDA GPU run",
    "",
    "```",
    "vipo bench --gpu",
    "```",
    "",
    "It builds CogVideoX-2B, CogVideoX-5B and Wan 2.1 1.3B from their published configs with random weights (nothing "
    "is downloaded), measures in bf16 each recipe's DPO (live and cached), KTO and SFT step time and peak memory, "
    "model FLOPs utilization and generation seconds per video, within 9 minutes, and appends its section below. "
    "`vipo bench --gpu --tiny` runs the same code on tiny models on the CPU (tests/unit/test_bench.py does, in "
    "`make test`).",
    "",
]


def _steps(st: dict) -> list[str]:
    out = [
        "## Training step",
        "",
        f"Model: {st['model']}. One LoRA (rank 16, attention projections), AdamW, one optimizer step per call on "
        f"{st['pairs']} pairs = {2 * st['pairs']} videos; {st['repeats']} interleaved rounds after one warm-up. "
        "The diffusers examples are re-implemented from their published step logic (src/vipo/bench/steps.py).",
        "",
        "| figure | ratio | seconds (numerator / denominator) |",
        "|---|---|---|",
    ]
    for label, r in st["ratios"].items():
        r = _r(r)
        out.append(f"| {label} | {r.fmt()} | {r.a:.2f} / {r.b:.2f} |")
    out += ["", "| contender | seconds per call, median [min, max] |", "|---|---|"]
    out += [f"| {TITLES.get(k, k)} | {_med(v)} |" for k, v in st["times"].items()]
    out += [
        "",
        "### Peak memory",
        "",
        "Peak tensor memory of one step: the step's own tensors at their peak (activations, gradients, "
        "temporaries), and that plus what stays live throughout (the transformer's weights with the LoRA and "
        "AdamW's moments). CPU: every storage the step creates, followed by a torch dispatch mode (tracemalloc "
        "does not see torch's allocator); CUDA: max_memory_allocated.",
        "",
        "| step | peak MiB | step's own MiB | peak / SFT's |",
        "|---|---|---|---|",
    ]
    sft_peak = st["memory"]["sft"]["peak"]
    for k, m in st["memory"].items():
        out.append(
            f"| {TITLES.get(k, k)} | {m['peak'] / 2**20:.1f} | {m['step'] / 2**20:.1f} | {m['peak'] / sft_peak:.3f} |"
        )
    out += [
        "",
        "### VAE encodes and text-encoder forwards per training sample",
        "",
        "Rows through the VAE's `encode` and the text encoder's forward inside one step, counted with hooks, per "
        "training video.",
        "",
        "| step | VAE encodes | text-encoder rows |",
        "|---|---|---|",
    ]
    out += [f"| {TITLES.get(k, k)} | {v['vae']:g} | {v['text_encoder']:g} |" for k, v in st["encoder_calls"].items()]
    out.append("")
    return out


def _generation(gen: dict) -> list[str]:
    out = [
        "## Generation: N seeds batched against one at a time",
        "",
        "The family's sampler and decoder (`model.sample`, `model.decode`: what the generate stage calls per batch) "
        "on N seeds at once, against N calls of one seed.",
        "",
        "| model | N | sampler steps | speedup | s per video batched | s per video one at a time |",
        "|---|---|---|---|---|---|",
    ]
    names = {"world": "the embedded world (committed base)", "cogvideox": "the bench's CogVideoX"}
    for fam, g in gen.items():
        out.append(
            f"| {names.get(fam, fam)} | {g['n']} | {g['steps']} | {_r(g['speedup']).fmt()}x | "
            f"{_med(g['batched_s_per_video'])} | {_med(g['sequential_s_per_video'])} |"
        )
    out.append("")
    return out


def _judging(j: dict) -> list[str]:
    s = _r(j["speedup"])
    return [
        "## Judging: both orders batched against one question at a time",
        "",
        f"vipo's `openai` critic against a local stand-in server that answers every request after "
        f"{j['latency']} s whatever the load (a served model below its batch capacity). Batched: every ordered "
        f"pair of a prompt's samples in one `pairwise_many` call ({j['pairs']} pairs x 3 dimensions, "
        f"concurrency {j['concurrency']}), as the judge stage asks; sequential: one question at a time. Frames: "
        f"{j['frames']} per video at {j['frame_size']} px.",
        "",
        "| speedup | s per pairwise judgment batched | one at a time |",
        "|---|---|---|",
        f"| {s.fmt()}x | {_med(j['batched_s_per_pair'])} | {_med(j['sequential_s_per_pair'])} |",
        "",
    ]


def _round(rd: dict) -> list[str]:
    total = sum(rd["seconds"].values())
    out = [
        "## A round by stage",
        "",
        f"Round 1 of `{rd['config']}`"
        + (f" with {rd['overrides']}" if rd["overrides"] else "")
        + f" ({rd['method']}, ref_cache {rd['ref_cache']}): {rd['samples']} samples, {rd['pairs']} pairs, "
        f"{rd['examples']} KTO examples, {rd.get('train_steps')} training steps; the driver's own stages, "
        "each timed.",
        "",
        "| stage | seconds | share |",
        "|---|---|---|",
    ]
    out += [f"| {k} | {v:.1f} | {100 * v / total:.0f}% |" for k, v in rd["seconds"].items()]
    out += [f"| round | {total:.1f} | 100% |", ""]
    if "base_eval_s" in rd:
        out += [f"Round 0 (the base's evaluation, once per run, before round 1): {rd['base_eval_s']:.1f} s.", ""]
    return out


def gpu_section(res: dict) -> str:
    """The ``--gpu`` section appended to the report."""
    m = res["machine"]
    title = m.get("gpu", "CPU (--tiny)")
    lines = [
        f"## GPU: {title}" + (" (a tiny-size check on the CPU: numbers meaningless)" if res.get("tiny") else ""),
        "",
        "Command:",
        "",
        "```",
        res.get("command") or "vipo bench --gpu",
        "```",
        "",
        "Real-size transformers and VAEs built from the published configs with random weights (src/vipo/bench/"
        "gpu.py), each under its recipe's settings; cached random text embeddings stand in for the text encoders. "
        "Step seconds are medians of interleaved calls; peak memory is max_memory_allocated during one call; MFU "
        "is the step's model FLOPs (counted on the meta device, no recomputation) over its median time and the "
        "GPU's dense bf16 peak.",
        "",
        "| | " + " | ".join(f"{k}: {v}" for k, v in m.items() if k in ("gpu", "torch", "diffusers")) + " |",
        "",
    ]
    for name, r in res["models"].items():
        if isinstance(r, str):
            lines += [f"### {name}", "", r, ""]
            continue
        lines += [
            f"### {name}",
            "",
            f"Recipe `{r['recipe']}`: {r['finetune']} fine-tune"
            + (f" (LoRA rank {r['lora_rank']})" if r["finetune"] == "lora" else "")
            + f", weights {r['model_dtype']}, autocast {r['mixed_precision']}, gradient checkpointing "
            f"{'on' if r['gradient_checkpointing'] else 'off'}, {r['pairs_per_micro_batch']} pair(s) per "
            f"micro-batch; clip {' x '.join(map(str, r['clip']))} = {r['video_tokens']} video tokens; "
            f"transformer {r['transformer_params_B']}B parameters; built in {r['build_s']} s.",
            "",
            "| step | seconds, median [min, max] | peak GiB | step's own GiB | TFLOP/s | MFU |",
            "|---|---|---|---|---|---|",
        ]
        names = {
            "sft": "SFT (2 videos)",
            "dpo": "DPO, live reference (1 pair)",
            "dpo_cached": f"DPO, ref_cache {r['ref_cache_draws']}",
            "kto": "KTO (2 examples)",
            "ref_cache_pass": f"the reference-error pass ({r['ref_cache_draws']} draws)",
        }
        for k, v in r["steps"].items():
            if not isinstance(v, dict):
                lines.append(f"| {names.get(k, k)} | {v} | | | | |")
                continue
            secs = _med(v["seconds"]) if "seconds" in v else "n/a"
            tf = f"{v['tflops_achieved']:.0f}" if "tflops_achieved" in v else ""
            mfu = f"{100 * v['mfu']:.0f}%" if "mfu" in v else ""
            lines.append(
                f"| {names.get(k, k)} | {secs} | {v['peak'] / 2**30:.1f} | {v['step'] / 2**30:.1f} | {tf} | {mfu} |"
            )
        st = r["steps"]
        if all(isinstance(st.get(k), dict) and "seconds" in st[k] for k in ("dpo", "sft")):
            ratio = statistics.median(st["dpo"]["seconds"]) / statistics.median(st["sft"]["seconds"])
            lines += ["", f"DPO / SFT: {ratio:.2f}"]
            if isinstance(st.get("dpo_cached"), dict) and "seconds" in st["dpo_cached"]:
                c = statistics.median(st["dpo_cached"]["seconds"]) / statistics.median(st["sft"]["seconds"])
                lines[-1] += (
                    f"; with the cache: {c:.2f} per step (at the recipe's {r['epochs']:g} epochs the pass "
                    f"computes {r['ref_cache_draws']} reference forwards per item, as many as live training "
                    "would: the cache pays from epochs > K)"
                )
        g = r.get("generation")
        if isinstance(g, dict):
            lines += [
                "",
                f"Generation: {'at most ' if g.get('per_step_is_upper_bound') else ''}"
                f"{g['s_per_sampler_step']:.2f} s per sampler step (CFG batch of 2) x "
                f"{g['num_steps']} steps + {g['decode_s']:.1f} s VAE decode (tiling "
                f"{'on' if g['vae_tiling'] else 'off'}) = **{g['s_per_video']:.0f} s per video**.",
            ]
        elif g:
            lines += ["", f"Generation: {g}"]
        lines.append("")
    lines += [f"Wall time: {res.get('elapsed_s', 0):.0f} s.", ""]
    return "\n".join(lines)
