"""LoRA on the denoiser (peft through diffusers' adapter API) and the round-to-round policy chain.

A round trains one LoRA on top of the current policy; the reference is the same model with that adapter disabled,
so no second copy of the weights exists. A round's ``checkpoint/`` folder is self-contained: ``policy.json`` names
the base model and the ordered adapters (copied in, each a diffusers-format ``pytorch_lora_weights.safetensors``),
and loading it fuses them one after another — the paper's chain pi_ref^(0) -> pi_ref^(1) -> ...

For the real families (a diffusers pipeline whose denoiser is its ``transformer``) the checkpoint's root also holds
the whole chain merged into one diffusers LoRA, so ``Pipeline.from_pretrained(base).load_lora_weights(checkpoint)``
gives the round's policy, and the same seed gives the same video as ``vipo generate --lora checkpoint``.

With weights loaded in a low-precision ``model_dtype`` (bfloat16), the chain is not fused but kept as one frozen adapter
(the checkpoint's root LoRA), exactly as ``load_lora_weights`` applies it: fusing adds each small LoRA delta to bf16
weights, whose rounding (about 0.4% of each weight) swallows most of it. The adapter a round trains is float32, and
so are a full fine-tune's trained weights and its checkpoint (see :func:`master_denoiser`).

A full fine-tune's checkpoint holds the whole denoiser instead, as a diffusers model folder named after its component
(``transformer/`` or ``unet/``; ``policy.json`` names it under ``denoiser``); it already contains every earlier round.
:func:`export_merged` writes a round's policy as one plain model folder (``vipo export --merge``).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import shutil
import warnings
from pathlib import Path

import torch
from diffusers.loaders.lora_base import LORA_ADAPTER_METADATA_KEY, LORA_WEIGHT_NAME_SAFE
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ..errors import UserError
from ..io import atomic
from ..io.paths import inside
from ..models import load_model
from ..models.base import VideoModel
from ..models.pipeline import dtype_kwargs

POLICY_FILE = "policy.json"
SUMMARY_FILE = "train_summary.json"
ADAPTER = "ipo"
#: a low-precision policy's frozen adapter chain (see the module docstring)
CHAIN = "chain"


def attach(
    model: VideoModel,
    rank: int,
    alpha: float,
    targets: list[str] | tuple[str, ...] | None = None,
    name: str = ADAPTER,
    seed: int | None = None,
) -> list:
    """Add a fresh trainable LoRA (B = 0, so the policy starts equal to the reference); return its parameters.

    ``seed`` draws the random A matrices from their own generator: without it peft uses torch's global generator,
    which this torch build seeds differently in every process, so two runs of one command would train differently.

    With a frozen adapter chain on the denoiser (a low-precision policy) the new adapter is active beside it. The new
    adapter's weights are float32 whatever the denoiser's dtype: peft creates them in the base layer's dtype (its
    ``autocast_adapter_dtype`` upcast runs only through ``get_peft_model``, not diffusers' ``add_adapter``), and
    bf16 weights would round away the small updates an optimizer step makes.
    """
    targets = list(targets or model.lora_targets)
    net = model.denoiser
    for p in net.parameters():
        p.requires_grad_(False)
    frozen = list(getattr(net, "peft_config", {}))
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Already found a `peft_config`")  # the chain: on purpose
        if seed is not None:
            torch.manual_seed(seed)
        net.add_adapter(
            LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets, init_lora_weights=True), adapter_name=name
        )
    _activate(net, frozen + [name], name)
    params = [p for n, p in net.named_parameters() if _owned(n, name)]
    for p in params:
        p.data = p.data.float()
    if not params:
        raise UserError(f"train.lora_targets {targets} matched no module of the {model.family} denoiser")
    return params


def _owned(param_name: str, adapter: str) -> bool:
    """Whether a denoiser parameter belongs to LoRA adapter ``adapter`` (``...to_q.lora_A.<adapter>.weight``)."""
    return "lora_" in param_name and f".{adapter}." in param_name


def _activate(net: torch.nn.Module, names: list[str], trainable: str | None = None) -> None:
    """Make ``names`` the active adapters, with only ``trainable``'s weights requiring gradients (peft's set_adapter
    marks every active adapter trainable)."""
    net.set_adapter(names if len(names) > 1 else names[0])
    for n, p in net.named_parameters():
        if "lora_" in n:
            p.requires_grad_(trainable is not None and _owned(n, trainable))


@contextlib.contextmanager
def without(model: VideoModel, name: str = ADAPTER):
    """The denoiser with adapter ``name`` switched off: the round's reference (any frozen chain stays on)."""
    net = model.denoiser
    others = [a for a in net.active_adapters() if a != name]
    if not others:
        net.disable_adapters()
        try:
            yield
        finally:
            net.enable_adapters()
        return
    _activate(net, others)
    try:
        yield
    finally:
        _activate(net, others + [name], name)


