"""vipo.bench.gpu's pure parts (its tiny CPU run is exercised in test_bench.py): the peak-FLOP/s table, latent
shapes and token counts of the real families' clip sizes, the float32-kept cast, the refusal without CUDA, and the
appended record."""

import json
from types import SimpleNamespace

import pytest
import torch

from vipo.bench import gpu
from vipo.cli import main
from vipo.errors import UserError


@pytest.mark.parametrize(
    "name, peak",
    [
        ("NVIDIA H200", 989e12),
        ("NVIDIA H100 80GB HBM3", 989e12),
        ("NVIDIA H100 PCIe", 756e12),  # the PCIe card is listed before the SXM one it contains
        ("NVIDIA A100-SXM4-80GB", 312e12),
        ("NVIDIA L40S", 362e12),  # not L40's
        ("NVIDIA L40", 181e12),
        ("NVIDIA RTX A6000", 155e12),
        ("NVIDIA GeForce RTX 4090", 165e12),
        ("NVIDIA B200", 2250e12),
        ("Tesla T4", None),
        ("cpu", None),
    ],
)
def test_peak_flops_by_device_name(name, peak):
    assert gpu.peak_flops(name) == peak


def family(name):
    # both families' VAEs: 4x in time (plus the first frame), 8x in space
    return SimpleNamespace(family=name, pipe=SimpleNamespace(vae_scale_factor_temporal=4, vae_scale_factor_spatial=8))


def test_cogvideox_latent_shape_and_tokens_at_its_native_size():
    # CogVideoX-5B: 49 frames of 480 x 720 -> 13 latent frames of 60 x 90, 16 channels (frames first);
    # 2x2 patches: 13 * 30 * 45 = 17550 video tokens, the sequence the model card gives (with 226 text tokens)
    shape = gpu.latent_shape(family("cogvideox"), 49, 480, 720)
    assert shape == (13, 16, 60, 90)
    assert gpu._tokens(family("cogvideox"), shape) == 17550


def test_wan_latent_shape_and_tokens_at_its_native_size():
    # Wan 2.1 at 480p: 81 frames of 480 x 832 -> 21 latent frames of 60 x 104, 16 channels first;
    # 2x2 patches: 21 * 30 * 52 = 32760 tokens, Wan's own seq_len at 480p
    shape = gpu.latent_shape(family("wan"), 81, 480, 832)
    assert shape == (16, 21, 60, 104)
    assert gpu._tokens(family("wan"), shape) == 32760


def test_cast_keeps_the_fp32_modules_float32():
    class Net(torch.nn.Module):
        _keep_in_fp32_modules = ["norm"]

        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(2, 2)
            self.norm = torch.nn.LayerNorm(2)
            self.normal = torch.nn.Linear(2, 2)  # 'norm' matches whole name parts, not prefixes
            self.register_buffer("table", torch.zeros(3))
            self.register_buffer("index", torch.arange(3))

    net = gpu._cast(Net(), torch.bfloat16)
    assert net.proj.weight.dtype == torch.bfloat16 and net.normal.bias.dtype == torch.bfloat16
    assert net.norm.weight.dtype == torch.float32 and net.norm.bias.dtype == torch.float32
    assert net.table.dtype == torch.bfloat16 and net.index.dtype == torch.int64  # integers are left alone
    plain = gpu._cast(torch.nn.Linear(2, 2), torch.bfloat16)  # no list: everything in the dtype
    assert plain.weight.dtype == torch.bfloat16


def test_without_cuda_only_the_tiny_run_is_allowed(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError) as e:
        gpu.run(tmp_path / "b.md")
    assert str(e.value) == "bench --gpu: no CUDA device here (--tiny runs the same code on tiny models on the CPU)"
    assert not (tmp_path / "b.md").exists()


def test_append_accumulates_the_raw_records(tmp_path):
    out = tmp_path / "bench.md"
    out.write_text("# Benchmarks\n\nearlier text\n")
    first = {"command": "c1", "machine": {}, "tiny": True, "models": {"cogvideox-5b": "skipped (budget)"}}
    second = dict(first, command="c2")
    gpu.append(out, first)
    gpu.append(out, second)
    assert [r["command"] for r in json.loads((tmp_path / "bench.gpu.json").read_text())] == ["c1", "c2"]
    text = out.read_text()
    assert text.startswith("# Benchmarks\n\nearlier text\n") and text.count("## GPU") == 2


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
