"""Caches of what the frozen parts of a model compute: text conditioning per prompt, VAE latents per real video.

Both are safetensors files named by a content hash, under a folder named by the model's fingerprint, so a cache is
valid for exactly the model that wrote it and can be shared by rounds and runs. Files are written atomically: a
killed writer leaves no half file, and a re-run computes only what is missing.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..io import atomic
from ..io.hashing import digest


def fingerprint(module: torch.nn.Module, *extra) -> str:
    """A short key for a frozen module: its class, config, every tensor's name, shape and dtype, and a sample of its
    values (the first and last 16 of each). Different checkpoints differ there; hashing every byte of a 5B-parameter
    text encoder would cost more than the cache saves."""
    cfg = getattr(module, "config", None) or {}
    cfg = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
    cfg = {k: v for k, v in cfg.items() if not k.startswith("_") and k != "transformers_version"}  # not where from
    h = hashlib.sha256(json.dumps([type(module).__name__, cfg, extra], sort_keys=True, default=str).encode())
    with torch.no_grad():
        for name, t in module.state_dict().items():
            flat = t.detach().flatten()
            h.update(f"{name}{tuple(t.shape)}{t.dtype}".encode())
            h.update(torch.cat([flat[:16], flat[-16:]]).float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def save_latent(path: Path, latent: torch.Tensor) -> None:
    """A sample's final latent (``round-K/latents/ID.safetensors``), written atomically."""
    with atomic.atomic_path(path) as tmp:
        save_file({"latent": latent.contiguous()}, str(tmp))


def load_latent(path: Path) -> torch.Tensor:
    return load_file(str(path))["latent"]


def _save(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    with atomic.atomic_path(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp))


class TextCache:
    """Prompt -> the model's text conditioning (one row of each tensor), computed once and kept on disk."""

    def __init__(self, folder: str | Path, model_key: str):
        self.folder = Path(folder) / model_key
        self.n_encoded = 0  #: (a count) prompts this object has sent through the text encoder

    def _path(self, prompt: str) -> Path:
        return self.folder / f"{digest(prompt)[:32]}.safetensors"

    def ensure(self, model, prompts: list[str], batch: int = 64) -> None:
        """Encode and store the prompts not in the cache yet (sorted, in batches of ``batch``)."""
        missing = sorted({p for p in prompts if not self._path(p).is_file()})
        for i in range(0, len(missing), batch):
            chunk = missing[i : i + batch]
            with torch.no_grad():
                enc = model.encode_prompts(chunk)
            for j, p in enumerate(chunk):
                _save(self._path(p), {k: v[j : j + 1] for k, v in enc.items()})
            self.n_encoded += len(chunk)

    def rows(self, model, prompts: list[str], device, batch: int = 64) -> dict[str, dict[str, torch.Tensor]]:
        """Each distinct prompt's conditioning on ``device``; missing prompts are encoded in batches and stored."""
        self.ensure(model, prompts, batch)
        return {p: {k: v.to(device) for k, v in load_file(str(self._path(p))).items()} for p in set(prompts)}

    def conditioning(self, model, prompts: list[str], device) -> dict[str, torch.Tensor]:
        """The batch's conditioning, as ``model.encode_prompts(prompts)`` returns it."""
        rows = self.rows(model, prompts, device)
        return {k: torch.cat([rows[p][k] for p in prompts]) for k in rows[prompts[0]]}


class LatentCache:
    """Real video (by content hash) -> its VAE latent, for one model (VAE fingerprint and clip size)."""

    def __init__(self, folder: str | Path, model_key: str):
        self.folder = Path(folder) / model_key
        self.n_encoded = 0  #: (a count) videos this object has sent through the VAE

    def path(self, video_hash: str) -> Path:
        return self.folder / f"{video_hash[:32]}.safetensors"

    def has(self, video_hash: str) -> bool:
        return self.path(video_hash).is_file()

    def put(self, video_hash: str, latent: torch.Tensor) -> None:
        _save(self.path(video_hash), {"latent": latent})
        self.n_encoded += 1

    def get(self, video_hash: str) -> torch.Tensor:
        return load_file(str(self.path(video_hash)))["latent"]