class ReferenceSwitch:
    """:func:`without`, resolved once: the adapter layers, the other active adapters and the frozen chain's weights
    are looked up when the switch is made (once per round), so a micro-batch's reference forward only flips each
    layer. ``without`` asks diffusers, which checks peft's installed version (package metadata) and walks every module
    of the denoiser on each call. The switch leaves exactly the state ``without`` leaves: the same active adapters and
    the same ``requires_grad`` flags."""

    def __init__(self, model: VideoModel, name: str = ADAPTER):
        from peft.tuners.tuners_utils import BaseTunerLayer

        net = model.denoiser
        self.name = name
        self.others = [a for a in net.active_adapters() if a != name]
        self.layers = [m for m in net.modules() if isinstance(m, BaseTunerLayer)]
        #: the frozen chain's adapter weights: peft's set_adapter marks every active adapter trainable
        self.frozen = [p for n, p in net.named_parameters() if "lora_" in n and not _owned(n, name)]

    @contextlib.contextmanager
    def off(self):
        if not self.others:
            for m in self.layers:
                m.enable_adapters(False)
            try:
                yield
            finally:
                for m in self.layers:
                    m.enable_adapters(True)
            return
        for m in self.layers:
            m.set_adapter(self.others, inference_mode=True)
        try:
            yield
        finally:
            for m in self.layers:
                m.set_adapter(self.others + [self.name])
            for p in self.frozen:
                p.requires_grad_(False)


def lora_state(model: VideoModel, name: str = ADAPTER) -> dict:
    return {n: p.detach().clone() for n, p in model.denoiser.named_parameters() if _owned(n, name)}


def load_lora_state(model: VideoModel, state: dict) -> None:
    params = dict(model.denoiser.named_parameters())
    for n, v in state.items():
        params[n].data.copy_(v)


def save_adapter(model: VideoModel, folder: Path, name: str = ADAPTER) -> None:
    """Save the adapter as ``pytorch_lora_weights.safetensors`` with its LoRA config (rank, alpha) as metadata.

    With a ``lora_prefix`` (the real families: ``transformer``) keys and metadata carry that prefix, the layout of
    ``Pipeline.save_lora_weights``, so ``Pipeline.from_pretrained(base).load_lora_weights(folder)`` applies it.
    """
    net, prefix = model.denoiser, model.lora_prefix
    if prefix is None:
        # diffusers' save_lora_adapter calls ``self.to(dtype=None)``, which logs a spurious "modules that should be
        # kept in float32: []" warning on every save (diffusers 0.36-0.42); the cast itself is a no-op
        quiet = logging.getLogger("diffusers.models.modeling_utils")
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        try:
            net.save_lora_adapter(str(folder), adapter_name=name)
        finally:
            quiet.setLevel(level)
        return
    state = {f"{prefix}.{k}": v for k, v in get_peft_model_state_dict(net, adapter_name=name).items()}
    config = {f"{prefix}.{k}": v for k, v in net.peft_config[name].to_dict().items()}
    _write_lora(Path(folder), state, config)


