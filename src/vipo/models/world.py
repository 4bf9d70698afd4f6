"""The embedded world's text-to-video model: a pixel-space diffusers UNet with frames stacked as channels.

Why this shape: on a 2-core CPU a convolutional prior learns motion far faster than a patch transformer (see
shared/notes/world-probes.md), and stacking the clip's F frames as 3F channels lets a plain ``UNet2DConditionModel``
see the whole clip at once. Text goes through a tiny ``CLIPTextModel`` over a word-level tokenizer built from the
world's grammar: the masked mean of its states feeds the class embedding (a FiLM scale/shift in every ResNet block),
which carries the global attributes (colour, shape, direction); its hidden states feed cross-attention if enabled.

Parameterization is x0-prediction ("sample") with a cosine schedule. Measured here: with v-prediction a small net
under-predicts the noise at low noise levels and the sampler bakes it into the clip (pure speckle after 600 steps);
predicting the clean clip derives the noise by subtraction, so samples come out blurry at worst, never noisy.
Sampling is DPM-Solver++ with trailing spacing, as IPO samples CogVideoX. The "VAE" is the
identity: latents are pixels scaled to [-1, 1], laid out [F, 3, H, W].
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from diffusers import DDPMScheduler, DPMSolverMultistepScheduler, UNet2DConditionModel
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import CLIPTextConfig, CLIPTextModel, PreTrainedTokenizerFast

from .. import losses
from ..world.grammar import vocabulary
from .base import VideoModel

SPECIAL = ["[PAD]", "[UNK]", "[BOS]", "[EOS]"]
MAX_TOKENS = 16
COORD_CHANNELS = 2
#: the share of training timesteps drawn from the top of the schedule, and where that top starts (a fraction of it)
HIGH_NOISE_SHARE, HIGH_NOISE_START = 0.3, 0.9


def build_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {tok: i for i, tok in enumerate(SPECIAL + vocabulary())}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[BOS] $A [EOS]", special_tokens=[("[BOS]", vocab["[BOS]"]), ("[EOS]", vocab["[EOS]"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="[PAD]",
        unk_token="[UNK]",
        bos_token="[BOS]",
        eos_token="[EOS]",
        model_max_length=MAX_TOKENS,
    )


def build_components(
    frames: int = 9,
    side: int = 32,
    widths: tuple[int, ...] = (32, 64, 64),
    text_width: int = 64,
    layers_per_block: int = 1,
    attention: bool = False,
    seed: int = 0,
) -> dict:
    """Fresh, randomly initialised components (the pretraining starting point, and tests' tiny models)."""
    torch.manual_seed(seed)
    tokenizer = build_tokenizer()
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=text_width,
            intermediate_size=text_width * 2,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=MAX_TOKENS,
            pad_token_id=0,
            bos_token_id=2,
            eos_token_id=3,
            projection_dim=text_width,
        )
    )
    # Token identity must dominate the pooled state from the start: with CLIP's default init (std 0.02, the same as
    # the position embeddings) the prompts "... moving left" and "... moving right" pooled to nearly the same vector
    # (distance 0.09 against 1-3 for colours after training) and the direction words never got a gradient.
    with torch.no_grad():
        text_encoder.get_input_embeddings().weight.normal_(0.0, 1.0)
    n = len(widths)
    down = ("DownBlock2D",) + ("CrossAttnDownBlock2D" if attention else "DownBlock2D",) * (n - 1)
    up = ("CrossAttnUpBlock2D" if attention else "UpBlock2D",) * (n - 1) + ("UpBlock2D",)
    # Without attention the prompt reaches the UNet only through the class embedding, added to the timestep
    # embedding and applied as a scale/shift in every ResNet block: enough for global attributes, and ~3x cheaper.
    # Two extra input channels hold fixed x/y coordinate maps (CoordConv): a convolutional net sees nearly pure
    # noise at high noise levels and otherwise has only padding to tell where it is, which makes "start right, end
    # left" (direction) far harder to learn than colour or shape.
    unet = UNet2DConditionModel(
        sample_size=side,
        in_channels=3 * frames + COORD_CHANNELS,
        out_channels=3 * frames,
        down_block_types=down,
        up_block_types=up,
        mid_block_type="UNetMidBlock2DCrossAttn" if attention else "UNetMidBlock2D",
        block_out_channels=tuple(widths),
        layers_per_block=layers_per_block,
        cross_attention_dim=text_width,
        attention_head_dim=8,
        norm_num_groups=16,
        resnet_time_scale_shift="scale_shift",
        class_embed_type="projection",
        projection_class_embeddings_input_dim=text_width,
    )
    scheduler = DDPMScheduler(
        num_train_timesteps=1000,
        beta_schedule="squaredcos_cap_v2",
        prediction_type="sample",
        clip_sample=True,
        clip_sample_range=1.0,
    )
    return {"unet": unet, "text_encoder": text_encoder, "tokenizer": tokenizer, "scheduler": scheduler}


