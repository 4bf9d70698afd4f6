"""Model families behind one interface, and the loader that picks the family from a folder's model_index.json."""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import UserError
from .base import VideoModel

#: where the committed embedded base model lives (``--model world``)
WORLD_CHECKPOINT = Path(__file__).resolve().parent.parent / "world" / "checkpoint"


def resolve(spec: str) -> Path:
    if spec == "world":
        if not (WORLD_CHECKPOINT / "model_index.json").is_file():
            raise UserError(f"{WORLD_CHECKPOINT}: the embedded world checkpoint is missing; run `vipo world pretrain`")
        return WORLD_CHECKPOINT
    path = Path(spec)
    if not path.is_dir():
        raise UserError(f"model {spec!r}: not a folder (give a diffusers model folder or 'world')")
    if not (path / "model_index.json").is_file():
        raise UserError(f"{path / 'model_index.json'}: not found; is {path} a diffusers model folder?")
    return path


def detect_family(path: Path) -> str:
    try:
        index = json.loads((path / "model_index.json").read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{path / 'model_index.json'}: line {e.lineno}: invalid JSON ({e.msg})") from None
    if index.get("family"):
        return str(index["family"])
    name = str(index.get("_class_name", ""))
    for family, marker in (("cogvideox", "CogVideoX"), ("wan", "Wan"), ("ltx", "LTX")):
        if marker in name:
            return family
    raise UserError(f"{path / 'model_index.json'}: unknown model family {name!r}")


def load_model(spec: str, device: str = "cpu", family: str = "auto") -> VideoModel:
    path = resolve(spec)
    fam = detect_family(path) if family == "auto" else family
    if fam == "world":
        from .world import WorldModel

        return WorldModel.load(path, device=device)
    raise UserError(f"model family {fam!r} is not available in this build (known: world)")
