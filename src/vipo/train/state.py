"""The resumable training state, without pickle: tensors in safetensors, everything else in JSON.

A state folder holds the trainable weights, the optimizer (moments and step counts), the step and micro-step, the
data-order position, every RNG (python, numpy, torch CPU and CUDA) and the hash of the config it was trained under.
The learning-rate schedule is a function of the step and the noise, timestep and real-video generators are re-seeded
from (run seed, round, step, micro-step), so the step restores them exactly. It is built with
:func:`atomic.atomic_dir`: it counts only once its completion marker exists, and replaces the previous state only then.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from .. import faults
from ..config import TrainConfig, training_inputs
from ..io import atomic


def config_hash(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def train_config_hash(train: TrainConfig, run_seed: int, round_: int, *data) -> str:
    """The one hash of a round's train options (:func:`vipo.config.training_inputs`: all but the tracker) with the run
    seed and the round. The round checkpoint's summary stores it as ``train_config`` (a finished checkpoint is taken
    only under the same options); the resumable state adds ``data``, the number of pairs (a state saved over other
    pairs does not resume), and stores it as ``config_hash``. The parts and their order are those both places hashed
    before, so the values stored in existing run folders still match."""
    return config_hash(training_inputs(train), run_seed, round_, *data)


def _to_json(obj, tensors: dict, key: str):
    """JSON-able structure with tensors replaced by references into ``tensors``."""
    if isinstance(obj, torch.Tensor):
        tensors[key] = obj.detach().cpu().clone().contiguous()
        return {"__tensor__": key}
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": obj.tolist(), "dtype": str(obj.dtype)}
    if isinstance(obj, dict):
        return {"__dict__": [[k, _to_json(v, tensors, f"{key}.{k}")] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        out = [_to_json(v, tensors, f"{key}.{i}") for i, v in enumerate(obj)]
        return {"__tuple__": out} if isinstance(obj, tuple) else out
    return obj


def _from_json(obj, tensors: dict):
    if isinstance(obj, list):
        return [_from_json(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        return tensors[obj["__tensor__"]]
    if "__ndarray__" in obj:
        return np.array(obj["__ndarray__"], dtype=obj["dtype"])
    if "__tuple__" in obj:
        return tuple(_from_json(v, tensors) for v in obj["__tuple__"])
    return {k: _from_json(v, tensors) for k, v in obj["__dict__"]}


def rng_state() -> dict:
    st = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict) -> None:
    random.setstate(st["python"])
    np.random.set_state(st["numpy"])
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def save(folder: Path, params: dict, opt: torch.optim.Optimizer | dict, info: dict) -> None:
    """``opt``: the optimizer or its state dict; ``info``: step, micro, data position, history, counters and config
    hash (plain JSON)."""
    tensors: dict = {}
    osd = opt if isinstance(opt, dict) else opt.state_dict()
    meta = {"info": info, "opt": _to_json(osd, tensors, "opt"), "rng": _to_json(rng_state(), tensors, "rng")}
    with atomic.atomic_dir(folder) as tmp:
        faults.point("write.checkpoint")
        save_file({k: v.detach().contiguous() for k, v in params.items()}, str(tmp / "trainable.safetensors"))
        save_file(tensors, str(tmp / "optimizer_rng.safetensors"))
        (tmp / "state.json").write_text(json.dumps(meta))
        faults.point("train.mid_checkpoint")


def load(folder: Path, clean: bool = True) -> dict | None:
    """The state saved in ``folder`` (params, opt, rng, info), or None when there is no complete one. ``clean``
    first puts back a replaced state a kill left aside and removes a half-written one (one process does it; the
    others of a launch read after it, ``clean=False``)."""
    if clean:
        atomic.recover(folder)
        for partial in folder.parent.glob(f"{atomic.TMP_PREFIX}{folder.name}.*"):  # a save killed half-way
            shutil.rmtree(partial, ignore_errors=True)
    if not atomic.is_complete(folder) or not (folder / "state.json").is_file():
        return None
    meta = json.loads((folder / "state.json").read_text())
    tensors = load_file(str(folder / "optimizer_rng.safetensors"))
    return {
        "params": load_file(str(folder / "trainable.safetensors")),
        "opt": _from_json(meta["opt"], tensors),
        "rng": _from_json(meta["rng"], tensors),
        "info": meta["info"],
    }
