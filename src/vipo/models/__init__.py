"""Model families behind one interface, and the loader that picks the family from a folder's model_index.json."""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

import torch

from ..errors import UserError
from .base import VideoModel

#: where the committed embedded base model lives (``--model world``)
WORLD_CHECKPOINT = Path(__file__).resolve().parent.parent / "world" / "checkpoint"
#: family name -> (module, class); each family is one file of this package
FAMILIES = {
    "world": ("world", "WorldModel"),
    "cogvideox": ("cogvideox", "CogVideoXModel"),
    "wan": ("wan", "WanModel"),
    "ltx": ("ltx", "LTXModel"),
}
#: ``model_dtype`` names -> torch dtypes
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
#: weight files loaded with pickle, which can run arbitrary code: refused unless ``--allow-pickle``
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
_allow_pickle = False


def set_allow_pickle(allow: bool) -> None:
    global _allow_pickle
    _allow_pickle = allow


def allow_pickle() -> bool:
    return _allow_pickle


def check_weights(folder: Path) -> None:
    """Refuse a folder whose weights (in any component) exist only in a pickle format, unless allowed."""
    if _allow_pickle:
        return
    for f in sorted(Path(folder).rglob("*")):
        if f.suffix in PICKLE_SUFFIXES and f.is_file() and not any(f.parent.glob("*.safetensors")):
            raise UserError(
                f"{f}: pickle-format weights can run arbitrary code when loaded; convert them to "
                "safetensors, or pass --allow-pickle if you trust their source"
            )


def resolve(spec: str) -> Path:
    if spec == "world":
        if not (WORLD_CHECKPOINT / "model_index.json").is_file():
            raise UserError(f"{WORLD_CHECKPOINT}: the embedded world checkpoint is missing; run `vipo world pretrain`")
        return WORLD_CHECKPOINT
    path = Path(spec)
    if not path.exists() and HUB_ID.match(spec):
        return _from_hub(spec)
    if not path.is_dir():
        raise UserError(f"model {spec!r}: not a folder (give a diffusers model folder, a hub id or 'world')")
    if not (path / "model_index.json").is_file():
        raise UserError(f"{path / 'model_index.json'}: not found; is {path} a diffusers model folder?")
    check_weights(path)
    return path


def _from_hub(repo_id: str) -> Path:
    """A hub model's local snapshot (downloaded once into the Hugging Face cache; needs internet the first time)."""
    from huggingface_hub import snapshot_download

    try:
        path = Path(snapshot_download(repo_id))
    except Exception as e:  # noqa: BLE001  (offline, unknown repo, gated: one line either way)
        raise UserError(f"model {repo_id!r}: not a local folder and not fetched from the hub ({e})") from None
    check_weights(path)
    return path


def read_index(path: Path) -> dict:
    """A model folder's ``model_index.json``, each component it names present as a sub-folder."""
    file = path / "model_index.json"
    try:
        index = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UserError(f"{file}: line {e.lineno}: invalid JSON ({e.msg})") from None
    except UnicodeDecodeError:
        raise UserError(f"{file}: not UTF-8 text") from None
    if not isinstance(index, dict):
        raise UserError(f"{file}: expected a JSON object")
    for name, spec in index.items():
        # a component is ["library", "Class"]; [null, null] marks an optional one the pipeline was saved without
        if name.startswith("_") or not isinstance(spec, list) or len(spec) != 2 or spec[1] is None:
            continue
        if not (path / name).is_dir():
            raise UserError(
                f"{file}: component {name!r} ({spec[1]}) has no folder {path / name}; the model folder is incomplete"
            )
    return index


def detect_family(path: Path) -> str:
    index = read_index(path)
    if index.get("family"):
        return str(index["family"])
    name = str(index.get("_class_name", ""))
    for family, marker in (("cogvideox", "CogVideoX"), ("wan", "Wan"), ("ltx", "LTX")):
        if marker in name:
            return family
    raise UserError(f"{path / 'model_index.json'}: unknown model family {name!r}")


def check_model(spec: str, family: str = "auto", dtype: str = "float32") -> tuple[Path, type]:
    """The folder and family class of model ``spec``, checked without loading a weight: the folder, its
    model_index.json and components, the family, the dtype. Verbs call it before they write anything."""
    if dtype not in DTYPES:
        raise UserError(f"model_dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    path = resolve(spec)
    read_index(path)
    fam = detect_family(path) if family == "auto" else family
    if fam not in FAMILIES:
        raise UserError(f"model family {fam!r} is not available in this build (known: {', '.join(FAMILIES)})")
    module, name = FAMILIES[fam]
    cls = getattr(importlib.import_module(f".{module}", __name__), name)
    if dtype not in cls.dtypes:
        raise UserError(f"model_dtype: the {fam} family loads in {' or '.join(cls.dtypes)} only, got {dtype!r}")
    return path, cls


def load_model(spec: str, device: str = "cpu", family: str = "auto", dtype: str = "float32") -> VideoModel:
    """The model ``spec`` names, its weights in ``dtype`` (a ``model_dtype`` name; the family must support it)."""
    path, cls = check_model(spec, family, dtype)
    return cls.load(path, device=device, dtype=DTYPES[dtype])
