"""Tests of vipo.bench.report."""

from vipo.bench import report


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
