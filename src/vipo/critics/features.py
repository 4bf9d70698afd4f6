"""VBench's dimensions that need model weights, measured with models from local paths (nothing is ever downloaded).

One :class:`FeatureModels` per omniscore critic or ``vipo eval DIR`` loads each model once and reuses it; frames go
through the models ``judge.feature_batch`` at a time on ``judge.device`` ('auto' = cuda when available, else cpu),
in float32. Frames are uint8 RGB ``[F, H, W, 3]`` as decoded. Each dimension follows VBench's definition:

- ``subject_consistency`` (``judge.dino``, a transformers DINO ViT folder such as a save of facebook/dino-vitb16):
  each frame's CLS feature (``last_hidden_state[:, 0]``, L2-normalized) after VBench's DINO transform (short side to
  the image processor's size, aspect kept, bilinear; the processor's mean and std). For frames i >= 1,
  ``s_i = (max(0, cos(f_i, f_{i-1})) + max(0, cos(f_i, f_0))) / 2``; the video's score is the mean of ``s_i``
  (:func:`vipo.critics.omniscore.feature_consistency`).
- ``background_consistency`` (``judge.clip``, a transformers CLIPModel folder; VBench uses CLIP ViT-B/32): the same
  formula on CLIP image embeddings (``get_image_features``, L2-normalized), frames resized as VBench's CLIP transform
  does (short side to the processor's size, bicubic, centre crop to its crop size, its mean and std).
- ``aesthetic_quality`` (``judge.aesthetic_head`` + ``judge.aesthetic_clip``, or ``judge.clip`` when that is empty;
  VBench uses CLIP ViT-L/14): the LAION aesthetic predictor (VBench's ``sa_0_4_vit_l_14_linear``, one 768 -> 1
  linear layer) on each frame's normalized CLIP image embedding, divided by 10, mean over frames. The predictor is a
  file: ``.safetensors`` with ``weight``/``bias``, or LAION's ``layers.N.weight``/``layers.N.bias`` (the improved
  predictor's linear layers, applied in order: it has no activations); ``.pth``/``.pt`` only with --allow-pickle.
- ``imaging_quality`` (``judge.musiq`` and the ``pyiqa`` package, not a vipo dependency; VBench uses pyiqa's MUSIQ
  with the SPAQ weights ``musiq_spaq_ckpt-358bb6af.pth``): MUSIQ's score of each frame, the frame first brought down
  so its long side is at most 512 (VBench's default 'longer' mode), values in [0, 1]; mean over frames / 100.
  VBench divides only its folder mean by 100 (its per-video values stay on MUSIQ's 0-100 scale); vipo divides both.
  Without pyiqa the dimension is skipped with a warning.
- ``overall_consistency_xclip`` (``judge.xclip``, a transformers XCLIPModel folder such as a save of
  microsoft/xclip-base-patch32): a stand-in, NOT VBench's overall consistency. VBench's is the cosine between
  ViCLIP's video and text embeddings over 8 frames; ViCLIP is not in transformers and vipo does not load it, so
  ``overall_consistency`` itself is always skipped. The stand-in is the cosine between X-CLIP's video embedding and
  its (video-conditioned) text embedding of the prompt, over the model's frame count (8 for xclip-base-patch32)
  sampled as VBench samples (the middle frame of equal segments), frames prepared like CLIP's. It keeps its own name
  everywhere and is normalized with ViCLIP's VBench constant (0, 0.364) for want of an X-CLIP one: comparable between
  videos scored the same way, not with published VBench numbers.
"""

from __future__ import annotations

import inspect
import logging
import re
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..device import resolve_device
from ..errors import UserError
from ..models import PICKLE_SUFFIXES, allow_pickle, check_weights

log = logging.getLogger(__name__)

#: judge option -> its ``vipo eval DIR`` flag
FLAGS = {
    "dino": "--dino",
    "clip": "--clip",
    "aesthetic_clip": "--aesthetic-clip",
    "aesthetic_head": "--aesthetic-head",
    "musiq": "--musiq",
    "xclip": "--xclip",
}
XCLIP_NOTE = (
    "X-CLIP video-text cosine standing in for VBench's ViCLIP overall consistency; normalized with ViCLIP's "
    "VBench constant (0, 0.364), so not comparable with published VBench numbers"
)
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
CLIP_STATS = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
MUSIQ_LONG_SIDE = 512


