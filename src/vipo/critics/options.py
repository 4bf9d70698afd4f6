"""Each critic's options: one dataclass per critic, holding the fields it reads, their docs and their checks.

The critic classes carry them as ``Critic.Options`` (``OpenAICritic.Options is OpenAIOptions``) and are built from
them (:func:`vipo.critics.build`). They live in this light module rather than in each critic's file because those
files import torch, transformers or PIL, while the config (``vipo config``, ``--help``, YAML loading) must not.

Users still write the options flat, ``judge.base_url`` in YAML or ``--set judge.base_url=...``, as they always have
(recipes, ``--set`` lines and run folders' config.yaml snapshots keep working): :class:`vipo.config.JudgeConfig` is
composed from the dataclasses here (:data:`COMMON` plus every critic's), so each option is written once, here, and
``CriticOptions.of(judge)`` picks a critic's own fields back out of the flat config. Several critics may read the same
flat key (``model`` is a served name for openai, a folder for vlm): each says what it means for it, with the same
type and default (checked when JudgeConfig is composed). A field's checks run on construction (``Section``); what a
critic cannot run without (openai's ``base_url``) is checked by :meth:`CriticOptions.require`, for the chosen critic.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

from ..config import Section, _check, _positive


class CriticOptions(Section):
    """Base of a critic's options: ``validate()`` checks ranges on construction, ``require()`` what the critic needs."""

    def require(self) -> None:
        """Raise ``UserError`` when the critic cannot run with these options (e.g. no model); checked for the chosen
        critic only, so a recipe may carry another critic's empty fields."""

    @classmethod
    def of(cls, cfg: Any) -> CriticOptions:
        """This critic's options picked out of a flat judge config (or any object with the same attributes)."""
        if isinstance(cfg, cls):
            return cfg
        return cls(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cls)})


@dataclass
class CommonOptions(CriticOptions):
    """Options of the judge whatever the critic."""

    critic: str = "world"
    """which critic: 'world' (the embedded world's exact judge), 'pixelstats' (placeholder pixel statistics that do
    not read the prompt, for smoke runs; 'metric' is its earlier name), 'vlm' (a local transformers
    image-text-to-text model), 'openai' (an OpenAI-compatible chat-completions endpoint: vLLM, SGLang, hosted),
    'human' (labels from a JSONL file), 'ensemble' (vote or mean over ``members``), 'omniscore' (VideoDPO's
    VBench-based score), 'reward' (a video reward model with a score per dimension: VideoAlign's VideoReward or a
    sequence-classification VLM) or 'learned' (a world critic trained by ``vipo critic train`` on labels)"""
    max_unparseable: float = 0.2
    """the judge stage stops with an error when more than this fraction of its judgments are unparseable"""

    def validate(self) -> None:
        self.critic = current_name(self.critic)
        _check(self.critic in OPTIONS, f"critic: unknown critic {self.critic!r} (known: {', '.join(OPTIONS)})")
        _check(0 <= self.max_unparseable <= 1, f"max_unparseable must be in [0, 1], got {self.max_unparseable}")


@dataclass
class NoOptions(CriticOptions):
    """The critic has no options of its own."""


@dataclass
class WorldOptions(NoOptions):
    """The world critic: the embedded world's exact judge (reads each clip's attributes back); no options."""


@dataclass
class PixelStatsOptions(NoOptions):
    """The pixelstats critic: placeholder pixel statistics that do not read the prompt, for smoke runs; no options."""


@dataclass
class LLMOptions(CriticOptions):
    """What the LLM critics (openai, vlm) share: how frames are shown and answers asked for."""

    frames: int = 16
    """frames sampled uniformly from each video and shown as images"""
    frame_size: int = 448
    """frames are letterboxed (scaled to fit, padded with black, never cropped) to this square side"""
    prompts_dir: str = ""
    """a folder of prompt templates overriding the packaged ones file by file (critics/prompts/)"""
    retries: int = 2
    """an unparseable answer is asked again up to this many times (a pairwise retry keeps the order)"""
    max_tokens: int = 512
    """longest answer, in tokens"""
    temperature: float = 0.0
    """sampling temperature (0 = greedy)"""

    def validate(self) -> None:
        _positive(self, "frames", "frame_size", "max_tokens")
        _check(self.retries >= 0 and self.temperature >= 0, "retries and temperature must be >= 0")