class WorldModel(VideoModel):
    family = "world"
    parameterization = "sample"
    lora_targets = (
        "to_q",
        "to_k",
        "to_v",
        "to_out.0",
        "conv1",
        "conv2",
        "proj_in",
        "proj_out",
        "time_emb_proj",
        "linear_1",
        "linear_2",
    )

    def __init__(
        self,
        unet: UNet2DConditionModel,
        text_encoder: CLIPTextModel,
        tokenizer: PreTrainedTokenizerFast,
        scheduler: DDPMScheduler,
        device: str = "cpu",
    ):
        self.unet = unet.to(device)
        self.text_encoder = text_encoder.to(device)
        self.tokenizer = tokenizer
        self.scheduler = scheduler
        self.device = device
        self.frames = unet.config.out_channels // 3
        self.side = self.height = self.width = unet.config.sample_size
        self.coords = unet.config.in_channels - unet.config.out_channels
        lin = torch.linspace(-1, 1, self.side)
        self._grid = torch.stack(torch.meshgrid(lin, lin, indexing="xy"))[: self.coords].to(device)  # [2, H, W]

    # -- loading and saving -------------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path, device: str = "cpu", dtype: torch.dtype = torch.float32) -> "WorldModel":
        assert dtype == torch.float32, "the world model loads in float32 only (load_model checks model_dtype)"
        path = Path(path)
        return cls(
            UNet2DConditionModel.from_pretrained(path / "unet"),
            CLIPTextModel.from_pretrained(path / "text_encoder"),
            PreTrainedTokenizerFast.from_pretrained(path / "tokenizer"),
            DDPMScheduler.from_pretrained(path / "scheduler"),
            device=device,
        )

    @classmethod
    def fresh(cls, device: str = "cpu", **kwargs) -> "WorldModel":
        return cls(**build_components(**kwargs), device=device)

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.unet.save_pretrained(path / "unet")
        self.text_encoder.save_pretrained(path / "text_encoder")
        self.tokenizer.save_pretrained(path / "tokenizer")
        self.scheduler.save_pretrained(path / "scheduler")
        index = {
            "_class_name": "WorldPipeline",
            "_diffusers_version": _diffusers_version(),
            "family": "world",
            "unet": ["diffusers", "UNet2DConditionModel"],
            "text_encoder": ["transformers", "CLIPTextModel"],
            "tokenizer": ["transformers", "PreTrainedTokenizerFast"],
            "scheduler": ["diffusers", "DDPMScheduler"],
        }
        (path / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")

    @property
    def denoiser(self) -> torch.nn.Module:
        return self.unet

    @property
    def train_timesteps(self) -> int:
        return int(self.scheduler.config.num_train_timesteps)

    # -- text ---------------------------------------------------------------------------------------------------
    def encode_prompts(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        tok = self.tokenizer(
            list(prompts), padding="max_length", max_length=MAX_TOKENS, truncation=True, return_tensors="pt"
        )
        ids = tok.input_ids.to(self.device)
        mask = tok.attention_mask.to(self.device)
        hidden = self.text_encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        # Masked mean of the token states, not CLIP's EOS state: every attribute word reaches the class embedding
        # directly (with EOS pooling a small encoder learned colour and shape but left direction at chance).
        m = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1)
        return {"hidden": hidden, "pooled": pooled, "mask": mask}

    def token_count(self, prompt: str) -> int:
        return len(self.tokenizer(prompt).input_ids)

    # -- the denoiser ---------------------------------------------------------------------------------------------
    def _forward(self, x: torch.Tensor, t: torch.Tensor, cond: dict[str, torch.Tensor]) -> torch.Tensor:
        b = x.shape[0]
        inp = x.reshape(b, -1, self.side, self.side)
        if self.coords:
            inp = torch.cat([inp, self._grid.to(inp.dtype).expand(b, -1, -1, -1)], dim=1)
        out = self.unet(
            inp,
            t,
            encoder_hidden_states=cond["hidden"],
            class_labels=cond["pooled"],
            encoder_attention_mask=cond["mask"],
        ).sample
        return out.reshape(x.shape)

    def sample_timesteps(
        self, n: int, generator: torch.Generator, window: tuple[float, float] | None = None
    ) -> torch.Tensor:
        """Uniform timesteps, except that a share ``HIGH_NOISE_SHARE`` is drawn from the top of the schedule
        (from ``HIGH_NOISE_START`` of it up).

        Where the prompt matters most — which way the shape goes, where it starts — is decided at noise levels so
        high that the clip itself is invisible (alpha_bar < 0.01: the last ~6% of a cosine schedule). Uniform
        sampling spends too few steps there; this mixture (like SD3's shifted timestep densities) triples them.
        """
        total = self.scheduler.config.num_train_timesteps
        if window is not None and tuple(window) != (0.0, 1.0):
            lo = int(window[0] * total)
            return torch.randint(lo, max(lo + 1, round(window[1] * total)), (n,), generator=generator)
        frac, start = HIGH_NOISE_SHARE, HIGH_NOISE_START
        uniform = torch.randint(0, total, (n,), generator=generator)
        high = torch.randint(int(start * total), total, (n,), generator=generator)
        pick = torch.rand(n, generator=generator) < frac
        return torch.where(pick, high, uniform)

    def predict_and_target(self, latents, cond, noise, timesteps):
        noisy = self.scheduler.add_noise(latents, noise, timesteps)
        target = losses.target(self.parameterization, latents, noise)
        return self._forward(noisy, timesteps.to(self.device), cond), target

    @torch.no_grad()
    def sample(self, cond, uncond, seeds, num_steps, guidance):
        shape = (self.frames, 3, self.side, self.side)
        x = torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds])
        x = x.to(self.device)
        sched = DPMSolverMultistepScheduler.from_config(
            self.scheduler.config, algorithm_type="dpmsolver++", timestep_spacing="trailing"
        )
        sched.set_timesteps(num_steps)
        both = {k: torch.cat([uncond[k].expand_as(cond[k]), cond[k]]) for k in cond}
        for t in sched.timesteps:
            tt = t.expand(2 * len(seeds)).to(self.device)
            out_u, out_c = self._forward(torch.cat([x, x]), tt, both).chunk(2)
            x = sched.step(out_u + guidance * (out_c - out_u), t, x).prev_sample
        return x.float().cpu()

    # -- pixels ---------------------------------------------------------------------------------------------------
    def decode(self, latents: torch.Tensor) -> np.ndarray:
        x = ((latents.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return x.permute(0, 1, 3, 4, 2).cpu().numpy()  # [B, F, 3, H, W] -> [B, F, H, W, 3]

    def encode_video(self, frames: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(frames)).float() / 127.5 - 1
        return x.permute(0, 1, 4, 2, 3).contiguous()


def _diffusers_version() -> str:
    import diffusers

    return diffusers.__version__
