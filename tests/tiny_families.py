"""Tiny random diffusers pipelines of each real family, built in code (no downloads) and saved as model folders.

The classes are exactly the ones the real checkpoints use; only the sizes are tiny. The tokenizer is a
character-level WordLevel tokenizer in T5's layout (``<pad>`` = 0, ``</s>`` = 1 appended, ``<unk>`` = 2), so any
prompt encodes without a vocabulary file. Clips are 9 frames of 32 x 32 pixels (square, so pixel critics read them).
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel, UMT5Config, UMT5EncoderModel

FAMILIES = ("cogvideox", "wan", "ltx")
TEXT_WIDTH = 32
VIDEO = {"frames": 9, "height": 32, "width": 32}


def tokenizer(max_length: int) -> PreTrainedTokenizerFast:
    vocab = {
        t: i for i, t in enumerate(["<pad>", "</s>", "<unk>"] + list(string.ascii_lowercase + string.digits + " .,'-"))
    }
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", model_max_length=max_length
    )


def _t5(config_cls, model_cls, vocab: int):
    return model_cls(
        config_cls(
            vocab_size=vocab,
            d_model=TEXT_WIDTH,
            d_kv=8,
            d_ff=64,
            num_layers=1,
            num_heads=4,
            relative_attention_num_buckets=8,
            pad_token_id=0,
            eos_token_id=1,
            decoder_start_token_id=0,
        )
    )


def cogvideox(rotary: bool = True):
    from diffusers import AutoencoderKLCogVideoX, CogVideoXDPMScheduler, CogVideoXPipeline, CogVideoXTransformer3DModel

    tok = tokenizer(32)
    transformer = CogVideoXTransformer3DModel(
        num_attention_heads=2,
        attention_head_dim=16,
        in_channels=4,
        out_channels=4,
        time_embed_dim=8,
        text_embed_dim=TEXT_WIDTH,
        num_layers=1,
        sample_width=8,
        sample_height=8,
        sample_frames=VIDEO["frames"],
        patch_size=2,
        max_text_seq_length=32,
        use_rotary_positional_embeddings=rotary,
    )
    vae = AutoencoderKLCogVideoX(
        block_out_channels=(8, 8, 8, 8),
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=2,
        temporal_compression_ratio=4,
        sample_height=32,
        sample_width=32,
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
    return CogVideoXPipeline(
        tokenizer=tok,
        text_encoder=_t5(T5Config, T5EncoderModel, len(tok)),
        vae=vae,
        transformer=transformer,
        scheduler=scheduler,
    )


def wan():
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel

    tok = tokenizer(32)
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=4,
        out_channels=4,
        text_dim=TEXT_WIDTH,
        freq_dim=32,
        ffn_dim=32,
        num_layers=1,
        rope_max_seq_len=32,
    )
    vae = AutoencoderKLWan(
        base_dim=8,
        z_dim=4,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
        latents_mean=[0.1, -0.2, 0.0, 0.3],
        latents_std=[1.5, 0.8, 1.0, 2.0],
    )
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    return WanPipeline(
        tokenizer=tok,
        text_encoder=_t5(UMT5Config, UMT5EncoderModel, len(tok)),
        vae=vae,
        transformer=transformer,
        scheduler=scheduler,
    )


def ltx():
    from diffusers import (
        AutoencoderKLLTXVideo,
        FlowMatchEulerDiscreteScheduler,
        LTXPipeline,
        LTXVideoTransformer3DModel,
    )

    tok = tokenizer(32)
    transformer = LTXVideoTransformer3DModel(
        in_channels=8,
        out_channels=8,
        patch_size=1,
        patch_size_t=1,
        num_attention_heads=2,
        attention_head_dim=8,
        cross_attention_dim=16,
        num_layers=1,
        caption_channels=TEXT_WIDTH,
    )
    vae = AutoencoderKLLTXVideo(
        latent_channels=8,
        block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        spatio_temporal_scaling=(True, True, False, False),
        decoder_spatio_temporal_scaling=(True, True, False, False),
        layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1, 1),
        patch_size=1,
        patch_size_t=1,
        encoder_causal=True,
        decoder_causal=False,
    )
    scheduler = FlowMatchEulerDiscreteScheduler(
        use_dynamic_shifting=True,
        base_shift=0.95,
        max_shift=2.05,
        base_image_seq_len=1024,
        max_image_seq_len=4096,
        shift_terminal=0.1,
    )
    return LTXPipeline(
        tokenizer=tok,
        text_encoder=_t5(T5Config, T5EncoderModel, len(tok)),
        vae=vae,
        transformer=transformer,
        scheduler=scheduler,
    )


def build(family: str, seed: int = 0):
    torch.manual_seed(seed)
    return {"cogvideox": cogvideox, "wan": wan, "ltx": ltx}[family]()


def save(family: str, path: Path, seed: int = 0) -> Path:
    """A tiny random pipeline of ``family`` as a diffusers folder, with vipo's clip size in ``vipo.json``."""
    path = Path(path)
    build(family, seed).save_pretrained(path)
    (path / "vipo.json").write_text(json.dumps(VIDEO) + "\n")
    return path


def dpo_batch(model, prompts: list[str], seed: int = 0):
    """A fixed DPO batch for ``StepContext.errors``: winners sampled by the model, random losers, shared noise and
    timesteps."""
    with torch.no_grad():
        cond, uncond = model.encode_prompts(prompts), model.encode_prompts([""])
    w = model.sample(cond, uncond, list(range(1, len(prompts) + 1)), num_steps=2, guidance=3.0)
    g = torch.Generator().manual_seed(seed)
    lose, noise = torch.randn(w.shape, generator=g), torch.randn(w.shape, generator=g)
    t = model.sample_timesteps(len(prompts), g)
    return (
        torch.cat([w, lose]),
        {k: torch.cat([v, v]) for k, v in cond.items()},
        torch.cat([noise, noise]),
        torch.cat([t, t]),
    )


def dpo_loss(ctx, batch, beta: float = 500.0):
    """The DPO loss of ``dpo_batch`` under a trainer ``StepContext`` (policy errors against the reference's)."""
    from vipo import losses

    n = len(batch[0]) // 2
    e = ctx.errors(*batch)
    with torch.no_grad(), ctx.reference():
        r = ctx.errors(*batch)
    return losses.dpo(e[:n], e[n:], r[:n], r[n:], beta=beta).loss