@dataclass
class OpenAIOptions(LLMOptions):
    """The openai critic: an OpenAI-compatible chat-completions endpoint (vLLM, SGLang, hosted)."""

    model: str = ""
    """the served model name"""
    base_url: str = ""
    """the endpoint's base URL, e.g. http://127.0.0.1:8000/v1 (``/chat/completions`` is appended)"""
    api_key_env: str = ""
    """name of the environment variable holding the API key (empty = no key sent); the key itself is
    never written to a config, log or record"""
    image_format: str = "png"
    """'png' or 'jpeg' for the base64 data-URL images"""
    concurrency: int = 4
    """requests in flight at once"""
    timeout_s: float = 120.0
    """seconds to wait for one answer"""
    http_retries: int = 4
    """attempts after a timeout, a dropped connection, HTTP 429 or 5xx, with exponential backoff"""
    backoff_s: float = 1.0
    """first backoff delay (doubled each attempt, at most 60 s; a Retry-After header takes precedence)"""

    def validate(self) -> None:
        # the variable's NAME goes here; a pasted key is refused without echoing it, before any config is written
        _check(
            not self.api_key_env
            or (
                re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.api_key_env) is not None
                and not _looks_like_a_key(self.api_key_env)
            ),
            "api_key_env: expects the name of an environment variable holding the key (e.g. OPENAI_API_KEY); "
            "the value given is not one (not shown: it may be the key itself, which must never be put in a "
            "config)",
        )
        super().validate()
        _positive(self, "concurrency", "timeout_s")
        _check(self.image_format in ("png", "jpeg"), f"image_format must be png or jpeg, got {self.image_format!r}")
        _check(self.http_retries >= 0 and self.backoff_s >= 0, "http_retries and backoff_s must be >= 0")

    def require(self) -> None:
        _check(bool(self.base_url and self.model), "the openai critic needs base_url and model")


def _looks_like_a_key(name: str) -> bool:
    """A long mixed-case or digit-laden token with no underscore is a secret, not an environment variable's name."""
    return len(name) >= 24 and "_" not in name and any(c.isdigit() for c in name) and not name.isupper()


def _dtype(cfg: Any) -> None:
    _check(cfg.dtype in ("auto", "bfloat16", "float16", "float32"), f"unknown dtype {cfg.dtype!r}")


@dataclass
class VLMOptions(LLMOptions):
    """The vlm critic: a local transformers image-text-to-text model."""

    model: str = ""
    """a local model folder (or hub id already in the local cache)"""
    adapter: str = ""
    """a LoRA adapter folder that ``vipo critic train`` wrote for ``model`` (merged in at load); empty = none"""
    batch_size: int = 4
    """questions per generate() batch"""
    device: str = "auto"
    """'auto', 'cpu' or 'cuda'"""
    trust_remote_code: bool = False
    """let transformers run the model folder's own Python code (only for a model you trust)"""
    dtype: str = "auto"
    """'auto' (bf16 on CUDA, else float32), 'bfloat16', 'float16' or 'float32'"""

    def validate(self) -> None:
        super().validate()
        _positive(self, "batch_size")
        _dtype(self)

    def require(self) -> None:
        _check(bool(self.model), "the vlm critic needs model (a local model folder)")


@dataclass
class HumanOptions(CriticOptions):
    """The human critic: labels from a JSONL file."""

    labels: str = ""
    """JSONL of annotations (docs/critics.md gives the keys)"""

    def require(self) -> None:
        _check(bool(self.labels), "the human critic needs labels (a JSONL of annotations)")


@dataclass
class EnsembleOptions(CriticOptions):
    """The ensemble critic: a vote or a mean over member critics, each given its own judge options."""

    members: list = field(default_factory=list)
    """one mapping of judge options per member critic, e.g. [{critic: world}, {critic: openai, ...}]; a
    member's options are laid over the ensemble's own judge options"""
    combine: str = "vote"
    """'vote' (majority per dimension) or 'mean' (mean score per dimension)"""

    def validate(self) -> None:
        _check(self.combine in ("vote", "mean"), f"combine must be vote or mean, got {self.combine!r}")

    def require(self) -> None:
        _check(bool(self.members), "the ensemble critic needs members")
        for i, m in enumerate(self.members):
            _check(
                isinstance(m, dict) and m.get("critic") not in (None, "ensemble"),
                f"members[{i}] must be a mapping of judge options with a critic other than ensemble",
            )


@dataclass
class OmniScoreOptions(CriticOptions):
    """The omniscore critic: VideoDPO's VBench-based score. Its feature-model options also serve ``vipo eval DIR``."""

    dino: str = ""
    """a local transformers DINO ViT folder (e.g. a save of facebook/dino-vitb16) for
    VBench's subject consistency; empty = skipped. Never downloaded; the feature models run on ``device`` (also ``vipo eval DIR``)"""
    clip: str = ""
    """a local transformers CLIPModel folder for VBench's background consistency
    (VBench uses CLIP ViT-B/32, e.g. openai/clip-vit-base-patch32); empty = skipped (also ``vipo eval DIR``)"""
    aesthetic_clip: str = ""
    """the CLIPModel folder whose image embeddings feed ``aesthetic_head`` (VBench:
    CLIP ViT-L/14, e.g. openai/clip-vit-large-patch14); empty = ``clip`` (also ``vipo eval DIR``)"""
    aesthetic_head: str = ""
    """the LAION aesthetic predictor for VBench's aesthetic quality, a .safetensors
    file (weight and bias of its 768 -> 1 linear layer, or LAION's layers.N.*); .pth/.pt only with --allow-pickle;
    empty = skipped (also ``vipo eval DIR``)"""
    musiq: str = ""
    """MUSIQ weights for VBench's imaging quality (VBench: pyiqa's
    musiq_spaq_ckpt-358bb6af.pth, a pickle: --allow-pickle; or the same as .safetensors); needs the pyiqa package,
    else skipped with a warning (also ``vipo eval DIR``)"""
    xclip: str = ""
    """a local transformers XCLIPModel folder (e.g. microsoft/xclip-base-patch32) for
    ``overall_consistency_xclip``, a stand-in for VBench's ViCLIP overall consistency (which vipo does not load),
    normalized with ViCLIP's constant; empty = no semantic dimension (also ``vipo eval DIR``)"""
    feature_batch: int = 32
    """frames per forward pass of the feature models (also ``vipo eval DIR``)"""
    device: str = "auto"
    """'auto', 'cpu' or 'cuda'"""

    def validate(self) -> None:
        _positive(self, "feature_batch")


