"""The ``reward`` critic: a video reward model with one scalar per dimension, loaded from a local folder.

Two layouts of ``judge.model``:

- **VideoAlign's VideoReward** (Liu et al., 2025, *Improving Video Generation with Human Feedback*; the reward of
  Flow-GRPO's and DanceGRPO's video runs): a folder with ``model_config.json`` (its ``data_config``,
  ``model_config``, ``peft_lora_config`` and ``inference_config``) and ``checkpoint-N/`` folders, each holding a LoRA
  (``adapter_model.safetensors`` + ``adapter_config.json``), the weights trained outside the LoRA
  (``non_lora_state_dict.pth``: the reward head ``rm_head``, the embeddings of the added reward tokens, the vision
  tower and merger, ...) and ``tokenizer/``; or a whole ``model.pth``. The base VLM (Qwen2-VL-2B-Instruct) is
  ``model_config.model_name_or_path``, or ``judge.reward_base`` (a local folder; nothing is downloaded). What this
  module takes from their release, as facts:

  * the network: Qwen2-VL's language model output (after its final norm) through a bias-free linear head
    ``rm_head`` of ``output_dim`` outputs; with ``use_special_tokens`` the tokens ``<|VQ_reward|>``,
    ``<|MQ_reward|>``, ``<|TA_reward|>`` are appended to the tokenizer (embeddings resized to the new vocabulary) and
    the reward of dimension ``i`` is head output ``i`` at the ``i``-th reward token (``reward_token: special``);
    otherwise the head's outputs at the last real token (``last``) or averaged over the sequence (``mean``);
  * the question: the ``detailed_special`` template (``prompts/videoalign_detailed_special.txt``, kept verbatim with
    its MIT notice) or ``detailed``, in a one-turn chat (video, then text) with the generation prompt appended;
  * the frames: ``fps`` frames per second of the clip (``data_config.fps``, 2 in their training; or
    ``num_frames``), at least 4, an even count, indices ``linspace(0, F - 1, n)`` rounded; each frame resized
    (bicubic, antialiased) to sides that are multiples of 28 with between 128 x 28 x 28 and
    ``data_config.max_frame_pixels`` pixels, aspect kept; then Qwen2-VL's video patches (14 pixels, 2 frames per
    temporal patch, 2 x 2 merge, CLIP mean/std), built here (:func:`video_patches`) so that torchvision, which
    transformers' video processor needs, is not a dependency;
  * the scores: ``VQ`` (visual quality), ``MQ`` (motion quality), ``TA`` (text alignment), normalised by
    ``inference_config``'s ``{VQ,MQ,TA}_{mean,std}`` as ``(raw - mean) / std``; their Overall is VQ + MQ + TA.

  The LoRA is merged into the base weights once at load: ``W + (alpha / r) B A`` (Hu et al., 2021, Eq. 3;
  ``alpha / sqrt(r)`` with rsLoRA), after the non-LoRA weights replaced theirs. Their checkpoints were written with
  transformers 4.45 (``model.layers.*``, ``visual.*``); the names are mapped onto the loaded model's.
- **A plain transformers sequence-classification VLM** (``config.json`` naming a ``...ForSequenceClassification``,
  e.g. Gemma 3's): ``AutoModelForSequenceClassification`` with its processor; the user turn is the clip's ``frames``
  frames (letterboxed to ``frame_size``, as the LLM critics show them) and the prompt. Its ``id2label`` names the
  outputs: ``semantic``/``TA``/``text_alignment``, ``fidelity``/``VQ``/``visual_quality``,
  ``motion``/``MQ``/``motion_quality`` (case ignored); one output serves all three dimensions. ``reward_mean`` and
  ``reward_std`` in its config (label -> number) normalise, where present.

Verdicts (documented thresholds, not learned): with ``z`` a dimension's normalised score (the raw score where the
model carries no mean/std), pointwise is Good for ``z >= judge.reward_thresholds[1]`` (default 0.5), Bad for
``z < reward_thresholds[0]`` (default -0.5), Normal between, and the graded score ``sigmoid(z)``; a dimension the
model lacks takes the mean of those it has. Pairwise is A or B by the larger ``z`` when the two differ by more than
``judge.reward_tie_margin`` (default 0.1), else Tie; the overall verdict compares the mean ``z`` the same way. Each
judgment's raw text gives every raw and normalised score, so a record shows what the model said. Scores are computed
in batches of ``judge.batch_size`` on ``judge.device`` and cached per clip, so a clip's pairwise questions reuse its
pointwise scores.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import math
import re
from collections import OrderedDict
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from .base import DIMENSIONS, BatchCritic, CriticParseError, Pairwise, Pointwise, Video
from .options import RewardOptions

log = logging.getLogger(__name__)
#: VideoAlign's dimension names -> ours
VIDEOALIGN = {"VQ": "fidelity", "MQ": "motion", "TA": "semantic"}
REWARD_TOKENS = ("<|VQ_reward|>", "<|MQ_reward|>", "<|TA_reward|>")
SYNONYMS = {
    "semantic": ("semantic", "ta", "text_alignment", "alignment", "text-alignment"),
    "fidelity": ("fidelity", "vq", "visual_quality", "quality", "visual-quality"),
    "motion": ("motion", "mq", "motion_quality", "motion-quality"),
}
# Qwen2-VL's video input as VideoAlign prepares it (qwen-vl-utils' constants)
FACTOR, MIN_PIXELS, FRAME_FACTOR, MIN_FRAMES, MAX_FRAMES = 28, 128 * 28 * 28, 2, 4, 768
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
PICKLE = (".pth", ".pt", ".bin")


def frame_count(total: int, video_fps: float, fps: float | None = None, nframes: int | None = None) -> int:
    """How many frames VideoAlign samples from a clip of ``total`` frames at ``video_fps``: ``nframes`` rounded to
    an even count, or ``fps`` per second between 4 and 768 frames (even), never more than the clip has."""
    if nframes:
        n = round(nframes / FRAME_FACTOR) * FRAME_FACTOR
    else:
        lo = math.ceil(MIN_FRAMES / FRAME_FACTOR) * FRAME_FACTOR
        hi = math.floor(min(MAX_FRAMES, total) / FRAME_FACTOR) * FRAME_FACTOR
        n = round(min(max(total / video_fps * (fps or 2.0), lo), hi) / FRAME_FACTOR) * FRAME_FACTOR
    n = min(n, total)
    if n < FRAME_FACTOR:
        raise ValueError(f"a clip of {total} frames is too short for the reward model (it needs {FRAME_FACTOR})")
    return n


def fit_sides(
    height: int, width: int, max_pixels: int, factor: int = FACTOR, min_pixels: int = MIN_PIXELS
) -> tuple[int, int]:
    """Sides that are multiples of ``factor`` with between ``min_pixels`` and ``max_pixels`` pixels, the aspect
    ratio kept as closely as that allows (qwen-vl-utils' rule)."""
    h = max(factor, round(height / factor) * factor)
    w = max(factor, round(width / factor) * factor)
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h, w = math.ceil(height * beta / factor) * factor, math.ceil(width * beta / factor) * factor
    return h, w


def video_patches(
    frames: torch.Tensor, patch: int = 14, merge: int = 2, temporal: int = 2, mean=CLIP_MEAN, std=CLIP_STD
) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """Qwen2-VL's flattened video patches of float frames [T, 3, H, W] in [0, 255] (H, W multiples of
    ``patch * merge``): rescaled to [0, 1], normalised, the last frame repeated up to a multiple of ``temporal``;
    rows ordered (time, merged row, merged column, row in merge, column in merge), each row (channel, frame in
    temporal patch, y, x). Returns ([grid_t * grid_h * grid_w, 3 * temporal * patch * patch], (grid_t, grid_h,
    grid_w))."""
    x = frames.float() / 255.0
    x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    if pad := -len(x) % temporal:
        x = torch.cat([x, x[-1:].expand(pad, -1, -1, -1)])
    t, c, h, w = x.shape
    gt, gh, gw = t // temporal, h // patch, w // patch
    x = x.view(gt, temporal, c, gh // merge, merge, patch, gw // merge, merge, patch)
    x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return x.reshape(gt * gh * gw, c * temporal * patch * patch), (gt, gh, gw)


def clip_fps(video: Video, default: float = 8.0) -> float:
    """The clip's frame rate from its file, where it has one."""
    if video.path and Path(video.path).is_file():
        import av

        try:
            with av.open(video.path) as box:
                rate = box.streams.video[0].average_rate
                if rate:
                    return float(rate)
        except (av.error.FFmpegError, IndexError):  # unreadable: the default rate
            pass
    return default


def _device_dtype(cfg: RewardOptions) -> tuple[str, torch.dtype]:
    from ..device import resolve_device

    device = resolve_device(cfg.device)
    dtype = {
        "auto": torch.bfloat16 if device.startswith("cuda") else torch.float32,
        "bfloat16": torch.bfloat16,
        "float16": torch.float16,
        "float32": torch.float32,
    }[cfg.dtype]
    return device, dtype


def _state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A weight file: safetensors, or (with --allow-pickle) a torch pickle, loaded with ``weights_only``."""
    from ..models import allow_pickle

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    if not allow_pickle():
        raise UserError(
            f"{path}: pickle-format weights can run arbitrary code when loaded; pass --allow-pickle if you "
            'trust the checkpoint, or convert it once: python -c "import torch, safetensors.torch as s; '
            f"s.save_file(torch.load('{path}'), '{path.with_suffix('.safetensors')}')\""
        )
    return torch.load(str(path), map_location="cpu", weights_only=True)


def _weights(folder: Path, stem: str) -> Path | None:
    for suffix in (".safetensors", *PICKLE):
        if (folder / f"{stem}{suffix}").is_file():
            return folder / f"{stem}{suffix}"
    return None


class VideoAlignModel:
    """VideoAlign's VideoReward (Qwen2-VL-2B + LoRA + reward head) from its released folder layout."""

    def __init__(self, cfg: RewardOptions):
        folder = Path(cfg.model)
        meta = json.loads((folder / "model_config.json").read_text())
        self.data, mcfg = meta.get("data_config", {}), meta.get("model_config", {})
        self.norm = meta.get("inference_config") or {}
        ckpt = self._checkpoint(folder, cfg.reward_checkpoint)
        base = cfg.reward_base or mcfg.get("model_name_or_path", "")
        if not base:
            raise UserError(
                f"{folder / 'model_config.json'}: no model_config.model_name_or_path; set judge.reward_base "
                "to the base VLM's local folder (Qwen2-VL-2B-Instruct)"
            )
        self.device, self.dtype = _device_dtype(cfg)
        self.template = self._template(str(self.data.get("prompt_template_type", "none")), folder)
        self.mode = "special" if mcfg.get("use_special_tokens") else str(mcfg.get("reward_token", "last"))
        dims = self.data.get("eval_dim", ["VQ", "MQ", "TA"])
        self.names = list(VIDEOALIGN) if self.mode == "special" else ([dims] if isinstance(dims, str) else list(dims))
        self._load(base, ckpt, folder, int(mcfg.get("output_dim", 1)))
        log.info(
            "reward critic: VideoAlign %s on %s (%s), base %s, reward token %s, dimensions %s",
            ckpt,
            self.device,
            str(self.dtype).removeprefix("torch."),
            base,
            self.mode,
            ", ".join(self.names),
        )

    # -- loading ---------------------------------------------------------------------------------------------------
    @staticmethod
    def _checkpoint(folder: Path, name: str) -> Path:
        if name:
            if not (folder / name).is_dir():
                raise UserError(f"judge.reward_checkpoint: {folder / name}: not a folder")
            return folder / name
        steps = sorted(
            (int(m.group(1)), p)
            for p in folder.glob("checkpoint-*")
            if (m := re.fullmatch(r"checkpoint-(\d+)", p.name)) and p.is_dir()
        )
        if steps:
            return steps[-1][1]
        if _weights(folder, "model") or (folder / "adapter_model.safetensors").is_file():
            return folder
        raise UserError(f"{folder}: no checkpoint-N folder (VideoAlign's layout) and no weights in it")

    @staticmethod
    def _template(kind: str, folder: Path) -> str:
        if kind == "none":
            return "{text_prompt}"
        if kind not in ("detailed_special", "detailed"):
            raise UserError(
                f"{folder / 'model_config.json'}: data_config.prompt_template_type {kind!r} is not "
                "supported (detailed_special, detailed or none)"
            )
        return resources.files("vipo.critics").joinpath("prompts", f"videoalign_{kind}.txt").read_text()

    def _load(self, base: str, ckpt: Path, folder: Path, output_dim: int) -> None:
        from transformers import AutoImageProcessor, AutoTokenizer, Qwen2VLForConditionalGeneration

        from ..models import check_weights

        base_path = Path(base)
        if base_path.is_dir():
            check_weights(base_path)
        try:
            tok_dir = ckpt / "tokenizer" if (ckpt / "tokenizer").is_dir() else base
            self.tokenizer = AutoTokenizer.from_pretrained(str(tok_dir), local_files_only=True)
            self.images = AutoImageProcessor.from_pretrained(base, local_files_only=True)
            model = Qwen2VLForConditionalGeneration.from_pretrained(base, dtype=torch.float32, local_files_only=True)
        except OSError as e:
            raise UserError(
                f"reward critic: the base VLM {base!r} is not a local folder or in the local Hugging Face "
                f"cache ({str(e).splitlines()[0]}); set judge.reward_base to its folder"
            ) from None
        self.tokenizer.padding_side = "right"
        if self.mode == "special" and not all(t in self.tokenizer.get_vocab() for t in REWARD_TOKENS):
            self.tokenizer.add_special_tokens({"additional_special_tokens": list(REWARD_TOKENS)})
        self.chat_template = self._chat_template(base_path) or self.tokenizer.chat_template
        if not self.chat_template:
            raise UserError(f"reward critic: {base}: no chat template (chat_template.jinja/.json or the tokenizer's)")
        if self.mode == "special":
            model.resize_token_embeddings(len(self.tokenizer))
            self.reward_ids = self.tokenizer.convert_tokens_to_ids(list(REWARD_TOKENS))
        self.head = torch.nn.Linear(model.config.get_text_config().hidden_size, output_dim, bias=False)
        self._load_weights(model, ckpt)
        self.lm = model.model.to(self.device, self.dtype).eval()  # the language model with its vision tower
        self.head = self.head.to(self.device, self.dtype).eval()
        self.video_token = "<|video_pad|>"
        self.video_id = self.tokenizer.convert_tokens_to_ids(self.video_token)
        self._types = "mm_token_type_ids" in inspect.signature(self.lm.forward).parameters
        self.merge = int(getattr(self.images, "merge_size", 2))
        self.patch = int(getattr(self.images, "patch_size", 14))
        self.temporal = int(getattr(self.images, "temporal_patch_size", 2))

    @staticmethod
    def _chat_template(base: Path) -> str | None:
        if (base / "chat_template.jinja").is_file():
            return (base / "chat_template.jinja").read_text()
        if (base / "chat_template.json").is_file():
            return json.loads((base / "chat_template.json").read_text())["chat_template"]
        return None

    def _load_weights(self, model, ckpt: Path) -> None:
        names = set(model.state_dict())

        def target(key: str) -> str | None:
            k = key.removeprefix("base_model.model.").replace(".base_layer.", ".").replace(".default.", ".")
            for cand in (
                k,
                re.sub(r"^model\.(?!language_model\.|visual\.)", "model.language_model.", k),
                re.sub(r"^visual\.", "model.visual.", k),
            ):
                if cand in names:
                    return cand
            return None

        full = _weights(ckpt, "model")
        plain: dict[str, torch.Tensor] = {}
        lora: dict[str, torch.Tensor] = {}
        if full is not None:
            plain = _state_dict(full)
        else:
            non_lora = _weights(ckpt, "non_lora_state_dict")
            if non_lora is None or not (ckpt / "adapter_model.safetensors").is_file():
                raise UserError(
                    f"{ckpt}: neither model.pth nor adapter_model.safetensors with "
                    "non_lora_state_dict.pth (VideoAlign's checkpoint layout)"
                )
            plain = _state_dict(non_lora)
            adapter = _state_dict(ckpt / "adapter_model.safetensors")
            lora = {k: v for k, v in adapter.items() if ".lora_" in k}
            plain.update({k: v for k, v in adapter.items() if ".lora_" not in k})  # e.g. resized embeddings
        head = [k for k in plain if k.removeprefix("base_model.model.") == "rm_head.weight"]
        if not head:
            raise UserError(f"{ckpt}: no rm_head.weight (the reward head) in its weights")
        self.head.weight.data.copy_(plain.pop(head[0]).float())
        state = model.state_dict()
        unknown = []
        with torch.no_grad():
            for k, v in plain.items():
                t = target(k)
                if t is None:
                    unknown.append(k)
                elif state[t].shape != v.shape:
                    raise UserError(
                        f"{ckpt}: {k} has shape {tuple(v.shape)}, the base model's {t} "
                        f"{tuple(state[t].shape)} (is judge.reward_base the model it was trained from?)"
                    )
                else:
                    state[t].copy_(v.float())
            if self.mode == "special" and not any("embed_tokens" in k for k in plain):
                raise UserError(f"{ckpt}: no embed_tokens weights: the reward tokens' trained embeddings are missing")
            if lora:
                self._merge(state, lora, ckpt, target, unknown)
        if unknown:
            raise UserError(
                f"{ckpt}: {len(unknown)} weights the base model has no place for (first: {unknown[0]}); "
                "is judge.reward_base the model it was trained from?"
            )

    @staticmethod
    def _merge(state, lora, ckpt: Path, target, unknown: list) -> None:
        """Merge each LoRA pair into its base weight: W += scale * B @ A (Hu et al., 2021, Eq. 3)."""
        conf = (
            json.loads((ckpt / "adapter_config.json").read_text()) if (ckpt / "adapter_config.json").is_file() else {}
        )
        if conf.get("use_dora") or conf.get("rank_pattern") or conf.get("alpha_pattern"):
            raise UserError(
                f"{ckpt / 'adapter_config.json'}: DoRA and per-module rank/alpha patterns are not supported"
            )
        r, alpha = conf.get("r", 16), conf.get("lora_alpha", 32)
        scale = alpha / math.sqrt(r) if conf.get("use_rslora") else alpha / r
        for key in [k for k in lora if ".lora_A." in k]:
            b_key = key.replace(".lora_A.", ".lora_B.")
            module = key.split(".lora_A.")[0]
            t = target(module + ".weight")
            if t is None or b_key not in lora:
                unknown.append(key)
                continue
            a, b = lora[key].float(), lora[b_key].float()
            state[t].add_(scale * (b @ a))

    # -- scoring ---------------------------------------------------------------------------------------------------
    def _video(self, video: Video) -> tuple[torch.Tensor, tuple[int, int, int]]:
        import torch.nn.functional as F

        frames = video.frames
        n = frame_count(len(frames), clip_fps(video), self.data.get("fps"), self.data.get("num_frames"))
        idx = np.linspace(0, len(frames) - 1, n).round().astype(int)
        x = torch.from_numpy(np.ascontiguousarray(frames[idx])).permute(0, 3, 1, 2).float()
        h, w = fit_sides(
            x.shape[2], x.shape[3], int(self.data.get("max_frame_pixels", 448 * 448)), self.patch * self.merge
        )
        if (h, w) != tuple(x.shape[2:]):
            x = F.interpolate(x, size=(h, w), mode="bicubic", antialias=True, align_corners=False)
        mean = getattr(self.images, "image_mean", CLIP_MEAN)
        std = getattr(self.images, "image_std", CLIP_STD)
        return video_patches(x, self.patch, self.merge, self.temporal, mean, std)

    def text(self, prompt: str, grid: tuple[int, int, int]) -> str:
        messages = [
            {
                "role": "user",
                "content": [
                    {"type": "video"},
                    {"type": "text", "text": self.template.replace("{text_prompt}", prompt)},
                ],
            }
        ]
        text = self.tokenizer.apply_chat_template(
            messages, chat_template=self.chat_template, tokenize=False, add_generation_prompt=True
        )
        tokens = grid[0] * grid[1] * grid[2] // self.merge**2
        if text.count(self.video_token) != 1:
            raise UserError(
                f"reward critic: the chat template renders {text.count(self.video_token)} "
                f"{self.video_token} tokens for one video"
            )
        return text.replace(self.video_token, self.video_token * tokens)

    def inputs(self, videos: list[Video]) -> dict[str, torch.Tensor]:
        """The model's inputs for a batch of clips: token ids (right-padded), attention mask, video patches, grids."""
        patches = [self._video(v) for v in videos]
        texts = [self.text(v.prompt, g) for v, (_, g) in zip(videos, patches)]
        enc = self.tokenizer(texts, padding=True, return_tensors="pt")
        out = {
            "input_ids": enc["input_ids"].to(self.device),
            "attention_mask": enc["attention_mask"].to(self.device),
            "pixel_values_videos": torch.cat([p for p, _ in patches]).to(self.device, self.dtype),
            "video_grid_thw": torch.tensor([g for _, g in patches]).to(self.device),
        }
        if self._types:  # transformers >= 5 asks which tokens are video (2) for the multimodal rotary positions
            out["mm_token_type_ids"] = (out["input_ids"] == self.video_id).int() * 2
        return out

    @torch.no_grad()
    def raw(self, videos: list[Video]) -> list[dict[str, float]]:
        """Each clip's raw reward per dimension name (VQ, MQ, TA)."""
        inputs = self.inputs(videos)
        hidden = self.lm(**inputs).last_hidden_state
        logits = self.head(hidden).float()  # [B, L, output_dim]
        out = []
        for b in range(len(videos)):
            if self.mode == "special":
                pos = [int((inputs["input_ids"][b] == t).nonzero()[0, 0]) for t in self.reward_ids]
                vals = [logits[b, p, i if logits.shape[-1] == len(pos) else 0] for i, p in enumerate(pos)]
            elif self.mode == "last":
                last = int(inputs["attention_mask"][b].nonzero().max())
                vals = list(logits[b, last])
            else:  # mean over the real tokens
                keep = inputs["attention_mask"][b].bool()
                vals = list(logits[b, keep].mean(0))
            out.append({n: float(v) for n, v in zip(self.names, vals)})
        return out

    def normalise(self, name: str, value: float) -> float:
        if f"{name}_mean" in self.norm and f"{name}_std" in self.norm:
            return (value - float(self.norm[f"{name}_mean"])) / float(self.norm[f"{name}_std"])
        return value

    def dimension(self, name: str) -> str | None:
        return VIDEOALIGN.get(name)


class SequenceClassifierModel:
    """A transformers ``...ForSequenceClassification`` VLM: frames as images and the prompt, one score per label."""

    def __init__(self, cfg: RewardOptions):
        from transformers import AutoModelForSequenceClassification

        from ..models import allow_pickle, check_weights
        from .llm import letterbox, sample_frames
        from .vlm import load_processor

        folder = Path(cfg.model)
        check_weights(folder)
        self.cfg = cfg
        self.device, self.dtype = _device_dtype(cfg)
        self.model = (
            AutoModelForSequenceClassification.from_pretrained(
                str(folder),
                dtype=self.dtype,
                use_safetensors=not allow_pickle(),
                local_files_only=True,
                trust_remote_code=cfg.trust_remote_code,
            )
            .to(self.device)
            .eval()
        )
        self.processor = load_processor(str(folder), cfg.trust_remote_code)
        self.processor.tokenizer.padding_side = "right"
        config = self.model.config
        self.names = [config.id2label[i] for i in range(config.num_labels)]
        self.norm = {
            "mean": getattr(config, "reward_mean", None) or {},
            "std": getattr(config, "reward_std", None) or {},
        }
        self._frames = lambda v: [letterbox(f, cfg.frame_size) for f in sample_frames(v.frames, cfg.frames)]
        log.info(
            "reward critic: %s (%s) on %s, outputs %s",
            folder,
            type(self.model).__name__,
            self.device,
            ", ".join(self.names),
        )

    @torch.no_grad()
    def raw(self, videos: list[Video]) -> list[dict[str, float]]:
        from PIL import Image

        texts, images = [], []
        for v in videos:
            frames = self._frames(v)
            content = [{"type": "image"} for _ in frames] + [{"type": "text", "text": v.prompt}]
            texts.append(self.processor.apply_chat_template([{"role": "user", "content": content}], tokenize=False))
            images.append([Image.fromarray(f) for f in frames])
        inputs = self.processor(text=texts, images=images, padding=True, return_tensors="pt").to(self.device)
        logits = self.model(**inputs).logits.float()
        return [{n: float(x) for n, x in zip(self.names, row)} for row in logits]

    def normalise(self, name: str, value: float) -> float:
        if name in self.norm["mean"] and name in self.norm["std"]:
            return (value - float(self.norm["mean"][name])) / float(self.norm["std"][name])
        return value

    def dimension(self, name: str) -> str | None:
        if len(self.names) == 1:
            return "all"
        return next((d for d, words in SYNONYMS.items() if name.lower() in words), None)


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, z))))


