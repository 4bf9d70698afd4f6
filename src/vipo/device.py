"""Device names as the config takes them: 'auto' (or empty) is CUDA when there is one, else the CPU."""
from __future__ import annotations

import torch

from .errors import UserError


def resolve_device(name: str) -> str:
    if name in ("", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device: {name} asked for but no CUDA device is available")
    return name
