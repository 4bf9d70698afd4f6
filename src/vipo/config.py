"""Typed configs: one dataclass field per option, its docstring is its help; defaults < YAML < CLI.

A run's config is a tree of dataclasses. YAML files and ``--set a.b=c`` overrides are merged onto the defaults and
validated on load: an unknown key or an out-of-range value fails at start with one line naming the field. Each
section checks itself on construction (``Section.__post_init__`` runs its ``validate()``, as TRL, litgpt and torchtitan
do), so a config made from YAML, ``--set``, a CLI flag or Python meets the same checks.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import re
import textwrap
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import UserError


class Section:
    """Base of every config section: making one (YAML, ``--set``, a CLI flag, Python, ``dataclasses.replace``) runs
    its ``validate()``. A field changed after construction is not re-checked: build a new section instead."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``UserError`` naming the field when a value is out of range; sections override it."""


@dataclass
class PretrainConfig(Section):
    """Pretraining of the embedded world's base model (``vipo world pretrain``)."""

    steps: int = 6000
    """optimizer steps"""
    lr_decay_steps: int = 0
    """length of the cosine learning-rate schedule (0 = ``steps``); set it above ``steps`` to stop part-way through a
    longer schedule, as nanoGPT's ``lr_decay_iters`` does; below ``steps``, the steps after it run at the floor (10%)"""
    batch_size: int = 32
    """clips per step"""
    lr: float = 1e-3
    """peak learning rate (AdamW), cosine-decayed to 10% after warmup"""
    warmup: int = 200
    """linear warmup steps"""
    weight_decay: float = 0.0
    """AdamW weight decay"""
    ema_decay: float = 0.999
    """EMA of the weights; the EMA copy is what gets saved"""
    cfg_dropout: float = 0.1
    """probability of training on the empty prompt, for classifier-free guidance"""
    caption_noise: float = 0.0
    """probability that each attribute word of a pretraining caption names another value (a noisy captioner, as
    with web video): the base then samples wrong attributes at a known rate that preference training can remove"""
    caption_noise_start: int = 0
    """first step that uses noisy captions (0 = all; later = a clean phase, then a noisy-caption phase)"""
    widths: list = field(default_factory=lambda: [32, 64, 64])
    """UNet block widths"""
    layers_per_block: int = 1
    """ResNet layers per UNet block"""
    attention: bool = False
    """add cross-attention blocks (slower; the class embedding alone carries the prompt)"""
    text_width: int = 64
    """text encoder width"""
    frames: int = 9
    """frames per clip"""
    side: int = 32
    """frame side in pixels"""
    seed: int = 0
    """seed for weights, data and noise: the same seed gives the same model"""
    log_every: int = 50
    """steps between log lines"""
    save_every: int = 500
    """steps between resumable checkpoints"""
    eval_clips: int = 144
    """clips judged at the end (in-distribution, 2 per combination)"""
    eval_steps: int = 15
    """sampler steps for the final evaluation"""
    eval_guidance: float = 2.0
    """guidance for the final evaluation"""

    def validate(self) -> None:
        _positive(self, "steps", "batch_size", "lr", "frames", "side", "eval_steps")
        _check(0 <= self.cfg_dropout < 1, "cfg_dropout must be in [0, 1)")
        _check(0 <= self.ema_decay < 1, "ema_decay must be in [0, 1)")
        _check(0 <= self.caption_noise < 1, f"caption_noise must be in [0, 1), got {self.caption_noise}")
        _check(self.caption_noise_start >= 0, f"caption_noise_start must be >= 0, got {self.caption_noise_start}")
        _check(
            self.lr_decay_steps == 0 or self.lr_decay_steps > self.warmup,
            f"lr_decay_steps must be 0 or more than warmup ({self.warmup}), got {self.lr_decay_steps}",
        )
        _check(self.frames >= 9 and self.side >= 32, "the world needs frames >= 9 and side >= 32")
        _check(self.side % 8 == 0, "side must be a multiple of 8")


# -- helpers -----------------------------------------------------------------------------------------------------


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise UserError(message)


def _sizes(cfg: Any) -> None:
    for n in ("frames", "height", "width"):
        _check(
            isinstance(getattr(cfg, n), int) and getattr(cfg, n) >= 0,
            f"{n} must be >= 0 (0 = the model's default), got {getattr(cfg, n)!r}",
        )


