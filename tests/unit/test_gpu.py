"""Tests of vipo.bench.gpu."""

import json

from vipo.cli import main


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
