"""A policy as a round left it: the base model, a round checkpoint's adapter chain or fine-tuned denoiser, loaded.

A round's ``checkpoint/`` folder is self-contained: ``policy.json`` names the base model and the ordered adapters
(copied in, each a diffusers-format ``pytorch_lora_weights.safetensors``), and loading it fuses them one after
another — the paper's chain pi_ref^(0) -> pi_ref^(1) -> ... A full fine-tune's checkpoint holds the whole denoiser
instead, as a diffusers model folder named after its component (``transformer/`` or ``unet/``; ``policy.json`` names it
under ``denoiser``); it already contains every earlier round.

For the real families (a diffusers pipeline whose denoiser is its ``transformer``) the checkpoint's root also holds
the whole chain merged into one diffusers LoRA (:func:`merge_chain`), so
``Pipeline.from_pretrained(base).load_lora_weights(checkpoint)`` gives the round's policy. With weights loaded in a
low-precision ``model_dtype`` (bfloat16), the chain is not fused but kept as one frozen adapter (the checkpoint's root
LoRA), exactly as ``load_lora_weights`` applies it: fusing adds each small LoRA delta to bf16 weights, whose rounding
(about 0.4% of each weight) swallows most of it.

This module reads policies (generation, evaluation, export, the next round's start); writing them, and the LoRA a
round trains, is training's (:mod:`vipo.train.lora`). :func:`export_merged` writes a round's policy as one plain model
folder (``vipo export --merge``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from diffusers.loaders.lora_base import LORA_ADAPTER_METADATA_KEY, LORA_WEIGHT_NAME_SAFE
from safetensors import safe_open
from safetensors.torch import load_file

from ..errors import UserError
from ..io import atomic
from ..io.hashing import feed_file
from ..io.paths import inside
from . import load_model
from .base import VideoModel
from .pipeline import dtype_kwargs

if TYPE_CHECKING:  # (the options only; models never need the config module to run)
    from ..config import GenerateConfig

POLICY_FILE = "policy.json"
#: a low-precision policy's frozen adapter chain (see the module docstring)
CHAIN = "chain"


def owned(param_name: str, adapter: str) -> bool:
    """Whether a denoiser parameter belongs to LoRA adapter ``adapter`` (``...to_q.lora_A.<adapter>.weight``)."""
    return "lora_" in param_name and f".{adapter}." in param_name


def activate(net: torch.nn.Module, names: list[str], trainable: str | None = None) -> None:
    """Make ``names`` the active adapters, with only ``trainable``'s weights requiring gradients (peft's set_adapter
    marks every active adapter trainable)."""
    net.set_adapter(names if len(names) > 1 else names[0])
    for n, p in net.named_parameters():
        if "lora_" in n:
            p.requires_grad_(trainable is not None and owned(n, trainable))


def merge_chain(folders: list[Path], prefix: str) -> tuple[dict, dict]:
    """One adapter equal to a chain of adapters fused in order.

    Fusing adds each adapter's delta ``(alpha_i / r_i) B_i A_i`` to the weights, independent of the others, so the
    chain's total delta is one LoRA of rank ``sum r_i``: ``A = [A_1; A_2; ...]``, ``B = [s_1 B_1, s_2 B_2, ...]``
    with ``alpha = rank`` (scale 1). Every adapter of a run targets the same modules (the config is fixed per run).
    """
    states, configs = [], []
    for folder in folders:
        path = str(Path(folder) / LORA_WEIGHT_NAME_SAFE)
        with safe_open(path, "pt") as f:
            meta = json.loads(f.metadata()[LORA_ADAPTER_METADATA_KEY])
        configs.append({k.removeprefix(f"{prefix}."): v for k, v in meta.items()})
        states.append(load_file(path))
    if any(s.keys() != states[0].keys() for s in states):
        raise UserError(f"{folders[0].parent}: the chain's adapters target different modules; cannot merge them")
    scales = [c["lora_alpha"] / c["r"] for c in configs]
    merged = {}
    for key in states[0]:
        if ".lora_A." in key:
            merged[key] = torch.cat([s[key] for s in states], dim=0)
        else:
            merged[key] = torch.cat([s[key] * sc for s, sc in zip(states, scales)], dim=1)
    rank = sum(c["r"] for c in configs)
    config = dict(configs[-1], r=rank, lora_alpha=rank, rank_pattern={}, alpha_pattern={})
    return merged, {f"{prefix}.{k}": v for k, v in config.items()}


def load_adapter(model: VideoModel, folder: Path, name: str) -> None:
    """Load a diffusers LoRA folder onto the denoiser as adapter ``name``, as ``load_lora_weights`` does (unfused, in
    the denoiser's dtype), frozen and active."""
    net = model.denoiser
    weight = LORA_WEIGHT_NAME_SAFE if (Path(folder) / LORA_WEIGHT_NAME_SAFE).is_file() else None
    net.load_lora_adapter(str(folder), prefix=model.lora_prefix, adapter_name=name, weight_name=weight)
    activate(net, [name])


def fuse_adapter(model: VideoModel, folder: Path, name: str) -> None:
    load_adapter(model, folder, name)
    net = model.denoiser
    net.fuse_lora(adapter_names=[name])
    net.unload_lora()


def policy_hash(folder: Path) -> str:
    """sha256 over a checkpoint's files (names and bytes): which policy a round generated with or trained."""
    h = hashlib.sha256()
    for f in sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.name != atomic.DONE_MARKER):
        h.update(f.relative_to(folder).as_posix().encode() + b"\0")
        feed_file(h, f)
    return h.hexdigest()