def _positive(cfg: Any, *names: str) -> None:
    for n in names:
        v = getattr(cfg, n)
        if not v > 0:
            raise UserError(f"{n} must be > 0, got {v!r}")


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings of a dataclass (the string literal under each field), for --help and docs; a class made
    by ``dataclasses.make_dataclass`` (``JudgeConfig``) carries them as ``__field_docs__``."""
    if "__field_docs__" in vars(cls):
        return dict(cls.__field_docs__)
    docs: dict[str, str] = {}
    for base in cls.__mro__[1:]:  # a field inherited from a dataclass base keeps that base's doc
        if dataclasses.is_dataclass(base):
            docs = {**field_docs(base), **docs}
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    for a, b in zip(body, body[1:]):
        if isinstance(a, ast.AnnAssign) and isinstance(b, ast.Expr) and isinstance(b.value, ast.Constant):
            docs[a.target.id] = str(b.value.value)  # type: ignore[union-attr]
    return docs


def _coerce(value: Any, typ: Any, where: str) -> Any:
    origin = typing.get_origin(typ)
    if dataclasses.is_dataclass(typ):
        if not isinstance(value, dict):
            raise UserError(f"{where}: expected a mapping, got {value!r}")
        return build(typ, value, where)
    if typ is bool:
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        if not isinstance(value, bool):
            raise UserError(f"{where}: expected true/false, got {value!r}")
        return value
    if typ in (int, float):
        if isinstance(value, bool):
            raise UserError(f"{where}: expected a number, got {value!r}")
        try:
            out = typ(value)
        except (TypeError, ValueError):
            raise UserError(f"{where}: expected {typ.__name__}, got {value!r}") from None
        if typ is int and isinstance(value, float) and value != out:
            raise UserError(f"{where}: expected an integer, got {value!r}")
        return out
    if typ is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise UserError(f"{where}: expected text, got {value!r}")
        return str(value)
    if typ is dict or origin is dict:
        if isinstance(value, str):
            value = yaml.safe_load(value)
        if not isinstance(value, dict):
            raise UserError(f"{where}: expected a mapping, got {value!r}")
        return value
    if typ is list or origin is list:
        if isinstance(value, str):
            value = yaml.safe_load(value)
        if not isinstance(value, list):
            raise UserError(f"{where}: expected a list, got {value!r}")
        return value
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        if value is None or value == "null":
            return None
        return _coerce(value, args[0], where)
    return value


def build(cls: type, data: dict, where: str = "") -> Any:
    """Instantiate dataclass ``cls`` from a (possibly partial) nested dict, refusing unknown keys."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else key
        if key not in names:
            raise UserError(f"unknown config key '{path}' (known: {', '.join(sorted(names))})")
        kwargs[key] = _coerce(value, hints[key], path)
    try:
        return cls(**kwargs)  # the section's __post_init__ checks it
    except UserError as e:
        raise UserError(_prefixed(cls, f"{where}." if where else "", str(e))) from None


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def parse_overrides(items: list[str]) -> dict:
    """``["train.beta=500", "rounds=2"]`` -> nested dict; values parsed as YAML scalars."""
    out: dict = {}
    for item in items:
        if "=" not in item:
            raise UserError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        try:
            node[parts[-1]] = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as e:
            raise UserError(
                f"--set {key.strip()}: {raw!r} is not a YAML value ({getattr(e, 'problem', None) or e}); "
                "quote it, or close its brackets"
            ) from None
    return out


def merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        raise UserError(f"{path}:{line} invalid YAML ({getattr(e, 'problem', e)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping at the top level")
    return data


def validate_tree(cfg: Any, where: str = "") -> None:
    """Call ``validate()`` on every dataclass in the tree, prefixing errors with the field path."""
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if dataclasses.is_dataclass(v):
            validate_tree(v, f"{where}{f.name}.")
    if hasattr(cfg, "validate"):
        try:
            cfg.validate()
        except UserError as e:
            raise UserError(_prefixed(type(cfg), where, str(e))) from None


def _prefixed(cls: type, where: str, msg: str) -> str:
    """A section's message under its path ``where`` (ending in '.'), said once."""
    if where and not msg.startswith(where):
        # "judge." + "frames must be > 0"; a message that does not start with a field gets "judge: ..."
        head = re.split(r"[\s:,.\[]", msg, maxsplit=1)[0]
        fields = {f.name for f in dataclasses.fields(cls)}
        if where.endswith(f".{head}.") and msg.startswith(f"{head}:"):  # "eval.critic." + "critic: ..."
            msg = where.rstrip(".") + msg[len(head) :]
        else:
            msg = f"{where}{msg}" if head in fields else f"{where.rstrip('.')}: {msg}"
    return msg


def load(cls: type, yaml_path: str | Path | None = None, overrides: dict | None = None) -> Any:
    data = load_yaml(yaml_path) if yaml_path else {}
    if overrides:
        data = merge(data, overrides)
    return build(cls, data)  # every section validates itself as it is built


# -- the IPO loop ------------------------------------------------------------------------------------------------


