"""What the real families (CogVideoX, Wan, LTX) share: a diffusers pipeline held whole, and its clip size.

Sampling goes through the family's own diffusers pipeline (``output_type="latent"``, one CPU generator per video), so
a video sampled here is exactly the one ``Pipeline.from_pretrained(base).load_lora_weights(adapter)`` gives for the
same seed. The pipeline's transformer is the denoiser LoRA attaches to; adapters are saved under the pipeline's
``transformer.`` key prefix (``lora_prefix``), the layout ``load_lora_weights`` reads.

Weights load in the run's ``model_dtype`` (diffusers' ``dtype``, formerly ``torch_dtype``): the pipeline then runs in
it, as ``Pipeline.from_pretrained(base, dtype=...)`` does; latents come back float32 whatever the dtype.

Clip size (frames, height, width) is not part of a diffusers folder: a folder may carry a ``vipo.json`` with it
(``save`` writes one); otherwise each family uses its published size. A run sets it (``generate.frames/height/width``,
``eval.*``) through :meth:`PipelineModel.set_size`, which checks it against what the family takes before anything
runs: frames ``t k + 1`` for a VAE that compresses time ``t``-fold (its first frame is encoded alone), height and
width multiples of the VAE's spatial factor times the transformer's patch, and the transformer's positional limits
(:meth:`PipelineModel.size_rules`); a size outside them is one line naming the nearest sizes that fit.
"""

from __future__ import annotations

import abc
import contextlib
import json
from pathlib import Path

import numpy as np
import torch

from .base import VideoModel

OPTIONS_FILE = "vipo.json"


def dtype_kwargs(dtype: torch.dtype) -> dict:
    """``from_pretrained``'s dtype argument: ``dtype`` where diffusers has it (it deprecated ``torch_dtype`` for it),
    else ``torch_dtype``."""
    from diffusers.utils import deprecation_utils

    return {"dtype" if hasattr(deprecation_utils, "_resolve_dtype") else "torch_dtype": dtype}


def read_options(path: str | Path) -> dict:
    file = Path(path) / OPTIONS_FILE
    return json.loads(file.read_text()) if file.is_file() else {}


