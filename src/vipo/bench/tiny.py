"""The bench's CPU model: a CogVideoX pipeline shrunk to a 4-layer, 256-wide transformer, built in code.

The classes are CogVideoX's own (``CogVideoXTransformer3DModel`` with rotary embeddings as in 5B and 1.5, the 3D VAE,
a T5 encoder, the DPM scheduler with zero-SNR v-prediction), so every code path of the ``cogvideox`` family runs; only
the sizes are small. A 13 x 128 x 128 clip is 4 x 16 x 16 latents of 16 channels, 256 video tokens after the 2 x 2
patch, beside 16 text tokens (CogVideoX-2B: 17,550 video tokens beside 226). Weights are random (seeded): nothing is
downloaded. The tokenizer is word-level over the bench's prompts in T5's layout (``<pad>`` 0, ``</s>`` 1).

The VAE and the text encoder are sized in proportion to the transformer as CogVideoX-2B's are at 49 x 480 x 720, so
that "encode every video every step" costs here what it costs there. FLOPs counted with torch's FlopCounterMode on
the meta device (no weights needed): CogVideoX-2B's transformer forward is 120 TFLOP per video, its VAE encode 149
TFLOP (1.24 forwards) and T5-XXL on 226 tokens 2.1 TFLOP (0.018); here 2.0 GFLOP, 2.6 GFLOP (1.29) and 0.042 GFLOP
(0.021). ``TEST`` is a far smaller size for the bench's own tests.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

PROMPTS = [
    "a red ball rolls across a wooden table",
    "a paper boat drifts down a rainy street",
    "a cat jumps onto a windowsill at dusk",
    "waves break on a rocky shore at sunrise",
]


@dataclass(frozen=True)
class Size:
    layers: int = 4
    heads: int = 4
    head_dim: int = 64
    frames: int = 13
    height: int = 128
    width: int = 128
    #: 3D-VAE widths (4 blocks: 8x spatial compression); (8, 16, 16, 16) makes an encode 1.3 transformer forwards
    vae_channels: tuple = (8, 16, 16, 16)
    text_tokens: int = 16
    text_width: int = 128
    text_layers: int = 4

    def describe(self) -> str:
        f, h, w = (self.frames - 1) // 4 + 1, self.height // 8, self.width // 8
        return (
            f"CogVideoX transformer, {self.layers} layers x {self.heads * self.head_dim} wide ({self.heads} heads "
            f"of {self.head_dim}), rotary embeddings; clip {self.frames} x {self.height} x {self.width} = latents "
            f"{f} x 16 x {h} x {w} = {f * (h // 2) * (w // 2)} video tokens + {self.text_tokens} text tokens; "
            f"3D VAE widths {list(self.vae_channels)}; T5 encoder {self.text_layers} x {self.text_width}"
        )

    def as_dict(self) -> dict:
        return asdict(self)


BENCH = Size()
TEST = Size(
    layers=1,
    heads=2,
    head_dim=16,
    frames=5,
    height=32,
    width=32,
    vae_channels=(8, 8, 8, 8),
    text_width=32,
    text_layers=1,
)


def tokenizer(max_length: int):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = sorted({w for p in PROMPTS for w in p.split()})
    vocab = {t: i for i, t in enumerate(["<pad>", "</s>", "<unk>"] + words)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", model_max_length=max_length
    )


def cogvideox_pipeline(size: Size = BENCH, seed: int = 0):
    """A random ``CogVideoXPipeline`` of ``size``."""
    from diffusers import AutoencoderKLCogVideoX, CogVideoXDPMScheduler, CogVideoXPipeline, CogVideoXTransformer3DModel
    from transformers import T5Config, T5EncoderModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        tok = tokenizer(size.text_tokens)
        text = T5EncoderModel(
            T5Config(
                vocab_size=len(tok),
                d_model=size.text_width,
                d_kv=size.text_width // 4,
                d_ff=8 * size.text_width,
                num_layers=size.text_layers,
                num_heads=4,
                relative_attention_num_buckets=8,
                pad_token_id=0,
                eos_token_id=1,
                decoder_start_token_id=0,
            )
        )
        s = 2 ** (len(size.vae_channels) - 1)
        transformer = CogVideoXTransformer3DModel(
            num_attention_heads=size.heads,
            attention_head_dim=size.head_dim,
            in_channels=16,
            out_channels=16,
            time_embed_dim=128,
            text_embed_dim=size.text_width,
            num_layers=size.layers,
            sample_width=size.width // s,
            sample_height=size.height // s,
            sample_frames=size.frames,
            patch_size=2,
            max_text_seq_length=size.text_tokens,
            use_rotary_positional_embeddings=True,
        )
        vae = AutoencoderKLCogVideoX(
            block_out_channels=tuple(size.vae_channels),
            latent_channels=16,
            layers_per_block=1,
            norm_num_groups=8,
            temporal_compression_ratio=4,
            sample_height=size.height,
            sample_width=size.width,
        )
        scheduler = CogVideoXDPMScheduler(
            beta_schedule="scaled_linear",
            beta_start=0.00085,
            beta_end=0.012,
            prediction_type="v_prediction",
            rescale_betas_zero_snr=True,
            set_alpha_to_one=True,
            snr_shift_scale=3.0,
            timestep_spacing="trailing",
        )
    return CogVideoXPipeline(tokenizer=tok, text_encoder=text, vae=vae, transformer=transformer, scheduler=scheduler)


def cogvideox_model(size: Size = BENCH, device: str = "cpu", seed: int = 0):
    """The bench pipeline as vipo's ``cogvideox`` family model."""
    from ..models.cogvideox import CogVideoXModel

    return CogVideoXModel(
        cogvideox_pipeline(size, seed), device=device, frames=size.frames, height=size.height, width=size.width
    )


def videos(n: int, size: Size = BENCH, seed: int = 0) -> torch.Tensor:
    """``n`` smooth random clips, uint8 [n, F, H, W, 3] (a VAE sees structure, not white noise)."""
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(n, 3, size.frames, 8, 8, generator=g)
    big = torch.nn.functional.interpolate(
        small, size=(size.frames, size.height, size.width), mode="trilinear", align_corners=False
    )
    return (big * 255).round().to(torch.uint8).permute(0, 2, 3, 4, 1).contiguous()