@dataclass
class PromptConfig(Section):
    """Where a round's training prompts come from."""

    source: str = "world"
    """'world' (the embedded world's in-distribution combinations) or a text file with one prompt per line"""
    per_round: int = 60
    """prompts per round (the world has 60 in-distribution combinations)"""
    phrasing: str = "random"
    """world prompts: 'canonical' ('a red circle moving left') or 'random' over the grammar's phrasings"""

    def validate(self) -> None:
        _positive(self, "per_round")
        _check(self.phrasing in ("canonical", "random"), f"phrasing must be canonical or random, got {self.phrasing!r}")


@dataclass
class GenerateConfig(Section):
    """Sampling the policy (the ``generate`` stage)."""

    samples_per_prompt: int = 4
    """videos per prompt (a run ranks several per prompt: at least 3 so the middle can be excluded)"""
    num_steps: int = 15
    """sampler steps"""
    guidance: float = 2.0
    """classifier-free guidance scale (2 suits the embedded world; IPO samples CogVideoX at 6)"""
    batch_size: int = 48
    """videos per sampler batch"""
    fps: int = 8
    """frame rate written into the mp4 files"""
    frames: int = 0
    """frames per clip (0 = the model folder's vipo.json, else the family's published count: CogVideoX 49, Wan 81,
    LTX 161); checked at start against the family's rule (8k+1 for CogVideoX, whose VAE decodes an odd number of
    4x-compressed latent frames; 4k+1 for Wan; 8k+1 for LTX) and the transformer's positional limits. Training, real-video caching and evaluation
    follow it"""
    height: int = 0
    """clip height in pixels (0 = the folder's or family's default: CogVideoX 480, Wan 480, LTX 512); a multiple
    of the VAE's spatial factor times the patch (16 for CogVideoX and Wan, 32 for LTX)"""
    width: int = 0
    """clip width in pixels (0 = the folder's or family's default: CogVideoX 720, Wan 832, LTX 704); as height"""
    vae_tiling: bool = False
    """decode (here and in eval) in overlapping spatial tiles where the family's VAE supports it: far less memory
    for large clips, a little slower"""
    vae_slicing: bool = False
    """decode (here and in eval) one video of the batch at a time where the family's VAE supports it"""
    max_quarantined: float = 0.1
    """judge and train stop with an error when more than this fraction of a round's samples are quarantined
    (unreadable or truncated video, wrong frame count, non-finite latent)"""

    def validate(self) -> None:
        _positive(self, "samples_per_prompt", "num_steps", "batch_size", "fps")
        _sizes(self)
        _check(0 <= self.max_quarantined <= 1, f"max_quarantined must be in [0, 1], got {self.max_quarantined}")
        _check(self.guidance >= 1, f"guidance must be >= 1, got {self.guidance}")


# -- the judge: composed from each critic's options ----------------------------------------------------------------
# Each critic declares the options it reads, with their docs and checks, in vipo/critics/options.py (the critic
# classes carry them as ``Critic.Options``). Users write them flat (``judge.base_url``), as recipes, ``--set`` lines
# and run folders' config.yaml snapshots always have, so JudgeConfig is the union of those dataclasses, made here.
from .critics import options as _critic_options  # noqa: E402  (it needs Section and the checks above)

CRITICS = tuple(_critic_options.OPTIONS)

#: the flat ``judge.*`` keys, in the order recipes and config.yaml snapshots list them (a snapshot stays byte-identical)
JUDGE_KEYS = (
    "critic",
    "model",
    "adapter",
    "base_url",
    "api_key_env",
    "frames",
    "frame_size",
    "image_format",
    "prompts_dir",
    "retries",
    "max_unparseable",
    "max_tokens",
    "temperature",
    "concurrency",
    "timeout_s",
    "http_retries",
    "backoff_s",
    "batch_size",
    "device",
    "trust_remote_code",
    "dtype",
    "labels",
    "members",
    "combine",
    "dino",
    "clip",
    "aesthetic_clip",
    "aesthetic_head",
    "musiq",
    "xclip",
    "feature_batch",
    "reward_base",
    "reward_checkpoint",
    "reward_thresholds",
    "reward_tie_margin",
)


def _made(f: dataclasses.Field) -> Any:
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]


