"""Wan 2.1 text-to-video (1.3B, 14B) through diffusers' ``WanPipeline``: flow matching on Wan-VAE latents.

Latents are ``[B, C, F', H', W']``, normalised per channel with the VAE's ``latents_mean``/``latents_std`` (the space
the transformer works in; ``decode`` undoes it as the pipeline does). Sampling is the checkpoint's own scheduler
(UniPC with flow sigmas and ``flow_shift`` in the Diffusers release).

Flow convention (rectified flow, as Wan trains): ``x_s = (1 - s) x0 + s noise`` with ``s`` in [0, 1] and transformer
timestep ``1000 s``; the model predicts the velocity ``noise - x0``. Training draws ``u`` uniformly and shifts it the
way the sampler does, ``s = shift u / (1 + (shift - 1) u)``, so training spends its steps where sampling does.

beta: the flow target ``noise - x0`` has about twice the per-element variance of an epsilon target, so the same
beta acts more strongly; Flow-DPO uses the Diffusion-DPO sigmoid form on these errors. Start at 500-2000 and watch
``implicit_acc`` / ``reward_margin`` in ``train_log.jsonl``; not yet measured on a real checkpoint here.
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers import WanPipeline

from .. import losses
from .pipeline import PipelineModel


class WanModel(PipelineModel):
    family = "wan"
    parameterization = "flow"
    pipeline_class = WanPipeline
    recommended = {"num_steps": 50, "guidance": 5.0, "fps": 16}
    max_tokens = 512

    def default_size(self):
        return 81, 480, 832  # WanPipeline's defaults (480p)

    def size_rules(self):
        p, cfg = self.pipe, self.pipe.transformer.config
        t, s = p.vae_scale_factor_temporal, p.vae_scale_factor_spatial
        pt, ph, pw = cfg.patch_size
        n = cfg.rope_max_seq_len  # rotary table length: positions per axis (frames, rows, columns of patches)
        why = f"VAE {t}x in time, {s}x in space, patch {pt}x{ph}x{pw}, rope_max_seq_len {n}"
        return t, s * ph, ((n * pt - 1) * t + 1, n * s * ph, n * s * pw), why

    @property
    def shift(self) -> float:
        cfg = self.pipe.scheduler.config
        return float(cfg.get("flow_shift") or cfg.get("shift") or 1.0)

    def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.vae.config
        mean = torch.tensor(cfg.latents_mean).view(1, -1, 1, 1, 1).to(like.device, like.dtype)
        std = torch.tensor(cfg.latents_std).view(1, -1, 1, 1, 1).to(like.device, like.dtype)
        return mean, std

    @torch.no_grad()
    def sample(self, cond, uncond, seeds, num_steps, guidance):
        emb = cond["prompt_embeds"]
        out = self.run_pipeline(
            prompt_embeds=emb,
            negative_prompt_embeds=uncond["prompt_embeds"].expand_as(emb),
            num_frames=self.frames,
            height=self.height,
            width=self.width,
            num_inference_steps=num_steps,
            guidance_scale=guidance,
            generator=self.generators(seeds),
        )
        return out.float().cpu()

    @torch.no_grad()
    def decode(self, latents):
        x = latents.to(self.device, self.vae.dtype)
        mean, _ = self._stats(x)
        # divided by 1/std, rounded to the VAE's dtype, exactly as WanPipeline does (bit-equal videos in bf16 too)
        inv = (1.0 / torch.tensor(self.vae.config.latents_std)).view(1, -1, 1, 1, 1).to(x.device, x.dtype)
        video = self.vae.decode(x / inv + mean, return_dict=False)[0]
        return self.to_uint8(self.pipe.video_processor.postprocess_video(video, output_type="np"))

    @torch.no_grad()
    def encode_video(self, frames: np.ndarray) -> torch.Tensor:
        z = self.vae.encode(self.pixels(frames)).latent_dist.mode().float()  # the mean: cached once, deterministic
        mean, std = self._stats(z)
        return ((z - mean) / std).float().cpu()

    def sample_timesteps(self, n, generator, window=None):
        """Transformer timesteps ``1000 s`` (float): shifted-uniform ``s``, or uniform ``s`` inside ``window``."""
        u = torch.rand(n, generator=generator)
        if window is not None and tuple(window) != (0.0, 1.0):
            return 1000 * (window[0] + (window[1] - window[0]) * u)
        return 1000 * self.shift * u / (1 + (self.shift - 1) * u)

    def predict_and_target(self, latents, cond, noise, timesteps):
        net = self.pipe.transformer
        t = timesteps.float().to(latents.device)
        s = (t / 1000).view(-1, *[1] * (latents.dim() - 1))
        noisy = (1 - s) * latents + s * noise
        dtype = self.net_dtype(net)
        pred = net(
            hidden_states=noisy.to(dtype),
            timestep=t,
            encoder_hidden_states=cond["prompt_embeds"].to(dtype),
            return_dict=False,
        )[0]
        return pred, losses.target("flow", latents, noise)
