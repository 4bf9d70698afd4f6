"""LTX-Video through diffusers' ``LTXPipeline``: flow matching on LTX-VAE latents, with a text attention mask.

Latents are kept unpacked, ``[B, C, F', H', W']``, normalised as the pipeline normalises them
(``(z - mean) * scaling_factor / std``); the transformer sees them packed into tokens, and ``predict_and_target``
packs and unpacks around it, so the loss is the same either way. The prompt's attention mask travels with its
embeddings (``prompt_attention_mask``), as the pipeline passes it.

Flow convention: ``x_s = (1 - s) x0 + s noise``, transformer timestep ``1000 s``, velocity target ``noise - x0``.
The sampler shifts its sigmas by ``exp(mu)`` with ``mu`` growing with the clip's token count (``calculate_shift``);
training draws ``s`` from a logit-normal (as LTX-Video's trainer does) under the same shift for the clip size.

Decoding uses the pipeline's default ``decode_timestep = 0`` (no decode noise); checkpoints from 0.9.1 on are often
sampled with 0.05, which this family does not set. RoPE is scaled by ``frame_rate`` (default 25, the pipeline's).
beta: as for Wan (flow-matching errors), start at 500-2000; not yet measured on a real checkpoint here.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from diffusers import LTXPipeline
from diffusers.pipelines.ltx.pipeline_ltx import calculate_shift

from .. import losses
from .pipeline import PipelineModel


class LTXModel(PipelineModel):
    family = "ltx"
    parameterization = "flow"
    pipeline_class = LTXPipeline
    recommended = {"num_steps": 50, "guidance": 3.0, "fps": 25}
    max_tokens = 128
    frame_rate = 25

    def default_size(self):
        return 161, 512, 704  # LTXPipeline's defaults

    def size_rules(self):
        p = self.pipe
        t, s = p.vae_temporal_compression_ratio, p.vae_spatial_compression_ratio
        pt, ps = p.transformer_temporal_patch_size, p.transformer_spatial_patch_size
        # rotary positions are computed from the latent grid's coordinates: no table, no size limit; LTXPipeline
        # itself refuses sides that are not multiples of 32, whatever its VAE
        return (
            t * pt,
            math.lcm(32, s * ps),
            (None, None, None),
            (f"VAE {t}x in time, {s}x in space, patch {pt}x{ps}x{ps}; LTXPipeline takes multiples of 32"),
        )

    def _latent_size(self, frames: int, height: int, width: int) -> tuple[int, int, int]:
        p = self.pipe
        return (
            (frames - 1) // p.vae_temporal_compression_ratio + 1,
            height // p.vae_spatial_compression_ratio,
            width // p.vae_spatial_compression_ratio,
        )

    @property
    def shift(self) -> float:
        cfg = self.pipe.scheduler.config
        if not cfg.get("use_dynamic_shifting"):
            return float(cfg.get("shift", 1.0))
        f, h, w = self._latent_size(self.frames, self.height, self.width)
        return math.exp(
            calculate_shift(
                f * h * w,
                cfg.get("base_image_seq_len", 256),
                cfg.get("max_image_seq_len", 4096),
                cfg.get("base_shift", 0.5),
                cfg.get("max_shift", 1.15),
            )
        )

    def encode_prompts(self, prompts):
        emb, mask, _, _ = self.pipe.encode_prompt(
            list(prompts), do_classifier_free_guidance=False, max_sequence_length=self.max_tokens, device=self.device
        )
        return {"prompt_embeds": emb, "prompt_attention_mask": mask}

    @torch.no_grad()
    def sample(self, cond, uncond, seeds, num_steps, guidance):
        emb, mask = cond["prompt_embeds"], cond["prompt_attention_mask"]
        out = self.run_pipeline(
            prompt_embeds=emb,
            prompt_attention_mask=mask,
            negative_prompt_embeds=uncond["prompt_embeds"].expand_as(emb),
            negative_prompt_attention_mask=uncond["prompt_attention_mask"].expand_as(mask),
            num_frames=self.frames,
            height=self.height,
            width=self.width,
            frame_rate=self.frame_rate,
            num_inference_steps=num_steps,
            guidance_scale=guidance,
            generator=self.generators(seeds),
        )
        f, h, w = self._latent_size(self.frames, self.height, self.width)
        return self._unpack(out, f, h, w).float().cpu()

    def _pack(self, x: torch.Tensor) -> torch.Tensor:
        return self.pipe._pack_latents(
            x, self.pipe.transformer_spatial_patch_size, self.pipe.transformer_temporal_patch_size
        )

    def _unpack(self, x: torch.Tensor, f: int, h: int, w: int) -> torch.Tensor:
        p = self.pipe
        return p._unpack_latents(
            x,
            f // p.transformer_temporal_patch_size,
            h // p.transformer_spatial_patch_size,
            w // p.transformer_spatial_patch_size,
            p.transformer_spatial_patch_size,
            p.transformer_temporal_patch_size,
        )

    @torch.no_grad()
    def decode(self, latents):
        vae = self.vae
        x = self.pipe._denormalize_latents(
            latents.to(self.device, vae.dtype), vae.latents_mean, vae.latents_std, vae.config.scaling_factor
        )
        timestep = torch.zeros(len(x), device=x.device, dtype=x.dtype) if vae.config.timestep_conditioning else None
        video = vae.decode(x, timestep, return_dict=False)[0]
        return self.to_uint8(self.pipe.video_processor.postprocess_video(video, output_type="np"))

    @torch.no_grad()
    def encode_video(self, frames: np.ndarray) -> torch.Tensor:
        vae = self.vae
        z = vae.encode(self.pixels(frames)).latent_dist.mode().float()  # the mean: cached once, deterministic
        z = self.pipe._normalize_latents(z, vae.latents_mean, vae.latents_std, vae.config.scaling_factor)
        return z.float().cpu()

    def sample_timesteps(self, n, generator, window=None):
        """Transformer timesteps ``1000 s`` (float): shifted logit-normal ``s``, or uniform ``s`` inside ``window``."""
        if window is not None and tuple(window) != (0.0, 1.0):
            return 1000 * (window[0] + (window[1] - window[0]) * torch.rand(n, generator=generator))
        u = torch.sigmoid(torch.randn(n, generator=generator))
        return 1000 * self.shift * u / (1 + (self.shift - 1) * u)

    def predict_and_target(self, latents, cond, noise, timesteps):
        net, p = self.pipe.transformer, self.pipe
        t = timesteps.float().to(latents.device)
        s = (t / 1000).view(-1, *[1] * (latents.dim() - 1))
        noisy = (1 - s) * latents + s * noise
        f, h, w = latents.shape[2:]
        scale = (
            p.vae_temporal_compression_ratio / self.frame_rate,
            p.vae_spatial_compression_ratio,
            p.vae_spatial_compression_ratio,
        )
        dtype = self.net_dtype(net)
        pred = net(
            hidden_states=self._pack(noisy).to(dtype),
            encoder_hidden_states=cond["prompt_embeds"].to(dtype),
            timestep=t,
            encoder_attention_mask=cond["prompt_attention_mask"],
            num_frames=f,
            height=h,
            width=w,
            rope_interpolation_scale=scale,
            return_dict=False,
        )[0]
        return self._unpack(pred, f, h, w), losses.target("flow", latents, noise)