def _judge_fields() -> tuple[list, dict[str, str]]:
    """The flat judge fields (name, type, field) in :data:`JUDGE_KEYS` order and their docs: a key read by several
    critics is one field (its type and default must agree) whose doc says what it means for each ("vlm: ...; openai:
    ...")."""
    owners: dict[str, list] = {}
    for name, cls in [("", _critic_options.COMMON), *_critic_options.OPTIONS.items()]:
        hints, docs = typing.get_type_hints(cls), field_docs(cls)
        for f in dataclasses.fields(cls):
            owners.setdefault(f.name, []).append((name, hints[f.name], f, docs.get(f.name, "")))
    assert set(owners) == set(JUDGE_KEYS), f"JUDGE_KEYS and critics/options.py differ: {set(owners) ^ set(JUDGE_KEYS)}"
    fields, docs = [], {}
    for key in JUDGE_KEYS:
        first = owners[key][0]
        for other in owners[key][1:]:
            same = other[1] is first[1] and _made(other[2]) == _made(first[2])
            assert same, f"judge.{key}: the critics' options disagree on its type or default"
        by_doc: dict[str, list[str]] = {}
        for critic, _, _, doc in owners[key]:
            if critic not in by_doc.setdefault(doc, []):
                by_doc[doc].append(critic)
        docs[key] = "; ".join(f"{', '.join(names)}: {doc}" if names != [""] else doc for doc, names in by_doc.items())
        f = first[2]
        made = (
            field(default_factory=f.default_factory) if f.default is dataclasses.MISSING else field(default=f.default)
        )
        fields.append((key, first[1], made))
    return fields, docs


def _judge_validate(self) -> None:
    """Each critic's options check their fields (so ``judge.frames=0`` is refused whatever the critic); the chosen
    critic's ``require()`` says what it cannot run without; an ensemble's members are checked as judges. A critic's
    earlier name is replaced by its name now (``critics.options.RENAMED``)."""
    self.critic = _critic_options.COMMON.of(self).critic
    for cls in dict.fromkeys(_critic_options.OPTIONS.values()):
        cls.of(self)
    _critic_options.OPTIONS[self.critic].of(self).require()
    if self.critic == "ensemble":
        for m in self.members:
            member(self, m)


_fields, _docs = _judge_fields()
JudgeConfig = dataclasses.make_dataclass(
    "JudgeConfig",
    _fields,
    bases=(Section,),
    namespace={
        "__module__": __name__,
        "__doc__": "The critic (the ``judge`` stage and ``vipo judge DIR``); docs/critics.md describes each critic.\n\n"
        "Composed from the critics' options (vipo/critics/options.py); ``vipo judge --critic X --help`` shows X's.",
        "__field_docs__": _docs,
        "validate": _judge_validate,
    },
)
del _fields, _docs


def member(cfg: JudgeConfig, over: dict) -> JudgeConfig:
    """An ensemble member's config: the ensemble's options (less its members) with the member's on top."""
    data = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("members", "combine")}
    return build(JudgeConfig, merge(data, over), "judge.members")


@dataclass
class PairsConfig(Section):
    """Turning judgments into training data (the ``pairs`` stage)."""

    alpha: float = 0.0
    """VideoDPO re-weighting: pair weight = score gap ** alpha (0 = off)"""
    filter_ratio: float = 0.0
    """drop this fraction of the pairs with the smallest score gaps (VideoDPO)"""

    def validate(self) -> None:
        _check(self.alpha >= 0, f"alpha must be >= 0, got {self.alpha}")
        _check(0 <= self.filter_ratio < 1, f"filter_ratio must be in [0, 1), got {self.filter_ratio}")