def _write_lora(folder: Path, state: dict, config: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    config = {k: sorted(v) if isinstance(v, set) else v for k, v in config.items()}
    save_file(
        {k: v.detach().contiguous() for k, v in state.items()},
        str(folder / LORA_WEIGHT_NAME_SAFE),
        metadata={"format": "pt", LORA_ADAPTER_METADATA_KEY: json.dumps(config, indent=2, sort_keys=True)},
    )


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
    _activate(net, [name])


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
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def finished_training(folder: Path, train_config: str) -> dict | None:
    """The training summary of a complete round checkpoint trained under ``train_config`` (a hash), else None."""
    path = Path(folder) / SUMMARY_FILE
    if not atomic.is_complete(folder) or not path.is_file():
        return None
    summary = atomic.read_json(path)
    return summary if summary.get("train_config") == train_config else None


def write_checkpoint(
    model: VideoModel,
    out: Path,
    base: str,
    previous: Path | None,
    round_: int,
    full: bool = False,
    summary: dict | None = None,
) -> None:
    """The round's checkpoint, written atomically: previous chain + this round's adapter, or (``full``) the whole
    fine-tuned denoiser; with ``summary`` (the training summary) beside them."""
    chain: list[str] = []
    extra: dict = {}
    with atomic.atomic_dir(out) as tmp:
        if full:
            extra["denoiser"] = model.denoiser_slot()[1]
            model.denoiser.save_pretrained(str(tmp / extra["denoiser"]))
        else:
            if previous is not None:
                prev = read_policy(previous)
                if prev.get("denoiser"):  # a fully fine-tuned denoiser the chain continues from
                    extra["denoiser"] = prev["denoiser"]
                    shutil.copytree(previous / prev["denoiser"], tmp / prev["denoiser"])
                for rel in prev["adapters"]:
                    shutil.copytree(previous / rel, tmp / rel)
                    chain.append(rel)
            rel = f"lora-round-{round_}"
            save_adapter(model, tmp / rel)
            chain.append(rel)
            if model.lora_prefix is not None:
                # the whole chain as one diffusers LoRA at the checkpoint's root: load_lora_weights(checkpoint) = policy
                # (on top of the checkpoint's own denoiser, where it has one)
                _write_lora(tmp, *merge_chain([tmp / r for r in chain], model.lora_prefix))
        atomic.write_json(tmp / POLICY_FILE, {"base": base, "family": model.family, "adapters": chain, **extra})
        if summary is not None:
            atomic.write_json(tmp / SUMMARY_FILE, summary)


def load_denoiser(model: VideoModel, folder: Path) -> None:
    """Replace the model's denoiser by the diffusers model folder ``folder`` (a full fine-tune's checkpoint), in the
    model's dtype, as ``from_pretrained(folder, dtype=...)`` loads it."""
    owner, name = model.denoiser_slot()
    net = model.denoiser
    new = type(net).from_pretrained(str(folder), **dtype_kwargs(model.dtype)).to(next(net.parameters()).device)
    setattr(owner, name, new)
    model.denoiser_source = Path(folder)


def master_denoiser(model: VideoModel) -> torch.nn.Module:
    """A float32 copy of a low-precision model's denoiser, for a full fine-tune to train (its master weights).

    Read again from the folder the denoiser was loaded from (``denoiser_source``: the base's, or the previous round's
    float32 checkpoint), so no round's updates are lost to bf16 rounding between rounds; upcast from the loaded
    weights where there is no folder.
    """
    net = model.denoiser
    if model.denoiser_source is None:
        return copy.deepcopy(net).float()
    master = type(net).from_pretrained(str(model.denoiser_source), **dtype_kwargs(torch.float32))
    return master.to(next(net.parameters()).device)


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


def _unfused(model: VideoModel) -> bool:
    """Whether a policy's adapters stay unfused: low-precision weights (and a diffusers pipeline's LoRA layout)."""
    return model.dtype != torch.float32 and model.lora_prefix is not None