def load_denoiser(model: VideoModel, folder: Path) -> None:
    """Replace the model's denoiser by the diffusers model folder ``folder`` (a full fine-tune's checkpoint), in the
    model's dtype, as ``from_pretrained(folder, dtype=...)`` loads it."""
    owner, name = model.denoiser_slot()
    net = model.denoiser
    new = type(net).from_pretrained(str(folder), **dtype_kwargs(model.dtype)).to(next(net.parameters()).device)
    setattr(owner, name, new)
    model.denoiser_source = Path(folder)


def export_merged(
    checkpoint: Path, out: Path, base: str | None = None, device: str = "cpu", readme: str | None = None
) -> VideoModel:
    """Write a round checkpoint's policy (base + fine-tuned denoiser + adapter chain, fused) as one model folder,
    with ``readme`` (its model card) as README.md in it."""
    out = Path(out)
    if out.exists():
        raise UserError(f"--out {out}: already exists; choose a new folder")
    model = load_policy(base or read_policy(checkpoint)["base"], checkpoint, device=device)
    with atomic.atomic_dir(out) as tmp:
        model.save(tmp)
        if readme is not None:
            atomic.write_text(tmp / "README.md", readme)
    return model


def read_policy(folder: Path) -> dict:
    path = Path(folder) / POLICY_FILE
    if not path.is_file():
        raise UserError(f"{path}: not found; is {folder} a vipo round checkpoint?")
    try:
        policy = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: line {e.lineno}: invalid JSON ({e.msg})") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text") from None
    if not isinstance(policy, dict) or not isinstance(policy.get("adapters", []), list):
        raise UserError(f"{path}: expected an object with a list of adapters")
    policy.setdefault("adapters", [])
    # the adapters and the denoiser are folders of the checkpoint: nothing outside it is read or copied
    for i, rel in enumerate(policy["adapters"]):
        inside(folder, str(rel), f"{path}: adapters[{i}]")
    if policy.get("denoiser"):
        inside(folder, str(policy["denoiser"]), f"{path}: denoiser")
    return policy


def load_policy(base: str, lora: str | Path | None = None, device: str = "cpu", dtype: str = "float32") -> VideoModel:
    """The base model (weights in ``dtype``, a ``model_dtype`` name) with a round checkpoint's adapters (or one
    diffusers LoRA folder) fused in order; in a low-precision dtype, applied unfused as one frozen adapter instead."""
    if lora is None:
        return load_model(base, device=device, dtype=dtype)
    lora = Path(lora)
    if (lora / POLICY_FILE).is_file():
        policy = read_policy(lora)
        model = load_model(base or policy["base"], device=device, dtype=dtype)
        if policy.get("denoiser"):
            load_denoiser(model, lora / policy["denoiser"])
        if policy["adapters"] and _unfused(model):
            load_adapter(model, lora, CHAIN)  # the root LoRA: the whole chain merged (write_checkpoint)
        else:
            for i, rel in enumerate(policy["adapters"]):
                fuse_adapter(model, lora / rel, f"chain{i}")
        return model
    if not lora.is_dir() or not any(lora.glob("*.safetensors")):
        raise UserError(f"--lora {lora}: neither a vipo round checkpoint nor a folder with LoRA safetensors")
    model = load_model(base, device=device, dtype=dtype)
    if _unfused(model):
        load_adapter(model, lora, CHAIN)
    else:
        fuse_adapter(model, lora, "lora")
    return model


def load_sampler(
    base: str, lora: str | Path | None, generate: GenerateConfig, device: str = "cpu", dtype: str = "float32"
) -> VideoModel:
    """:func:`load_policy`, set up to sample: the VAE's memory options (``generate.vae_tiling``/``vae_slicing``) and
    the clip size (``generate.frames/height/width``, checked against what the family takes). The one way a run, a
    round and ``vipo generate`` load the policy they sample or evaluate with."""
    model = load_policy(base, lora, device=device, dtype=dtype)
    model.vae_memory(generate.vae_tiling, generate.vae_slicing)
    model.set_size(generate.frames, generate.height, generate.width, "generate")
    return model


def _unfused(model: VideoModel) -> bool:
    """Whether a policy's adapters stay unfused: low-precision weights (and a diffusers pipeline's LoRA layout)."""
    return model.dtype != torch.float32 and model.lora_prefix is not None