@dataclass
class TrainConfig(Section):
    """Preference training of the policy (the ``train`` stage)."""

    method: str = "dpo"
    """'dpo' (pairs, IPO Eq. 5), 'kto' (single labels, Eq. 6) or 'rwr' (LiFT reward-weighted)"""
    beta: float = 5000.0
    """DPO/KTO temperature on the denoising-error differences (timestep factor folded in)"""
    lambda_winner: float = 0.2
    """weight of the NLL (denoising) loss on DPO winners, IPO's lambda_1"""
    lambda_real: float = 0.1
    """weight of the NLL loss on real videos, IPO's lambda_2 (and KTO's lambda)"""
    lambda_desirable: float | None = None
    """KTO weight of desirable examples; empty (null) = set each round by the KTO paper's class-balance rule from
    the round's label counts (``lambda_d * n_d / (lambda_u * n_u)`` within [1, 4/3]; losses.kto_class_weights)"""
    lambda_undesirable: float | None = None
    """KTO weight of undesirable examples; empty (null) = by the class-balance rule, as ``lambda_desirable``"""
    kto_kl_pool: int = 128
    """KTO: the reference point z0 = max(0, mean reward) is estimated over the last this many implicit rewards of
    the round's training (a rolling pool, losses.RewardPool), whatever the micro-batch (IPO: KTO needs ~128 for a
    stable estimate); 0 = the micro-batch's own mean (the old behaviour, needs batch_size >= 2)"""
    caption_dropout: float = 0.1
    """probability that a training item's caption is replaced by the family's empty-prompt conditioning (the
    unconditional branch classifier-free guidance uses keeps training; Diffusion-DPO and Diffusion-KTO drop ~20%).
    A DPO pair's winner and loser share the draw; the real-video NLL term draws its own"""
    nll_units: str = "likelihood"
    """units of the NLL regularizers (lambda_winner, lambda_real): 'likelihood' = T * error, the likelihood surrogate
    whose differences the DPO/KTO terms compare (T = the family's training timesteps), so IPO's 0.2 and 0.1 weigh
    against the preference term as Eq. 5/6 mean; 'mse' = the plain error (the old behaviour: ~1e-4 of the preference
    gradient at beta 5000). losses.nll_scale has the derivation"""
    real_caption_noise: float = 0.3
    """the world family's real videos: probability that each attribute word of a real clip's caption names another
    value, as in the committed base's last pretraining phase (caption_noise 0.3), so the real-data term is data of
    the base's own pretraining distribution, not the answer key; 0 = correct captions (the old behaviour)"""
    rwr_scores: dict = field(default_factory=lambda: {"Good": 0.9, "Normal": 0.2, "Bad": 0.05})
    """rwr: the reward of each label; a sample's reward is the mean over its three dimensions (LiFT's map
    Good/Normal/Bad = 0.9/0.2/0.05 by default)"""
    timestep_window: list = field(default_factory=lambda: [0.0, 1.0])
    """[low, high] fractions of the noise schedule (1 = pure noise) that the preference terms (DPO/KTO/RWR and the
    winner NLL) draw their timesteps from, uniformly; [0, 1] keeps the family's own training density. The real-video
    NLL always uses the family's density. What a prompt decides about the video's layout and motion is settled at high
    noise; docs/results.md measures what a high window does on the embedded world"""
    epochs: float = 4.0
    """passes over the round's pairs/examples"""
    batch_size: int = 8
    """pairs (DPO) or examples (KTO/RWR) per micro-batch"""
    grad_accum: int = 2
    """micro-batches per optimizer step (effective batch = batch_size * grad_accum)"""
    real_batch_size: int = 8
    """real videos per micro-batch for the real-data NLL term (0 = none)"""
    lr: float = 5e-4
    """peak learning rate (AdamW)"""
    warmup: int = 5
    """linear warmup steps"""
    weight_decay: float = 0.0
    """AdamW weight decay"""
    max_grad_norm: float = 1.0
    """gradient clipping"""
    lora_rank: int = 16
    """LoRA rank"""
    lora_alpha: float = 16.0
    """LoRA alpha (scale = alpha / rank)"""
    lora_targets: list = field(default_factory=list)
    """LoRA target modules (empty = the family's defaults)"""
    real_videos: str = ""
    """real videos for the real-data NLL term of the real families: a folder of mp4 files with same-stem .txt
    captions, or a .jsonl/.csv manifest with a video column (video, video_path, path, file_name or vid; relative to
    the manifest) and a caption column (caption, text or prompt), as VidGen-1M and OpenVid ship them; empty = no
    real-video term for them. The world family always draws its real videos from its renderer"""
    real_cache: str = ""
    """folder of the real videos' VAE latents, shared by rounds and runs (empty = .vipo-cache beside the videos)"""
    ref_cache: int = 0
    """cached reference errors (DPO, KTO): each item gets this many fixed (noise, timestep, caption-dropout) draws,
    the reference's errors on them are computed once before the first step (round-K/ref_cache.safetensors, resumable)
    and epoch e trains on every item's draw e mod K, so the step runs no reference forward; the loss on a draw equals
    the live one. It trades fresh draws every epoch for K per item (docs/performance.md measures it). 0 = the
    reference runs live in every step, on fresh draws"""
    finetune: str = "lora"
    """'lora' (an adapter per round; the reference is the adapter-disabled network) or 'full' (every denoiser weight
    trains; the reference is a frozen copy and the round checkpoint holds the whole denoiser)"""
    ref_offload: bool = False
    """full fine-tune: keep the frozen reference on the CPU between its forward passes (saves a denoiser's worth of
    accelerator memory, costs a copy in and out per micro-batch)"""
    gradient_checkpointing: bool = False
    """recompute the denoiser's activations in the backward pass instead of storing them"""
    mixed_precision: str = "no"
    """'no' or 'bf16': the denoiser's forward passes under bf16 autocast; errors and losses stay float32. With
    ``model_dtype: bfloat16`` the forward passes run under bf16 autocast either way"""
    optimizer: str = "adamw"
    """'adamw' or 'adamw8bit' (bitsandbytes' 8-bit AdamW: optimizer states in 2 bytes per parameter instead of 8)"""
    save_every: int = 25
    """optimizer steps between resumable training states"""
    log_every: int = 5
    """optimizer steps between log lines"""
    max_skipped_steps: int = 5
    """a step with a non-finite loss or gradient is skipped; this many in a row stop the stage"""
    loss_spike_factor: float = 0.0
    """stop the stage before a step whose loss is more than this many times the mean of the last 20 good steps
    (0 = off)"""
    tracker: str = "none"
    """experiment tracker that mirrors the per-step training metrics and each round's eval metrics (and a few eval
    clips): 'none', 'tensorboard' (event files in RUN/tensorboard), 'wandb' (offline in RUN/wandb unless WANDB_MODE is
    set) or 'trackio' (local, RUN/trackio); written by the first process only, and not part of what decides whether a
    round trains again (vipo.tracking)"""

    def validate(self) -> None:
        _check(self.method in ("dpo", "kto", "rwr"), f"method must be dpo, kto or rwr, got {self.method!r}")
        _check(
            self.tracker in ("none", "tensorboard", "wandb", "trackio"),
            f"tracker must be none, tensorboard, wandb or trackio, got {self.tracker!r}",
        )
        _check(self.finetune in ("lora", "full"), f"finetune must be lora or full, got {self.finetune!r}")
        _check(
            not self.ref_offload or self.finetune == "full",
            "ref_offload applies to finetune: full only (a LoRA's reference is the base network itself)",
        )
        _check(
            self.mixed_precision in ("no", "bf16"), f"mixed_precision must be no or bf16, got {self.mixed_precision!r}"
        )
        _check(
            self.optimizer in ("adamw", "adamw8bit"), f"optimizer must be adamw or adamw8bit, got {self.optimizer!r}"
        )
        _positive(
            self,
            "beta",
            "epochs",
            "batch_size",
            "grad_accum",
            "lr",
            "lora_rank",
            "lora_alpha",
            "save_every",
            "log_every",
            "max_skipped_steps",
        )
        _check(
            self.loss_spike_factor == 0 or self.loss_spike_factor > 1,
            f"loss_spike_factor must be 0 (off) or above 1, got {self.loss_spike_factor}",
        )
        w = self.timestep_window
        _check(
            isinstance(w, (list, tuple))
            and len(w) == 2
            and all(isinstance(x, (int, float)) for x in w)
            and 0 <= w[0] < w[1] <= 1,
            f"timestep_window must be [low, high] with 0 <= low < high <= 1, got {w!r}",
        )
        for n in (
            "lambda_winner",
            "lambda_real",
            "lambda_desirable",
            "lambda_undesirable",
            "real_batch_size",
            "warmup",
            "weight_decay",
            "max_grad_norm",
            "kto_kl_pool",
        ):
            _check(getattr(self, n) is None or getattr(self, n) >= 0, f"{n} must be >= 0, got {getattr(self, n)}")
        if self.method == "kto":
            _check(
                self.kto_kl_pool >= 2 or (self.kto_kl_pool == 0 and self.batch_size >= 2),
                f"kto_kl_pool={self.kto_kl_pool} with batch_size={self.batch_size}: KTO's reference point would rest "
                "on fewer than 2 rewards (give kto_kl_pool >= 2, e.g. 128)",
            )
        _check(self.ref_cache >= 0, f"ref_cache must be >= 0, got {self.ref_cache}")
        _check(
            self.ref_cache == 0 or self.method != "rwr",
            f"ref_cache={self.ref_cache}: rwr has no reference to cache; set ref_cache: 0",
        )
        _check(0 <= self.caption_dropout < 1, f"caption_dropout must be in [0, 1), got {self.caption_dropout}")
        _check(0 <= self.real_caption_noise < 1, f"real_caption_noise must be in [0, 1), got {self.real_caption_noise}")
        _check(self.nll_units in ("likelihood", "mse"), f"nll_units must be likelihood or mse, got {self.nll_units!r}")
        _check(
            isinstance(self.rwr_scores, dict)
            and set(self.rwr_scores) == {"Good", "Normal", "Bad"}
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in self.rwr_scores.values()),
            f"rwr_scores must map Good, Normal and Bad to numbers, got {self.rwr_scores!r}",
        )


