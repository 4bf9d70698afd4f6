"""The narrow model interface every family implements (world, CogVideoX, Wan, LTX).

The loop only ever talks to a model through these methods, so a family is one self-contained file. Latents are the
family's own training space (pixels for the world model, VAE latents for real families); samplers return them so
training never re-encodes generated videos. Training returns (prediction, target) in the family's
parameterization; the trainer turns them into per-sample errors and the losses only ever see those errors.
"""

from __future__ import annotations

import abc
import contextlib
from pathlib import Path

import numpy as np
import torch

from ..losses import PARAMETERIZATIONS, per_sample_error  # noqa: F401  (one implementation, re-exported)


class VideoModel(abc.ABC):
    family: str
    parameterization: str
    #: module names LoRA targets by default (peft ``target_modules``)
    lora_targets: tuple[str, ...]
    #: key prefix of saved LoRA weights: the denoiser's component name in its diffusers pipeline ("transformer"), so
    #: ``Pipeline.load_lora_weights`` finds them; None for a bare denoiser with no pipeline (the world's)
    lora_prefix: str | None = None
    #: whether the loop caches this family's text conditioning on disk (computed once per prompt; training never
    #: runs the text encoder). Off by default: the embedded world's encoder is tiny and it keeps computing it in the
    #: train stage, as its committed results did.
    cache_text: bool = False
    #: ``model_dtype`` names the family can load its weights in
    dtypes: tuple[str, ...] = ("float32",)
    #: the dtype its frozen weights were loaded in (``model_dtype``); trainable weights are float32 whatever it is
    dtype: torch.dtype = torch.float32
    #: the diffusers model folder the denoiser's weights were loaded from, where there is one: a full fine-tune of a
    #: low-precision model reads its float32 master weights there (``train.lora.master_denoiser``)
    denoiser_source: Path | None = None
    #: the text encoder's tokenizer (what decides how much of a prompt the model reads), where the family has one
    tokenizer = None

    @classmethod
    @abc.abstractmethod
    def load(cls, path: str | Path, device: str = "cpu", dtype: torch.dtype = torch.float32) -> "VideoModel":
        """Load from a diffusers-style folder, weights in ``dtype`` (one of ``dtypes``)."""

    @property
    @abc.abstractmethod
    def denoiser(self) -> torch.nn.Module:
        """The network that is trained (LoRA attaches here)."""

    @property
    @abc.abstractmethod
    def train_timesteps(self) -> int:
        """T, the number of discrete timesteps of the family's training schedule: the factor of Diffusion-DPO's
        likelihood surrogate ``-T * error`` that puts the NLL regularizers in the preference term's units
        (``losses.nll_scale``)."""

    @abc.abstractmethod
    def encode_prompts(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        """Text conditioning for a batch, as a dict of tensors with a leading batch dimension (cacheable per row)."""

    @abc.abstractmethod
    def sample(
        self,
        cond: dict[str, torch.Tensor],
        uncond: dict[str, torch.Tensor],
        seeds: list[int],
        num_steps: int,
        guidance: float,
    ) -> torch.Tensor:
        """Run the sampler with classifier-free guidance; return final latents [B, ...] (float32, CPU)."""

    @abc.abstractmethod
    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """Latents -> uint8 frames [B, F, H, W, 3]."""

    @abc.abstractmethod
    def encode_video(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 frames [B, F, H, W, 3] -> latents (used once per real video, then cached)."""

    @abc.abstractmethod
    def sample_timesteps(
        self, n: int, generator: torch.Generator, window: tuple[float, float] | None = None
    ) -> torch.Tensor:
        """Training timesteps for ``n`` items, drawn the way the family trains; with ``window = (low, high)``,
        uniformly from that fraction of the noise schedule instead (0 = clean, 1 = pure noise)."""

    @abc.abstractmethod
    def predict_and_target(
        self, latents: torch.Tensor, cond: dict[str, torch.Tensor], noise: torch.Tensor, timesteps: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Noise ``latents`` at ``timesteps`` and return (model prediction, regression target)."""

    @abc.abstractmethod
    def save(self, path: str | Path) -> None:
        """Write the whole model as a diffusers-style folder."""

    def clip_size(self) -> tuple[int, int, int]:
        """(frames, height, width) of the clips the model samples and encodes now."""
        return self.frames, self.height, self.width  # type: ignore[attr-defined]

    def set_size(self, frames: int = 0, height: int = 0, width: int = 0, where: str = "generate") -> None:
        """Sample and encode clips of this size from now on (0 keeps a dimension as it is). A family whose network
        is built for one size (the embedded world) refuses any other with one line naming ``where``'s fields."""
        now = self.clip_size()
        for name, want, have in zip(("frames", "height", "width"), (frames, height, width), now):
            if want and want != have:
                from ..errors import UserError

                raise UserError(
                    f"{where}.{name}={want}: the {self.family} model's clips are always "
                    f"{' x '.join(map(str, now))} (frames x height x width); leave {where}.{name} at 0"
                )

    # -- optional hooks (the defaults suit a model with no separate frozen encoders) ---------------------------------
    def cache_key(self, part: str) -> str:
        """Fingerprint of what a cache of ``part`` ('text': conditioning, 'vae': real-video latents) depends on."""
        raise ValueError(f"the {self.family} family caches no {part}")

    def encoders_to(self, device: str) -> None:
        """Move the frozen text encoder and VAE (not the denoiser) to ``device``: off the accelerator for training."""

    def vae_memory(self, tiling: bool = False, slicing: bool = False) -> None:
        """Decode in tiles / one video at a time, where the family's VAE supports it."""

    @contextlib.contextmanager
    def pinned(self):
        """A stretch (a training round) in which the denoisers' dtypes and the clip's shape stay fixed, so whatever a
        forward pass derives from them (a diffusers model's ``dtype``, which walks every submodule; rotary tables) is
        resolved once and reused. Nothing to pin by default."""
        yield

    def denoiser_slot(self) -> tuple[object, str]:
        """(owner, attribute) holding the denoiser: a full fine-tune's checkpoint loads there and its frozen
        reference is swapped in there."""
        net = self.denoiser
        for owner in (self, getattr(self, "pipe", None)):
            for name, value in vars(owner).items() if owner is not None else ():
                if value is net:
                    return owner, name
        raise RuntimeError(f"{type(self).__name__}: cannot find its denoiser's attribute")