class RewardCritic(BatchCritic):
    name = "reward"
    Options = RewardOptions

    def __init__(self, cfg: RewardOptions, backend=None):
        self.cfg = cfg
        lo, hi = cfg.reward_thresholds
        self.bad_below, self.good_from, self.margin = float(lo), float(hi), float(cfg.reward_tie_margin)
        if backend is None:
            folder = Path(cfg.model)
            if not folder.is_dir():
                raise UserError(
                    f"judge.model: {cfg.model}: not a local folder (the reward critic loads a VideoAlign "
                    "checkpoint folder or a sequence-classification model folder; nothing is downloaded)"
                )
            if (folder / "model_config.json").is_file():
                backend = VideoAlignModel(cfg)
            elif "ForSequenceClassification" in " ".join(_architectures(folder)):
                backend = SequenceClassifierModel(cfg)
            else:
                raise UserError(
                    f"judge.model: {folder}: neither VideoAlign's layout (model_config.json and "
                    "checkpoint-N/) nor a transformers ...ForSequenceClassification model (config.json)"
                )
        self.backend = backend
        mapped = {n: backend.dimension(n) for n in backend.names}
        if not any(mapped.values()):
            raise UserError(
                f"judge.model: {cfg.model}: none of its outputs ({', '.join(backend.names)}) names a "
                "dimension (semantic/TA, fidelity/VQ, motion/MQ)"
            )
        self.mapped = mapped
        self._cache: OrderedDict[tuple, dict] = OrderedDict()

    # -- scores ----------------------------------------------------------------------------------------------------
    @staticmethod
    def _key(v: Video) -> tuple:
        return (v.prompt, v.path or hashlib.sha1(np.ascontiguousarray(v.frames).tobytes()).hexdigest())

    def scores(self, videos: list[Video]) -> list[dict]:
        """Per clip: ``raw`` (the model's outputs by name), ``z`` (normalised, by name) and ``dims`` (z per
        dimension of ours)."""
        todo = list({self._key(v): v for v in videos if self._key(v) not in self._cache}.items())
        for i in range(0, len(todo), self.cfg.batch_size):
            chunk = todo[i : i + self.cfg.batch_size]
            for (key, _), raw in zip(chunk, self.backend.raw([v for _, v in chunk])):
                z = {n: self.backend.normalise(n, x) for n, x in raw.items()}
                dims = {}
                for n, d in self.mapped.items():
                    for dim in DIMENSIONS if d == "all" else (d,) if d else ():
                        dims[dim] = z[n]
                have = [dims[d] for d in DIMENSIONS if d in dims]
                for d in DIMENSIONS:
                    dims.setdefault(d, float(np.mean(have)))
                self._cache[key] = {"raw": raw, "z": z, "dims": dims}
                if len(self._cache) > 4096:
                    self._cache.popitem(last=False)
        return [self._cache[self._key(v)] for v in videos]

    def label(self, z: float) -> str:
        return "Good" if z >= self.good_from else "Bad" if z < self.bad_below else "Normal"

    def verdict(self, za: float, zb: float) -> str:
        return "Tie" if abs(za - zb) <= self.margin else "A" if za > zb else "B"

    def _describe(self, s: dict) -> str:
        return ", ".join(
            f"{n} {x:.4f}" + (f" (normalised {s['z'][n]:.4f})" if s["z"][n] != x else "") for n, x in s["raw"].items()
        )

    # -- the critic interface ----------------------------------------------------------------------------------------
    def pointwise_many(self, videos: list[Video]) -> list[Pointwise | CriticParseError]:
        out = []
        for s in self.scores(videos):
            labels = {d: self.label(s["dims"][d]) for d in DIMENSIONS}
            reasons = {d: f"normalised reward {s['dims'][d]:.4f}" for d in DIMENSIONS}
            mean = float(np.mean([s["dims"][d] for d in DIMENSIONS]))
            raw = "\n".join(f"{d}: {labels[d]} - {reasons[d]}" for d in DIMENSIONS) + (
                f"\nrewards: {self._describe(s)}; mean over dimensions {mean:.4f}; thresholds Bad < {self.bad_below} "
                f"<= Normal < {self.good_from} <= Good"
            )
            out.append(
                Pointwise(
                    labels, reasons, raw, scores={d: _sigmoid(s["dims"][d]) for d in DIMENSIONS}, total=_sigmoid(mean)
                )
            )
        return out

    def pairwise_many(self, pairs: list[tuple[Video, Video]]) -> list[Pairwise | CriticParseError]:
        flat = self.scores([v for p in pairs for v in p])
        out = []
        for sa, sb in zip(flat[::2], flat[1::2]):
            verdicts = {d: self.verdict(sa["dims"][d], sb["dims"][d]) for d in DIMENSIONS}
            reasons = {d: f"{sa['dims'][d]:.4f} vs {sb['dims'][d]:.4f}" for d in DIMENSIONS}
            ma, mb = (float(np.mean([s["dims"][d] for d in DIMENSIONS])) for s in (sa, sb))
            decided = self.verdict(ma, mb)
            raw = "\n".join(f"{d}: {verdicts[d]} - {reasons[d]}" for d in DIMENSIONS) + (
                f"\noverall: {decided} - mean {ma:.4f} vs {mb:.4f} (tie margin {self.margin})"
                f"\nA: {self._describe(sa)}\nB: {self._describe(sb)}"
            )
            out.append(Pairwise(verdicts, reasons, raw, decided))
        return out


def _architectures(folder: Path) -> list[str]:
    cfg = folder / "config.json"
    return list(json.loads(cfg.read_text()).get("architectures") or []) if cfg.is_file() else []