@dataclass
class EvalConfig(Section):
    """Evaluation on fixed seeds never used in training (the ``eval`` stage)."""

    prompts: str = "auto"
    """the evaluation prompts: 'world' (the embedded world's grammar: splits indist and heldout), a prompt file (one
    per line, e.g. from ``vipo prompts build|import``: split heldout), or 'auto' (= prompts.source). When it is the
    training file itself, ``heldout_fraction`` of its prompts are held out (drawn with ``seed``) and training never
    sees them; a separate file may share no prompt with training (docs/evaluation.md)"""
    heldout_fraction: float = 0.2
    """training and evaluation from one file: the share of its distinct prompts held out for evaluation"""
    vbench: str = ""
    """an extra evaluation split 'vbench': a prompt file, e.g. VBench's per-dimension lists through ``vipo prompts
    import FILE --format vbench``; it may share no prompt with training"""
    versus_base: bool = True
    """win rate against the base: the evaluating critic judges each round's clip against the base model's clip of
    the same prompt and seed, in both orders (2 pairwise questions per clip); only consistent verdicts count"""
    clips_per_split: int = 96
    """clips per split (in-distribution and held-out; a suite's splits cycle over their prompts)"""
    num_steps: int = 15
    """sampler steps"""
    guidance: float = 2.0
    """classifier-free guidance scale (2 suits the embedded world; IPO samples CogVideoX at 6)"""
    seed: int = 0
    """eval seed family (eval seeds live in a range training seeds never use)"""
    batch_size: int = 48
    """videos per sampler batch"""
    frames: int = 0
    """frames per evaluation clip (0 = the run's, ``generate.frames``)"""
    height: int = 0
    """evaluation clip height (0 = the run's, ``generate.height``)"""
    width: int = 0
    """evaluation clip width (0 = the run's, ``generate.width``)"""
    metric: str = "auto"
    """the validation metric early stopping watches: SPLIT_KEY with SPLIT indist, heldout or vbench and KEY a number
    of the split in eval.json (pass = semantic_pass, the world judge's; score = the mean of the three dimension
    scores, any critic; win_rate against the base; also color, shape, direction, semantic_good, motion_score,
    vbench_quality, ...); 'auto' = on the world's prompts indist_pass with the world critic, else indist_score; on a
    prompt suite heldout_score"""

    critic: Any = ""
    """the critic that judges the evaluation clips when it is not the run's judge: a critic name ('world') or a
    mapping of judge options laid over the run's ``judge`` section ({critic: openai, model: ...}); empty = the
    run's judge. E.g. train on a learned or served critic's labels and evaluate with the exact world judge"""

    def validate(self) -> None:
        _positive(self, "clips_per_split", "num_steps", "batch_size")
        _sizes(self)
        _check(
            isinstance(self.critic, (str, dict)),
            f"critic must be a critic name or a mapping of judge options, got {self.critic!r}",
        )
        split, _, key = self.metric.partition("_")
        _check(
            self.metric == "auto" or (split in ("indist", "heldout", "vbench") and key != ""),
            f"metric must be 'auto' or SPLIT_KEY with SPLIT indist, heldout or vbench (e.g. indist_pass, "
            f"heldout_score, heldout_win_rate), got {self.metric!r}",
        )
        _check(0 < self.heldout_fraction < 1, f"heldout_fraction must be in (0, 1), got {self.heldout_fraction}")


