"""CogVideoX (2B, 5B, 1.5) through diffusers' ``CogVideoXPipeline``: v-prediction DDPM on 3D-VAE latents.

Sampling matches IPO's inference: ``CogVideoXDPMScheduler`` with trailing timestep spacing (swapped in at load, as
IPO does on top of the checkpoint's DDIM config; the noise schedule is the same), dynamic CFG, and the recommended
settings in :attr:`CogVideoXModel.recommended` (50 steps, guidance 6, fps 8; 49 frames is the checkpoint default).

Latents are the pipeline's: ``[B, F', C, H', W']`` (frames before channels), already times the VAE scaling factor.
Training noises them with the scheduler's ``add_noise`` at integer timesteps drawn uniformly (CogVideoX's own
training density) and regresses on the scheduler's velocity, ``alpha_t * noise - sigma_t * x0``; the plain MSE on v
equals the SNR-weighted x0 loss of diffusers' CogVideoX fine-tuning script. Rotary position embeddings are built
exactly as the pipeline builds them whenever the transformer's config uses them (5B, 1.5).

beta: the errors the losses see are per-element means, as in the Diffusion-DPO reference code (beta 5000 for SD 1.5
at that scale), so start at 2500-5000 and watch ``implicit_acc`` and ``reward_margin`` in ``train_log.jsonl``: an
accuracy pinned at 1 from the first steps means beta is too large. Not yet measured on a real checkpoint here.
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers import CogVideoXDPMScheduler, CogVideoXPipeline

from .pipeline import PipelineModel


class CogVideoXModel(PipelineModel):
    family = "cogvideox"
    parameterization = "v_prediction"
    pipeline_class = CogVideoXPipeline
    recommended = {"num_steps": 50, "guidance": 6.0, "fps": 8}
    dynamic_cfg = True

    def __init__(self, pipe, device: str = "cpu", **size):
        # IPO samples with DPM-Solver and trailing spacing; training reads alphas_cumprod, identical in both.
        pipe.scheduler = CogVideoXDPMScheduler.from_config(pipe.scheduler.config, timestep_spacing="trailing")
        super().__init__(pipe, device, **size)

    def default_size(self):
        cfg, s = self.pipe.transformer.config, self.pipe.vae_scale_factor_spatial
        if cfg.patch_size_t:  # 1.5: its sample size is the rotary table's extent, not the published 81 x 768 x 1360
            return 81, min(768, cfg.sample_height * s), min(1360, cfg.sample_width * s)
        return cfg.sample_frames, cfg.sample_height * s, cfg.sample_width * s

    def size_rules(self):
        cfg, p = self.pipe.transformer.config, self.pipe
        t, s = p.vae_scale_factor_temporal, p.vae_scale_factor_spatial
        # the VAE decodes latent frames in pairs after the first: an even latent count decodes to 8k frames, not the
        # 8k - 3 asked for (measured: 5 frames come back as 8, 13 as 16), so frames are 2t k + 1 (49, 81, 161)
        why = f"VAE {t}x in time decoding an odd number of latent frames, {s}x in space, patch {cfg.patch_size}"
        if not cfg.patch_size_t:  # 1.0: sin-cos or rotary embeddings computed for any size
            return 2 * t, s * cfg.patch_size, (None, None, None), why
        # 1.5: rotary positions are sliced from a table of sample_height x sample_width patches
        top = (
            cfg.sample_height // cfg.patch_size * cfg.patch_size * s,
            cfg.sample_width // cfg.patch_size * cfg.patch_size * s,
        )
        return 2 * t, s * cfg.patch_size, (None, *top), why + f", rotary table {top[0]} x {top[1]} pixels"

    @property
    def max_tokens(self) -> int:
        return self.pipe.transformer.config.max_text_seq_length

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
            use_dynamic_cfg=self.dynamic_cfg,
            generator=self.generators(seeds),
        )
        return out.float().cpu()

    def _padding(self, latent_frames: int) -> int:
        """CogVideoX 1.5 pads the latent clip at the front to a multiple of its temporal patch; decode drops it."""
        pt = self.pipe.transformer.config.patch_size_t
        expect = (self.frames - 1) // self.pipe.vae_scale_factor_temporal + 1
        return max(0, latent_frames - expect) if pt else 0

    @torch.no_grad()
    def decode(self, latents):
        x = latents[:, self._padding(latents.shape[1]) :].to(self.device, self.vae.dtype)
        video = self.pipe.decode_latents(x)
        return self.to_uint8(self.pipe.video_processor.postprocess_video(video=video, output_type="np"))

    @torch.no_grad()
    def encode_video(self, frames: np.ndarray) -> torch.Tensor:
        # The posterior mean, not a sample: a real video is encoded once and cached, so it must be deterministic.
        z = self.vae.encode(self.pixels(frames)).latent_dist.mode().float() * self.pipe.vae_scaling_factor_image
        return z.permute(0, 2, 1, 3, 4).float().cpu()  # [B, C, F', H', W'] -> the pipeline's [B, F', C, H', W']

    def sample_timesteps(self, n, generator, window=None):
        total = self.pipe.scheduler.config.num_train_timesteps
        lo, hi = window if window is not None else (0.0, 1.0)
        low = int(lo * total)
        return torch.randint(low, max(low + 1, round(hi * total)), (n,), generator=generator)

    def predict_and_target(self, latents, cond, noise, timesteps):
        sched, net = self.pipe.scheduler, self.pipe.transformer
        t = timesteps.long().to(latents.device)
        noisy = sched.add_noise(latents, noise, t)
        target = sched.get_velocity(latents, noise, t)
        rotary = None
        if net.config.use_rotary_positional_embeddings:
            s, (f, h, w) = self.pipe.vae_scale_factor_spatial, (latents.shape[1], *latents.shape[-2:])
            rotary = self.pin(
                ("rotary", f, h, w, latents.device),
                lambda: self.pipe._prepare_rotary_positional_embeddings(h * s, w * s, f, latents.device),
            )
        dtype = self.net_dtype(net)
        pred = net(
            hidden_states=noisy.to(dtype),
            encoder_hidden_states=cond["prompt_embeds"].to(dtype),
            timestep=t,
            image_rotary_emb=rotary,
            return_dict=False,
        )[0]
        return pred, target
