"""LoRA on the denoiser (peft through diffusers' adapter API) and the round-to-round policy chain.

A round trains one LoRA on top of the current policy; the reference is the same model with that adapter disabled,
so no second copy of the weights exists. A round's ``checkpoint/`` folder is self-contained: ``policy.json`` names
the base model and the ordered adapters (copied in, each a diffusers-format ``pytorch_lora_weights.safetensors``),
and loading it fuses them one after another — the paper's chain pi_ref^(0) -> pi_ref^(1) -> ...
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from peft import LoraConfig

from ..errors import UserError
from ..io import atomic
from ..models import load_model
from ..models.base import VideoModel

POLICY_FILE = "policy.json"
ADAPTER = "ipo"


def attach(model: VideoModel, rank: int, alpha: float, targets: list[str] | tuple[str, ...] | None = None,
           name: str = ADAPTER) -> list:
    """Add a fresh trainable LoRA (B = 0, so the policy starts equal to the reference); return its parameters."""
    targets = list(targets or model.lora_targets)
    net = model.denoiser
    for p in net.parameters():
        p.requires_grad_(False)
    net.add_adapter(LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets, init_lora_weights=True),
                    adapter_name=name)
    net.set_adapter(name)
    params = [p for n, p in net.named_parameters() if "lora_" in n]
    for p in params:
        p.requires_grad_(True)
    if not params:
        raise UserError(f"train.lora_targets {targets} matched no module of the {model.family} denoiser")
    return params


def lora_state(model: VideoModel, name: str = ADAPTER) -> dict:
    return {n: p.detach().clone() for n, p in model.denoiser.named_parameters() if "lora_" in n}


def load_lora_state(model: VideoModel, state: dict) -> None:
    params = dict(model.denoiser.named_parameters())
    for n, v in state.items():
        params[n].data.copy_(v)


def save_adapter(model: VideoModel, folder: Path, name: str = ADAPTER) -> None:
    model.denoiser.save_lora_adapter(str(folder), adapter_name=name)


def fuse_adapter(model: VideoModel, folder: Path, name: str) -> None:
    net = model.denoiser
    weight = "pytorch_lora_weights.safetensors" if (Path(folder) / "pytorch_lora_weights.safetensors").is_file() else None
    net.load_lora_adapter(str(folder), prefix=None, adapter_name=name, weight_name=weight)
    net.fuse_lora(adapter_names=[name])
    net.unload_lora()


def write_checkpoint(model: VideoModel, out: Path, base: str, previous: Path | None, round_: int) -> None:
    """The round's checkpoint: previous chain + this round's adapter, written atomically."""
    chain: list[str] = []
    with atomic.atomic_dir(out) as tmp:
        if previous is not None:
            prev = read_policy(previous)
            for rel in prev["adapters"]:
                shutil.copytree(previous / rel, tmp / rel)
                chain.append(rel)
        rel = f"lora-round-{round_}"
        save_adapter(model, tmp / rel)
        chain.append(rel)
        atomic.write_json(tmp / POLICY_FILE, {"base": base, "family": model.family, "adapters": chain})


def read_policy(folder: Path) -> dict:
    path = Path(folder) / POLICY_FILE
    if not path.is_file():
        raise UserError(f"{path}: not found; is {folder} a vipo round checkpoint?")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: line {e.lineno}: invalid JSON ({e.msg})") from None


def load_policy(base: str, lora: str | Path | None = None, device: str = "cpu") -> VideoModel:
    """The base model with a round checkpoint's adapters (or one diffusers LoRA folder) fused in order."""
    if lora is None:
        return load_model(base, device=device)
    lora = Path(lora)
    if (lora / POLICY_FILE).is_file():
        policy = read_policy(lora)
        model = load_model(base or policy["base"], device=device)
        for i, rel in enumerate(policy["adapters"]):
            fuse_adapter(model, lora / rel, f"chain{i}")
        return model
    if not lora.is_dir() or not any(lora.glob("*.safetensors")):
        raise UserError(f"--lora {lora}: neither a vipo round checkpoint nor a folder with LoRA safetensors")
    model = load_model(base, device=device)
    fuse_adapter(model, lora, "lora")
    return model