@dataclass
class RunConfig(Section):
    """A whole IPO run: R rounds of generate -> judge -> pairs -> train -> eval."""

    model: str = "world"
    """base model: 'world' (the committed embedded model) or a diffusers folder"""
    family: str = "auto"
    """model family (auto = from model_index.json)"""
    model_dtype: str = "float32"
    """'float32' or 'bfloat16': the dtype the real families' text encoder, VAE and transformer are loaded and sampled
    in (diffusers' ``dtype``/``torch_dtype``; finetrainers' weight_dtype). bfloat16 about halves their memory: LoRA
    weights stay float32 and train under bf16 autocast; a full fine-tune trains the transformer in float32 (master
    weights and reference); latents, errors and losses stay float32 (docs/models.md). The embedded world loads in
    float32 only"""
    device: str = "auto"
    """'auto', 'cpu' or 'cuda'"""
    seed: int = 0
    """run seed: sample seeds derive from (seed, round, prompt id, sample index)"""
    rounds: int = 3
    """IPO rounds"""
    patience: int = 0
    """stop after this many rounds without improvement of the validation metric (0 = never stop early)"""
    min_free_gb: float = 0.5
    """free disk space (GB) the run folder must have before each stage starts"""
    prompts: PromptConfig = field(default_factory=PromptConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    pairs: PairsConfig = field(default_factory=PairsConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def validate(self) -> None:
        _positive(self, "rounds")
        # a run ranks several videos per prompt and leaves the middle out; standalone `vipo generate` may sample one
        _check(
            self.generate.samples_per_prompt >= 3,
            f"generate.samples_per_prompt must be at least 3, got {self.generate.samples_per_prompt}",
        )
        _check(self.patience >= 0, f"patience must be >= 0, got {self.patience}")
        _check(self.min_free_gb >= 0, f"min_free_gb must be >= 0, got {self.min_free_gb}")
        _check(
            self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"),
            f"device must be auto, cpu or cuda, got {self.device!r}",
        )
        # float16 would train without loss scaling (vipo has none), so `vipo run` refuses it; `vipo generate` takes it
        _check(
            self.model_dtype in ("float32", "bfloat16"),
            "model_dtype must be float32 or bfloat16 (float16 "
            f"trains without loss scaling; `vipo generate --model-dtype float16` samples in it), got "
            f"{self.model_dtype!r}",
        )
        _check(
            self.model_dtype == "float32" or self.model != "world",
            f"model_dtype: the embedded world model loads in float32 only, got {self.model_dtype!r}",
        )
        if self.eval.critic:
            validate_tree(eval_judge(self), "eval.critic.")


def training_inputs(train: TrainConfig) -> dict:
    """The train options hashed into training states and round checkpoints: all but ``tracker`` (where the metrics
    are mirrored), so turning a tracker on in a run folder neither retrains a round nor restarts one."""
    return {k: v for k, v in to_dict(train).items() if k != "tracker"}


def eval_judge(cfg: RunConfig) -> JudgeConfig:
    """The judge options of the critic that evaluates: ``eval.critic`` laid over the run's ``judge`` section (a name
    is ``{critic: name}``), or the run's judge itself when ``eval.critic`` is empty. The judge's ensemble members
    carry over only to an ensemble."""
    over = cfg.eval.critic
    if not over:
        return cfg.judge
    over = {"critic": over} if isinstance(over, str) else over
    data = dataclasses.asdict(cfg.judge)
    if over.get("critic", data["critic"]) != "ensemble":
        data.pop("members")
    return build(JudgeConfig, merge(data, over), "eval.critic")


# -- the options a person can set, with their docs (``vipo config``, ``--help``) -----------------------------------


def sections() -> dict[str, type]:
    """Section name -> dataclass: ``run`` (the run's own fields), each nested section of ``RunConfig`` under its field
    name, and ``pretrain`` (``vipo world pretrain``)."""
    out: dict[str, type] = {"run": RunConfig}
    hints = typing.get_type_hints(RunConfig)
    out.update(
        {f.name: hints[f.name] for f in dataclasses.fields(RunConfig) if dataclasses.is_dataclass(hints[f.name])}
    )
    out["pretrain"] = PretrainConfig
    return out


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else None  # type: ignore[misc]


def describe(section: str | None = None, width: int = 100) -> str:
    """Every option of ``section`` (all sections when None) with its YAML default and its docstring, as
    ``vipo config`` prints it: the key to give ``--set`` (``train.beta=500``) or to write under the section in YAML."""
    known = sections()
    if section is not None and section not in known:
        raise UserError(f"unknown config section {section!r} (known: {', '.join(known)})")
    blocks = []
    for name, cls in known.items():
        if section is not None and name != section:
            continue
        prefix = "" if name in ("run", "pretrain") else f"{name}."
        head = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        where = " (`vipo world pretrain --set KEY=VALUE`)" if name == "pretrain" else ""
        blocks.append("\n".join([f"[{name}] {head}{where}", *_option_lines(cls, prefix, width)]))
    return "\n\n".join(blocks) + "\n"


def _option_lines(cls: type, prefix: str, width: int) -> list[str]:
    """``  prefix.field: default`` and its wrapped docstring, for each field of ``cls`` (nested sections skipped)."""
    lines, docs = [], field_docs(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(_default(f)):
            continue  # a nested section: listed under its own name
        value = yaml.safe_dump(_default(f), default_flow_style=True, width=10**6).strip()
        value = value.removesuffix("\n...").removesuffix("...").strip()
        lines.append(f"  {prefix}{f.name}: {value}")
        text = " ".join(docs.get(f.name, "").split())
        lines += textwrap.wrap(text, width, initial_indent="      ", subsequent_indent="      ")
    return lines


def describe_critic(critic: str | None = None, width: int = 100) -> str:
    """The judge options common to every critic, then ``critic``'s own (``vipo judge --critic X --help``); with no
    critic, the list of critics in their place."""
    opts = _critic_options.OPTIONS
    critic = _critic_options.current_name(critic) if critic is not None else None
    if critic is not None and critic not in opts:
        raise UserError(f"judge.critic: unknown critic {critic!r} (known: {', '.join(opts)})")
    common = _critic_options.COMMON
    blocks = ["\n".join([f"[judge] {common.__doc__}", *_option_lines(common, "judge.", width)])]
    if critic is None:
        lines = ["[judge.critic] the critics: pass --critic X --help for X's options (`vipo config judge`: all)"]
        for name, cls in opts.items():  # "The vlm critic: a local ... model." -> "vlm: a local ... model"
            lines.append(
                f"  {name}: {' '.join((cls.__doc__ or '').split(': ', 1)[-1].split('. ')[0].split()).rstrip('.')}"
            )
        blocks.append("\n".join(lines))
    else:
        cls = opts[critic]
        head = " ".join((cls.__doc__ or "").split())
        fields = _option_lines(cls, "judge.", width) or ["  (none)"]
        blocks.append("\n".join([*textwrap.wrap(f"[judge: {critic}] {head}", width, subsequent_indent="  "), *fields]))
    return "\n\n".join(blocks) + "\n"