def middle_indices(length: int, count: int) -> list[int]:
    """VBench's 'middle' sampling: the middle frame of ``count`` equal segments, the last repeated when short."""
    n = min(count, length)
    edges = np.linspace(0, length, n + 1).astype(int)
    got = [int((edges[i] + edges[i + 1] - 1) // 2) for i in range(n)]
    return got + [got[-1]] * (count - n)


def _get(size, key: str):
    if size is None or isinstance(size, (int, float)):
        return int(size) if size is not None and key == "shortest_edge" else None
    return size.get(key) if isinstance(size, dict) else getattr(size, key, None)


def _stats(proc, default) -> tuple[torch.Tensor, torch.Tensor]:
    mean = getattr(proc, "image_mean", None) or default[0]
    std = getattr(proc, "image_std", None) or default[1]
    return torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), torch.tensor(std, dtype=torch.float32).view(
        1, 3, 1, 1
    )


def _short_side(proc, default: int = 224) -> int:
    size = getattr(proc, "size", None)
    if _get(size, "shortest_edge"):
        return int(_get(size, "shortest_edge"))
    h, w = _get(size, "height"), _get(size, "width")
    return int(min(h, w)) if h and w else default


def _resize_short(x: torch.Tensor, short: int, mode: str) -> torch.Tensor:
    """torchvision's ``Resize(short)`` on float frames: the short side to ``short``, the long side truncated."""
    h, w = x.shape[-2:]
    size = (short, int(short * w / h)) if h <= w else (int(short * h / w), short)
    if size == (h, w):
        return x
    return F.interpolate(x, size=size, mode=mode, align_corners=False, antialias=False)


def _center_crop(x: torch.Tensor, ch: int, cw: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    if h < ch or w < cw:
        x = F.pad(
            x,
            (
                max(0, (cw - w) // 2),
                max(0, cw - w - (cw - w) // 2),
                max(0, (ch - h) // 2),
                max(0, ch - h - (ch - h) // 2),
            ),
        )
        h, w = x.shape[-2:]
    top, left = int(round((h - ch) / 2.0)), int(round((w - cw) / 2.0))
    return x[..., top : top + ch, left : left + cw]


class ImagePrep:
    """A model's frame transform as VBench applies it, with the sizes and statistics of the folder's processor."""

    def __init__(self, proc, default_stats, mode: str, crop: bool):
        self.short = _short_side(proc)
        c = getattr(proc, "crop_size", None)
        self.crop = (int(_get(c, "height") or self.short), int(_get(c, "width") or self.short)) if crop else None
        self.mean, self.std = _stats(proc, default_stats)
        self.mode = mode

    def __call__(self, x: torch.Tensor) -> torch.Tensor:  # float [B, 3, H, W] in 0..255
        x = _resize_short(x, self.short, self.mode)
        if self.crop:
            x = _center_crop(x, *self.crop)
        return (x / 255.0 - self.mean.to(x.device)) / self.std.to(x.device)


class FeatureModels:
    """The weight-dependent dimensions a judge config's local paths allow; ``skipped`` says why the others are not
    measured. Construction checks every path and loads every model, so a bad path fails at start."""

    def __init__(self, cfg, device: str | None = None, where: str = "judge"):
        self.where = where
        self.batch = int(getattr(cfg, "feature_batch", 32))
        self.paths = {k: str(getattr(cfg, k, "") or "") for k in FLAGS}
        # the device matters only with a model to run (the weight-free dimensions are numpy)
        self.device = resolve_device(device or getattr(cfg, "device", "auto")) if any(self.paths.values()) else "cpu"
        self.measures: dict[str, Callable[[np.ndarray, str, dict], float]] = {}
        self.skipped: dict[str, str] = {}
        self.notes: dict[str, str] = {}
        self._clips: dict[str, tuple] = {}
        if self.paths["aesthetic_head"] and not (self.paths["aesthetic_clip"] or self.paths["clip"]):
            raise UserError(
                f"{self._name('aesthetic_head')} is given but neither {self._name('aesthetic_clip')} nor "
                f"{self._name('clip')}: the aesthetic predictor reads CLIP image embeddings (VBench: CLIP "
                "ViT-L/14)"
            )
        for f, v in self.paths.items():  # every path first, so a typo fails before any model loads
            if v and not Path(v).exists():
                raise UserError(f"{self._name(f)}: {v}: not found")
        if self.paths["aesthetic_clip"] and not self.paths["aesthetic_head"]:
            log.warning("%s is given without %s: not used", self._name("aesthetic_clip"), self._name("aesthetic_head"))
        self._setup_dino()
        self._setup_clip()
        self._setup_aesthetic()
        self._setup_musiq()
        self._setup_xclip()

    # -- loading ---------------------------------------------------------------------------------------------------

    def _name(self, field: str) -> str:
        return f"{self.where}.{field} ({FLAGS[field]})"

    def _folder(self, field: str) -> Path:
        path = Path(self.paths[field])
        if not path.is_dir():
            raise UserError(
                f"{self._name(field)}: {path}: not a folder (a transformers model saved with save_pretrained)"
            )
        check_weights(path)
        return path

    def _pretrained(self, field: str, cls_name: str):
        import transformers

        folder = self._folder(field)
        try:
            model = getattr(transformers, cls_name).from_pretrained(
                str(folder), local_files_only=True, use_safetensors=None if allow_pickle() else True
            )
            proc = transformers.AutoImageProcessor.from_pretrained(str(folder), local_files_only=True)
        except Exception as e:  # noqa: BLE001  (transformers raises many types for a wrong folder: one line)
            first = (str(e).strip().splitlines() or [""])[0][:300]
            raise UserError(
                f"{self._name(field)}: {folder}: cannot load it as a local transformers {cls_name} with "
                f"its image processor ({type(e).__name__}: {first})"
            ) from None
        return model.to(self.device).eval(), proc

    def _weights_file(self, field: str) -> dict[str, torch.Tensor]:
        path = Path(self.paths[field])
        if not path.is_file():
            raise UserError(f"{self._name(field)}: {path}: not a file")
        try:
            if path.suffix == ".safetensors":
                from safetensors.torch import load_file

                state = load_file(str(path))
            elif path.suffix in PICKLE_SUFFIXES:
                if not allow_pickle():
                    raise UserError(
                        f"{self._name(field)}: {path}: pickle-format weights can run arbitrary code when "
                        "loaded; convert them to safetensors, or pass --allow-pickle if you trust their "
                        "source"
                    )
                state = torch.load(str(path), map_location="cpu", weights_only=True)
            else:
                raise UserError(
                    f"{self._name(field)}: {path}: expected a .safetensors file (or, with --allow-pickle, .pth/.pt)"
                )
        except UserError:
            raise
        except Exception as e:  # noqa: BLE001
            raise UserError(f"{self._name(field)}: {path}: unreadable weights ({type(e).__name__}: {e})") from None
        for key in ("params", "state_dict", "model"):
            if isinstance(state, dict) and isinstance(state.get(key), dict):
                state = state[key]
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise UserError(f"{self._name(field)}: {path}: not a mapping of tensor names to tensors")
        return {k.removeprefix("module."): v for k, v in state.items()}

    def _batched(self, frames: np.ndarray, prep: Callable, encode: Callable) -> torch.Tensor:
        out = []
        for i in range(0, len(frames), self.batch):
            x = torch.from_numpy(np.ascontiguousarray(frames[i : i + self.batch])).to(self.device)
            out.append(encode(prep(x.permute(0, 3, 1, 2).float())).float())
        return torch.cat(out)

    # -- DINO: subject consistency ---------------------------------------------------------------------------------

    def _setup_dino(self) -> None:
        if not self.paths["dino"]:
            self.skipped["subject_consistency"] = f"needs {self._name('dino')}: a DINO ViT folder"
            return
        model, proc = self._pretrained("dino", "AutoModel")
        prep = ImagePrep(proc, IMAGENET, "bilinear", crop=False)
        kw = (
            {"interpolate_pos_encoding": True}
            if "interpolate_pos_encoding" in inspect.signature(model.forward).parameters
            else {}
        )

        @torch.no_grad()
        def measure(frames: np.ndarray, prompt: str, memo: dict) -> float:
            from .omniscore import feature_consistency

            feats = self._batched(frames, prep, lambda x: model(pixel_values=x, **kw).last_hidden_state[:, 0])
            return feature_consistency(feats.cpu().double().numpy())

        self.measures["subject_consistency"] = measure

    # -- CLIP: background consistency and aesthetic quality --------------------------------------------------------

    def _clip(self, field: str) -> tuple:
        key = str(Path(self.paths[field]).resolve())
        if key not in self._clips:
            model, proc = self._pretrained(field, "CLIPModel")
            self._clips[key] = (key, model, ImagePrep(proc, CLIP_STATS, "bicubic", crop=True))
        return self._clips[key]

    def clip_embeddings(self, clip: tuple, frames: np.ndarray, memo: dict) -> torch.Tensor:
        """Normalized CLIP image embeddings of every frame (computed once per video and CLIP model)."""
        key, model, prep = clip
        if key not in memo:

            def encode(x):
                out = model.get_image_features(pixel_values=x)
                return out if isinstance(out, torch.Tensor) else out.pooler_output

            with torch.no_grad():
                memo[key] = F.normalize(self._batched(frames, prep, encode), dim=-1)
        return memo[key]

    def _setup_clip(self) -> None:
        if not self.paths["clip"]:
            self.skipped["background_consistency"] = f"needs {self._name('clip')}: a CLIPModel folder"
            return
        clip = self._clip("clip")

        def measure(frames: np.ndarray, prompt: str, memo: dict) -> float:
            from .omniscore import feature_consistency

            return feature_consistency(self.clip_embeddings(clip, frames, memo).cpu().double().numpy())

        self.measures["background_consistency"] = measure

    def _setup_aesthetic(self) -> None:
        if not self.paths["aesthetic_head"]:
            self.skipped["aesthetic_quality"] = (
                f"needs {self._name('aesthetic_head')}: the LAION aesthetic predictor, with a CLIP ViT-L/14 folder"
            )
            return
        layers = aesthetic_layers(self._weights_file("aesthetic_head"), self._name("aesthetic_head"))
        field = "aesthetic_clip" if self.paths["aesthetic_clip"] else "clip"
        clip = self._clip(field)
        dim = getattr(clip[1].config, "projection_dim", None)
        if dim is not None and layers[0][0].shape[1] != dim:
            raise UserError(
                f"{self._name('aesthetic_head')} reads {layers[0][0].shape[1]}-d embeddings but "
                f"{self._name(field)} gives {dim}-d ones (VBench's predictor needs CLIP ViT-L/14: 768)"
            )
        layers = [(w.float().to(self.device), b.float().to(self.device)) for w, b in layers]

        def measure(frames: np.ndarray, prompt: str, memo: dict) -> float:
            return float(aesthetic_scores(self.clip_embeddings(clip, frames, memo), layers).mean() / 10)

        self.measures["aesthetic_quality"] = measure

    # -- MUSIQ (pyiqa): imaging quality ----------------------------------------------------------------------------

    def _setup_musiq(self) -> None:
        if not self.paths["musiq"]:
            self.skipped["imaging_quality"] = f"needs {self._name('musiq')}: MUSIQ weights, and the pyiqa package"
            return
        try:
            from pyiqa.archs.musiq_arch import MUSIQ
        except ImportError:
            self.skipped["imaging_quality"] = "needs the pyiqa package (pip install pyiqa), which is not installed"
            return
        state = self._weights_file("musiq")
        net = MUSIQ(pretrained=False)  # never fetch: the weights come from judge.musiq
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as e:
            first = (str(e).strip().splitlines() or [""])[0][:300]
            raise UserError(
                f"{self._name('musiq')}: {self.paths['musiq']}: not MUSIQ weights pyiqa's default "
                f"MUSIQ (one output, as SPAQ's) takes ({first})"
            ) from None
        net = net.to(self.device).eval()

        @torch.no_grad()
        def measure(frames: np.ndarray, prompt: str, memo: dict) -> float:
            def prep(x):
                h, w = x.shape[-2:]
                if max(h, w) > MUSIQ_LONG_SIDE:
                    s = MUSIQ_LONG_SIDE / max(h, w)
                    x = F.interpolate(
                        x, size=(int(s * h), int(s * w)), mode="bilinear", align_corners=False, antialias=True
                    )
                return x / 255.0

            return float(self._batched(frames, prep, lambda x: net(x).reshape(len(x))).mean() / 100)

        self.measures["imaging_quality"] = measure

    # -- X-CLIP: the overall-consistency stand-in ------------------------------------------------------------------

    def _setup_xclip(self) -> None:
        if not self.paths["xclip"]:
            self.skipped["overall_consistency"] = (
                f"needs ViCLIP, which vipo does not load ({self._name('xclip')} "
                "adds the X-CLIP stand-in overall_consistency_xclip)"
            )
            return
        self.skipped["overall_consistency"] = (
            "needs ViCLIP, which vipo does not load; the X-CLIP stand-in overall_consistency_xclip is measured instead"
        )
        from transformers import AutoTokenizer

        model, proc = self._pretrained("xclip", "XCLIPModel")
        try:
            tok = AutoTokenizer.from_pretrained(self.paths["xclip"], local_files_only=True)
        except Exception as e:  # noqa: BLE001
            raise UserError(
                f"{self._name('xclip')}: {self.paths['xclip']}: no usable tokenizer ({type(e).__name__})"
            ) from None
        prep = ImagePrep(proc, CLIP_STATS, "bicubic", crop=True)
        count = int(getattr(model.config.vision_config, "num_frames", 8))
        longest = int(getattr(model.config.text_config, "max_position_embeddings", 77))
        self.notes["overall_consistency_xclip"] = XCLIP_NOTE

        @torch.no_grad()
        def measure(frames: np.ndarray, prompt: str, memo: dict) -> float:
            picked = frames[middle_indices(len(frames), count)]
            x = prep(torch.from_numpy(np.ascontiguousarray(picked)).to(self.device).permute(0, 3, 1, 2).float())
            text = tok([prompt], padding=True, truncation=True, max_length=longest, return_tensors="pt")
            out = model(
                input_ids=text["input_ids"].to(self.device),
                pixel_values=x[None],
                attention_mask=text["attention_mask"].to(self.device),
            )
            video = F.normalize(out.video_embeds.float(), dim=-1)  # [1, D]
            words = F.normalize(out.text_embeds.float(), dim=-1)  # [1, 1, D]: conditioned on the video
            return float((video[:, None] * words).sum(-1)[0, 0])

        self.measures["overall_consistency_xclip"] = measure

    # -- use -------------------------------------------------------------------------------------------------------

    def measure(self, frames: np.ndarray, prompt: str, only=None) -> dict[str, float]:
        memo: dict = {}
        return {k: fn(frames, prompt, memo) for k, fn in self.measures.items() if only is None or k in only}


def aesthetic_layers(state: dict[str, torch.Tensor], name: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The predictor's linear layers, in order: one ``weight``/``bias`` pair, or LAION's ``layers.N.*`` (the
    improved predictor's linear layers; its dropouts do nothing at inference and it has no activations)."""
    if set(state) == {"weight", "bias"}:
        layers = [(state["weight"], state["bias"])]
    else:
        found: dict[int, dict[str, torch.Tensor]] = {}
        for k, v in state.items():
            m = re.fullmatch(r"(?:.*\.)?layers\.(\d+)\.(weight|bias)", k)
            if not m:
                raise UserError(
                    f"{name}: unexpected key {k!r}: expected weight and bias of one linear layer, or "
                    "LAION's layers.N.weight / layers.N.bias"
                )
            found.setdefault(int(m.group(1)), {})[m.group(2)] = v
        if not found or any(set(p) != {"weight", "bias"} for p in found.values()):
            raise UserError(f"{name}: every layer needs a weight and a bias")
        layers = [(found[i]["weight"], found[i]["bias"]) for i in sorted(found)]
    for i, (w, b) in enumerate(layers):
        if w.ndim != 2 or b.shape != (w.shape[0],) or (i and w.shape[1] != layers[i - 1][0].shape[0]):
            raise UserError(f"{name}: layer {i} has shapes {tuple(w.shape)} / {tuple(b.shape)}, which do not chain")
    if layers[-1][0].shape[0] != 1:
        raise UserError(f"{name}: the last layer gives {layers[-1][0].shape[0]} outputs, not one score")
    return layers


def aesthetic_scores(embeddings: torch.Tensor, layers) -> torch.Tensor:
    """The predictor's score (LAION's 1-10 scale) of each normalized embedding."""
    x = embeddings.float()
    for w, b in layers:
        x = x @ w.to(x).T + b.to(x)
    return x[:, 0]
