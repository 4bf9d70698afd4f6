"""vipo bench's machinery (never its timings): interleaving, ratios, memory and call counting, the report's targets,
and the whole bench and the GPU script at a tiny size, writing well-formed files."""

import json

from vipo.cli import main


def test_the_bench_at_a_tiny_size_writes_a_well_formed_report(tmp_path):
    out = tmp_path / "bench.md"
    assert (
        main(
            [
                "bench",
                "--tiny",
                "--repeats",
                "1",
                "--out",
                str(out),
                "--only",
                "steps",
                "--only",
                "generation",
                "--only",
                "judging",
                "--only",
                "round",
                "--set",
                "prompts.per_round=2",
                "--set",
                "generate.samples_per_prompt=3",
                "--set",
                "generate.num_steps=2",
                "--set",
                "eval.clips_per_split=2",
                "--set",
                "eval.num_steps=2",
                "--set",
                "train.epochs=1",
                "--set",
                "train.batch_size=2",
                "--set",
                "train.grad_accum=1",
                "--set",
                "train.real_batch_size=1",
                "--set",
                "train.ref_cache=1",
            ]
        )
        == 0
    )
    text = out.read_text()
    for heading in (
        "# Benchmarks",
        "## Targets (issue #19)",
        "## Training step",
        "### Peak memory",
        "### VAE encodes and text-encoder forwards per training sample",
        "## Generation",
        "## Judging",
        "## A round by stage",
        "vipo bench --tiny",
    ):
        assert heading in text, heading
    raw = json.loads(out.with_suffix(".json").read_text())
    st = raw["steps"]
    assert {"DPO / SFT, live reference", "RWR / SFT", "vipo DPO / diffusers Diffusion-DPO example (per pair)"} <= set(
        st["ratios"]
    )
    calls = st["encoder_calls"]
    assert all(calls[k] == {"text_encoder": 0.0, "vae": 0.0} for k in ("sft", "dpo", "dpo_cached", "kto", "rwr"))
    assert calls["diffusers_dpo"] == {"text_encoder": 0.5, "vae": 1.0}  # one prompt per pair, every video encoded
    assert calls["diffusers_lora"] == {"text_encoder": 1.0, "vae": 0.0}  # encoded once before training
    assert all(len(v) == 1 and v[0] > 0 for v in st["times"].values())
    assert st["memory"]["dpo"]["step"] > st["memory"]["sft"]["step"] > 0
    assert set(raw["round"]["seconds"]) == {"generate", "judge", "pairs", "train", "evaluate"}
    assert raw["round"]["ref_cache"] == 1 and raw["judging"]["pairs"] == 2
    assert set(raw["generation"]) == {"world", "cogvideox"}


def test_only_keeps_the_parts_an_earlier_run_measured(tmp_path):
    """`vipo bench --only round` on an existing report keeps its steps, generation and judging, each with the command
    that measured it; a tiny run never mixes with a real one."""
    import json

    from vipo import bench
    from vipo.bench import report

    out = tmp_path / "benchmarks.md"
    earlier = {
        "command": "vipo bench",
        "tiny": False,
        "parts": list(bench.PARTS),
        "done": ["steps", "judging"],
        "steps": {"x": 1},
        "judging": {"y": 2},
    }
    out.with_suffix(".json").write_text(json.dumps(earlier))
    now = {"command": "vipo bench --only round", "tiny": False, "parts": ["round"]}
    assert bench.keep_previous(out, now, ("round",)) == ["steps", "judging"]
    assert now["steps"] == {"x": 1} and now["judging"] == {"y": 2} and now["done"] == ["steps", "judging"]
    assert now["parts"] == ["steps", "judging", "round"]
    assert now["commands"] == {"steps": "vipo bench", "judging": "vipo bench", "round": "vipo bench --only round"}
    text = report.markdown({**now, "steps": None, "judging": None})  # (the sections themselves need real numbers)
    assert "- steps: `vipo bench`" in text and "round" in text.split("## Not measured in this run")[-1]
    # a tiny run, or a run of every part, starts afresh
    tiny = {"command": "vipo bench --tiny --only round", "tiny": True, "parts": ["round"]}
    assert bench.keep_previous(out, tiny, ("round",)) == [] and "steps" not in tiny
    assert bench.keep_previous(out, dict(now), bench.PARTS) == []
