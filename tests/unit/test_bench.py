"""vipo bench's machinery (never its timings): interleaving, ratios, memory and call counting, the report's targets,
and the whole bench and the GPU script at a tiny size, writing well-formed files."""

import json

import pytest
import torch

from vipo.bench import report, timing
from vipo.cli import main


def test_interleave_alternates_the_contenders_and_ratios_pair_the_rounds():
    order = []
    times = timing.interleave(
        {"a": lambda: order.append("a"), "b": lambda: order.append("b"), "c": lambda: order.append("c")},
        repeats=3,
        warmup=1,
    )
    assert order == ["a", "b", "c", "a", "b", "c", "c", "b", "a", "a", "b", "c"]  # warm-up, then ABC CBA ABC
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3, "c": 3}
    r = timing.Ratio.of([2.0, 3.0, 4.0], [1.0, 1.0, 2.0])
    assert (r.median, r.low, r.high, r.a, r.b, r.rounds) == (2.0, 2.0, 3.0, 3.0, 1.0, 3)  # per-round ratios 2, 3, 2
    assert r.fmt() == "2.00 [2.00, 3.00]"


def test_peak_memory_follows_the_call_s_own_tensors():
    def alloc():
        a = torch.zeros(1 << 18)  # 1 MiB
        b = torch.zeros(1 << 18)
        del a, b
        c = torch.zeros(1 << 17)  # 0.5 MiB, after the two were freed
        return c.sum()

    m = timing.peak_memory(alloc, held=100.0)
    assert m["step"] == pytest.approx(2 * 2**20, rel=0.01) and m["peak"] == m["step"] + 100.0
    lin = torch.nn.Linear(8, 8)
    opt = torch.optim.AdamW(lin.parameters())
    lin(torch.ones(1, 8)).sum().backward()
    opt.step()
    assert timing.held_bytes(lin, optimizer=opt) == 3 * (64 + 8) * 4 + 4 + 4  # weights, 2 moments, 2 step counts


def test_calls_count_module_rows_and_method_calls():
    lin = torch.nn.Linear(4, 4)

    class Obj:
        def encode(self, x):
            return x * 2

    obj = Obj()
    calls = timing.Calls(lin=lin, enc=(obj, "encode"))
    with calls.counting() as c:
        lin(torch.ones(3, 4))
        lin(torch.ones(2, 4))
        assert torch.equal(obj.encode(torch.ones(5, 1)), torch.full((5, 1), 2.0))
    assert (c.calls["lin"], c.rows["lin"], c.calls["enc"], c.rows["enc"]) == (2, 5, 1, 5)
    calls.close()
    lin(torch.ones(1, 4))
    assert c.calls["lin"] == 2 and "encode" not in vars(obj)


def _ratio(m):
    return {"median": m, "low": m, "high": m, "a": m, "b": 1.0, "rounds": 1}


def test_targets_say_met_or_missed():
    steps = {
        "epochs": 32,
        "ratios": {
            "DPO / SFT, live reference": _ratio(1.40),
            "DPO / SFT, ref_cache 4, the pass amortized over 32 epochs": _ratio(1.20),
            "RWR / SFT": _ratio(1.0),
        },
        "memory": {"dpo": {"peak": 105.0, "step": 5.0}, "sft": {"peak": 100.0, "step": 1.0}},
        "encoder_calls": {"dpo": {"vae": 0.0, "text_encoder": 0.0}, "diffusers_dpo": {"vae": 1.0, "text_encoder": 0.5}},
    }
    verdicts = [v for _, _, v in report.targets({"steps": steps})]
    assert verdicts == ["met", "**missed** (docs/performance.md explains the gap)", "met", "met", "met"]
    gen = report.targets({"generation": {"world": {"n": 8, "speedup": _ratio(1.1)}}})
    assert len(gen) == 1 and "missed" in gen[0][2]
    md = report.markdown({"command": "vipo bench", "tiny": False})  # written without a GPU: says so, and how to run it
    assert "## GPU" in md and "Not measured here" in md and "vipo bench --gpu\n" in md


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


def test_the_gpu_script_runs_end_to_end_at_a_tiny_size_on_the_cpu(tmp_path):
    out = tmp_path / "bench.md"
    out.write_text("# Benchmarks\n\nearlier numbers\n")
    assert main(["bench", "--gpu", "--tiny", "--out", str(out)]) == 0
    text = out.read_text()
    assert text.startswith("# Benchmarks\n\nearlier numbers\n")  # appended, not replaced
    assert "## GPU: CPU (--tiny)" in text
    for name in ("CogVideoX-2B", "CogVideoX-5B", "Wan 2.1 1.3B"):
        assert f"### {name}" in text
    raw = json.loads(out.with_suffix(".gpu.json").read_text())[-1]
    for name, r in raw["models"].items():
        assert isinstance(r, dict), (name, r)
        for k in ("sft", "dpo", "dpo_cached", "kto"):
            assert r["steps"][k]["seconds"] and r["flops"][k] > 0, (name, k)
        assert r["flops"]["dpo"] > r["flops"]["dpo_cached"] > 0
        assert r["generation"]["s_per_video"] > 0
    assert raw["models"]["Wan 2.1 1.3B"]["finetune"] == "full"


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