class PipelineModel(VideoModel):
    pipeline_class: type
    lora_prefix = "transformer"
    lora_targets = ("to_q", "to_k", "to_v", "to_out.0")
    cache_text = True
    dtypes = ("float32", "bfloat16", "float16")
    #: sampler settings the family is meant to run with (the run config's generate/eval sections set them)
    recommended: dict = {}

    @property
    def tokenizer(self):
        return self.pipe.tokenizer

    def __init__(
        self,
        pipe,
        device: str = "cpu",
        frames: int | None = None,
        height: int | None = None,
        width: int | None = None,
        dtype: torch.dtype | None = None,
    ):
        self.pipe = pipe.to(device)
        self.pipe.set_progress_bar_config(disable=True)
        self.device, self.dtype = device, dtype or pipe.transformer.dtype  # (the dtype it was loaded in)
        default = self.default_size()
        self.frames, self.height, self.width = frames or default[0], height or default[1], width or default[2]

    #: what :meth:`pinned` resolved once (None outside it)
    _pins: dict | None = None

    @contextlib.contextmanager
    def pinned(self):
        self._pins = {}
        try:
            yield
        finally:
            self._pins = None

    def pin(self, key, make):
        """``make()``, computed once per :meth:`pinned` stretch for ``key`` (every time outside one)."""
        if self._pins is None:
            return make()
        if key not in self._pins:
            self._pins[key] = make()
        return self._pins[key]

    def net_dtype(self, net: torch.nn.Module) -> torch.dtype:
        """``net.dtype`` (diffusers walks every submodule for it), pinned per denoiser object: the policy and a full
        fine-tune's frozen reference are two."""
        return self.pin(("dtype", net), lambda: net.dtype)  # (the module itself: its id could be reused)

    @abc.abstractmethod
    def default_size(self) -> tuple[int, int, int]:
        """(frames, height, width) of the pipeline's own defaults."""

    @abc.abstractmethod
    def size_rules(self) -> tuple[int, int, tuple[int | None, int | None, int | None], str]:
        """(frame step ``t``: frames are ``t k + 1``; spatial multiple for height and width; the most (frames,
        height, width) the transformer's positional embeddings take, None where unlimited; why those numbers)."""

    def set_size(self, frames: int = 0, height: int = 0, width: int = 0, where: str = "generate") -> None:
        """Sample and encode clips of this size from now on (0 keeps a dimension as it is, at first the folder's or
        the family's default), after checking it: one line naming ``where``'s fields and the nearest sizes that fit."""
        want = tuple(w or h for w, h in zip((frames, height, width), self.clip_size()))
        step, mult, most, why = self.size_rules()
        problems = []
        for name, value, asked, top in zip(("frames", "height", "width"), want, (frames, height, width), most):
            unit, base = (step, 1) if name == "frames" else (mult, 0)
            fits = (value - base) % unit == 0 and value >= unit + base
            if fits and (top is None or value <= top):
                continue
            below = max(unit + base, (value - base) // unit * unit + base)
            near = [below] + ([below + unit] if below < value else [])
            if top is not None:
                near = [n for n in near if n <= top] or [(top - base) // unit * unit + base]
            what = (
                f"not {step}k+1"
                if name == "frames" and not fits
                else f"not a multiple of {mult}"
                if not fits
                else f"above {top}"
            )
            problems.append(
                f"{where}.{name}={value}{'' if asked else ' (the default)'}: {what} (nearest: "
                f"{' or '.join(map(str, near))})"
            )
        if problems:
            from ..errors import UserError

            limits = "".join(f", at most {t} {n}" for n, t in zip(("frames", "high", "wide"), most) if t)
            raise UserError(
                f"{'; '.join(problems)}. The {self.family} model takes {step}k+1 frames and sides in "
                f"multiples of {mult}{limits} ({why})"
            )
        self.frames, self.height, self.width = want

    def encode_prompts(self, prompts):
        """The pipeline's own prompt encoder, without its CFG half (the empty prompt is encoded as a prompt)."""
        emb, _ = self.pipe.encode_prompt(
            list(prompts), do_classifier_free_guidance=False, max_sequence_length=self.max_tokens, device=self.device
        )
        return {"prompt_embeds": emb}

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu", dtype: torch.dtype = torch.float32) -> "PipelineModel":
        # float32 loads exactly as before the option existed (no dtype argument)
        kwargs = dtype_kwargs(dtype) if dtype != torch.float32 else {}
        model = cls(
            cls.pipeline_class.from_pretrained(str(path), **kwargs), device=device, dtype=dtype, **read_options(path)
        )
        model.denoiser_source = Path(path) / "transformer"
        return model

    def run_pipeline(self, **kwargs) -> torch.Tensor:
        """The pipeline's final latents for ``kwargs``, prompt embeddings cast to the transformer's dtype (the one the
        pipelines sample in; it differs from the text encoder's only while a full fine-tune holds float32 weights)."""
        net = self.pipe.transformer
        kwargs = {k: v.to(net.dtype) if k.endswith("_embeds") else v for k, v in kwargs.items()}
        return self.pipe(**kwargs, output_type="latent", return_dict=False)[0]

    def save(self, path: str | Path) -> None:
        path = Path(path)
        self.pipe.save_pretrained(str(path))
        (path / OPTIONS_FILE).write_text(
            json.dumps({"frames": self.frames, "height": self.height, "width": self.width}) + "\n"
        )

    @property
    def denoiser(self) -> torch.nn.Module:
        return self.pipe.transformer

    @property
    def vae(self):
        return self.pipe.vae

    @property
    def train_timesteps(self) -> int:
        return int(self.pipe.scheduler.config.num_train_timesteps)

    def cache_key(self, part: str) -> str:
        from ..data.cache import fingerprint

        if part == "text":
            return fingerprint(self.pipe.text_encoder, self.family, self.max_tokens)
        return fingerprint(self.vae, self.family, self.frames, self.height, self.width)

    def encoders_to(self, device: str) -> None:
        self.pipe.text_encoder.to(device)
        self.vae.to(device)
        if str(device) == "cpu" and torch.cuda.is_available():
            torch.cuda.empty_cache()

    def vae_memory(self, tiling: bool = False, slicing: bool = False) -> None:
        if tiling and hasattr(self.vae, "enable_tiling"):
            self.vae.enable_tiling()
        if slicing and hasattr(self.vae, "enable_slicing"):
            self.vae.enable_slicing()

    def denoiser_slot(self) -> tuple[object, str]:
        return self.pipe, "transformer"

    @staticmethod
    def generators(seeds: list[int]) -> list[torch.Generator]:
        # CPU generators, one per video: the same seed gives the same video alone, in any batch, on any device
        return [torch.Generator().manual_seed(int(s)) for s in seeds]

    @staticmethod
    def to_uint8(video: np.ndarray) -> np.ndarray:
        """The pipelines' ``output_type="np"`` frames (float in [0, 1]) -> uint8."""
        return (np.clip(video, 0.0, 1.0) * 255).round().astype(np.uint8)

    def pixels(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 [B, F, H, W, 3] -> the VAE's input [B, 3, F, H, W] in [-1, 1]."""
        x = torch.from_numpy(np.ascontiguousarray(frames)).float() / 127.5 - 1
        return x.permute(0, 4, 1, 2, 3).to(self.device, self.vae.dtype)