@dataclass
class RewardOptions(CriticOptions):
    """The reward critic: a video reward model with a score per dimension (VideoAlign's VideoReward, or a
    transformers sequence-classification VLM)."""

    model: str = ""
    """the reward model's local folder (VideoAlign's layout, or a transformers sequence-classification VLM)"""
    frames: int = 16
    """sequence-classification layout: frames sampled uniformly from each video"""
    frame_size: int = 448
    """sequence-classification layout: frames are letterboxed to this square side"""
    batch_size: int = 4
    """clips per forward pass"""
    device: str = "auto"
    """'auto', 'cpu' or 'cuda'"""
    trust_remote_code: bool = False
    """let transformers run the model folder's own Python code (only for a model you trust)"""
    dtype: str = "auto"
    """'auto' (bf16 on CUDA, else float32), 'bfloat16', 'float16' or 'float32'"""
    reward_base: str = ""
    """VideoAlign layout: the base VLM's local folder (Qwen2-VL-2B-Instruct); empty = its
    model_config.json's model_name_or_path, as a folder or in the local Hugging Face cache (never downloaded)"""
    reward_checkpoint: str = ""
    """VideoAlign layout: the checkpoint-N subfolder to load (empty = the highest N)"""
    reward_thresholds: list = field(default_factory=lambda: [-0.5, 0.5])
    """[bad_below, good_from] on each dimension's normalised score: Bad below the first, Good from the
    second, Normal between (VideoAlign's scores are normalised to mean 0, std 1 over its training pairs)"""
    reward_tie_margin: float = 0.1
    """pairwise Tie when two clips' normalised scores differ by this much or less"""

    def validate(self) -> None:
        _positive(self, "frames", "frame_size", "batch_size")
        _dtype(self)
        t = self.reward_thresholds
        _check(
            isinstance(t, list) and len(t) == 2 and all(isinstance(x, (int, float)) for x in t) and t[0] <= t[1],
            f"reward_thresholds must be [bad_below, good_from] with bad_below <= good_from, got {t!r}",
        )
        _check(self.reward_tie_margin >= 0, f"reward_tie_margin must be >= 0, got {self.reward_tie_margin}")

    def require(self) -> None:
        _check(bool(self.model), "the reward critic needs model (a local reward-model folder)")


@dataclass
class LearnedOptions(CriticOptions):
    """The learned critic: a world critic trained by ``vipo critic train`` on labels."""

    model: str = ""
    """the folder ``vipo critic train`` wrote"""
    device: str = "auto"
    """'auto', 'cpu' or 'cuda'"""

    def require(self) -> None:
        _check(bool(self.model), "the learned critic needs model (the folder `vipo critic train` wrote)")


#: critic name -> its options; the critic classes themselves are in :data:`vipo.critics.CRITICS` (imported on use)
OPTIONS: dict[str, type[CriticOptions]] = {
    "world": WorldOptions,
    "pixelstats": PixelStatsOptions,
    "vlm": VLMOptions,
    "openai": OpenAIOptions,
    "human": HumanOptions,
    "ensemble": EnsembleOptions,
    "omniscore": OmniScoreOptions,
    "reward": RewardOptions,
    "learned": LearnedOptions,
}

#: a critic's earlier name -> its name now: recipes, ``--set`` lines and ensemble members that use the earlier name
#: keep working, and folders that recorded the earlier name resume (:func:`current_names`)
RENAMED: dict[str, str] = {"metric": "pixelstats"}


def current_name(critic: str) -> str:
    """The critic's name now (an earlier name, :data:`RENAMED`, replaced; any other name as it is)."""
    return RENAMED.get(critic, critic)


def current_names(record: Any) -> Any:
    """A stored record (a run folder's config snapshot, a judgments cache's provenance) with every critic named by
    an earlier name (a ``critic`` key anywhere: ``judge.critic``, ``judge.members[i].critic``, ``eval.critic``)
    renamed, so a folder started under the earlier name resumes under the new one."""
    if isinstance(record, dict):
        return {
            k: current_name(v) if k == "critic" and isinstance(v, str) else current_names(v) for k, v in record.items()
        }
    if isinstance(record, list):
        return [current_names(v) for v in record]
    return record


#: the judge options whatever the critic
COMMON = CommonOptions
