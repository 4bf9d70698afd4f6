"""The LoRA a round trains (peft through diffusers' adapter API), its reference, and the round checkpoint it writes.

A round trains one LoRA on top of the current policy; the reference is the same model with that adapter disabled
(:class:`ReferenceSwitch`), so no second copy of the weights exists. :func:`write_checkpoint` writes the round's
``checkpoint/`` folder: the previous chain plus this round's adapter, or a full fine-tune's whole denoiser; reading
one back (the chain, the policy) lives beside the models, in :mod:`vipo.models.policy`. The adapter a round trains is
float32, and so are a full fine-tune's trained weights and its checkpoint (see :func:`master_denoiser`).
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import shutil
import warnings
from pathlib import Path

import torch
from diffusers.loaders.lora_base import LORA_ADAPTER_METADATA_KEY, LORA_WEIGHT_NAME_SAFE
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict
from safetensors.torch import save_file

from ..errors import UserError
from ..io import atomic
from ..models.base import VideoModel
from ..models.pipeline import dtype_kwargs
from ..models.policy import POLICY_FILE, activate, merge_chain, owned, read_policy

SUMMARY_FILE = "train_summary.json"
#: the peft adapter name of the LoRA a round trains (saved adapters carry it: the value stays "ipo")
TRAINED_ADAPTER = "ipo"


def attach(
    model: VideoModel,
    rank: int,
    alpha: float,
    targets: list[str] | tuple[str, ...] | None = None,
    name: str = TRAINED_ADAPTER,
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
    activate(net, frozen + [name], name)
    params = [p for n, p in net.named_parameters() if owned(n, name)]
    for p in params:
        p.data = p.data.float()
    if not params:
        raise UserError(f"train.lora_targets {targets} matched no module of the {model.family} denoiser")
    return params


@contextlib.contextmanager
def without(model: VideoModel, name: str = TRAINED_ADAPTER):
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
    activate(net, others)
    try:
        yield
    finally:
        activate(net, others + [name], name)


class ReferenceSwitch:
    """:func:`without`, resolved once: the adapter layers, the other active adapters and the frozen chain's weights
    are looked up when the switch is made (once per round), so a micro-batch's reference forward only flips each
    layer. ``without`` asks diffusers, which checks peft's installed version (package metadata) and walks every module
    of the denoiser on each call. The switch leaves exactly the state ``without`` leaves: the same active adapters and
    the same ``requires_grad`` flags."""

    def __init__(self, model: VideoModel, name: str = TRAINED_ADAPTER):
        from peft.tuners.tuners_utils import BaseTunerLayer

        net = model.denoiser
        self.name = name
        self.others = [a for a in net.active_adapters() if a != name]
        self.layers = [m for m in net.modules() if isinstance(m, BaseTunerLayer)]
        #: the frozen chain's adapter weights: peft's set_adapter marks every active adapter trainable
        self.frozen = [p for n, p in net.named_parameters() if "lora_" in n and not owned(n, name)]

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


def lora_state(model: VideoModel, name: str = TRAINED_ADAPTER) -> dict:
    return {n: p.detach().clone() for n, p in model.denoiser.named_parameters() if owned(n, name)}


def load_lora_state(model: VideoModel, state: dict) -> None:
    params = dict(model.denoiser.named_parameters())
    for n, v in state.items():
        params[n].data.copy_(v)


def save_adapter(model: VideoModel, folder: Path, name: str = TRAINED_ADAPTER) -> None:
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
