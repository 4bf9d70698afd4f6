"""Device names as the config takes them: 'auto' (or empty) is CUDA when there is one, else the CPU.

Under a launcher (torchrun, accelerate launch) resolving the device also joins the process group, and 'cuda' means
this rank's own GPU, ``cuda:LOCAL_RANK`` (:func:`vipo.dist.setup`)."""

from __future__ import annotations

import torch

from . import dist
from .errors import UserError


def resolve_device(name: str) -> str:
    if name in ("", "auto"):
        name = "cuda" if torch.cuda.is_available() else "cpu"
    elif name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device: {name} asked for but no CUDA device is available")
    return dist.setup(name)
