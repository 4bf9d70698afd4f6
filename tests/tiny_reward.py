"""A tiny random VideoAlign VideoReward checkpoint, built in code and saved in the released layout (no downloads).

``base(path)`` saves a tiny Qwen2-VL (transformers' own classes; a character-level tokenizer with Qwen's special
tokens and a Qwen2-VL-style chat template) as the "Qwen2-VL-2B-Instruct" folder. ``videoalign(path, base)`` writes
what VideoAlign's trainer writes (transformers 4.45 / peft 0.10 names): ``model_config.json`` and
``checkpoint-20/`` with ``adapter_model.safetensors`` + ``adapter_config.json`` (a LoRA on every language-model
linear layer), ``non_lora_state_dict.pth`` (the reward head, the resized embeddings with the reward tokens, and a
changed base weight and merger weight, as their trainer saves every trainable non-LoRA weight) and ``tokenizer/``.
``expected`` holds what the loaded model must equal, in the loaded model's own names, for the test's reference.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast, Qwen2VLConfig, Qwen2VLForConditionalGeneration

SPECIAL = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|video_pad|>",
    "<|image_pad|>",
]
REWARD = ["<|VQ_reward|>", "<|MQ_reward|>", "<|TA_reward|>"]
TEMPLATE = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}<|im_start|>system\n"
    "You are a helpful assistant.<|im_end|>\n{% endif %}<|im_start|>{{ message['role'] }}\n"
    "{% for content in message['content'] %}{% if content['type'] == 'video' %}"
    "<|vision_start|><|video_pad|><|vision_end|>{% elif content['type'] == 'text' %}{{ content['text'] }}"
    "{% endif %}{% endfor %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% endif %}"
)
NORM = {"VQ_mean": 0.5, "VQ_std": 2.0, "MQ_mean": -0.25, "MQ_std": 0.5, "TA_mean": 0.0, "TA_std": 1.0}
RANK, ALPHA = 4, 8


WORDS = r"\w+|[^\w\s]|\s+"


def tokenizer() -> PreTrainedTokenizerFast:
    """Word-level over the words of VideoAlign's questions, the chat template and a few prompt words (any other word
    is <unk>, which a random model does not mind): short sequences, so the tiny model runs in a second."""
    import re
    from importlib import resources

    text = TEMPLATE + "a red kite number over beach dog cat moving left right up down circle square blue green"
    for name in ("videoalign_detailed_special.txt", "videoalign_detailed.txt"):
        text += resources.files("vipo.critics").joinpath("prompts", name).read_text()
    pieces = sorted(set(re.findall(WORDS, text)) | set(string.punctuation) | set(string.digits))
    vocab = {t: i for i, t in enumerate(SPECIAL + ["<unk>"] + pieces)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(WORDS), behavior="isolated")
    out = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<|endoftext|>",
        eos_token="<|im_end|>",
        unk_token="<unk>",
        additional_special_tokens=SPECIAL[1:],
        model_max_length=100000,
    )
    out.chat_template = TEMPLATE
    return out


def base(path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    tok = tokenizer()
    ids = tok.convert_tokens_to_ids
    config = Qwen2VLConfig(
        text_config=dict(
            vocab_size=len(tok),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=4096,
            rope_scaling={"type": "mrope", "mrope_section": [2, 1, 1]},
        ),
        vision_config=dict(
            depth=1,
            embed_dim=32,
            hidden_size=32,
            num_heads=2,
            mlp_ratio=2,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
            in_channels=3,
        ),
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
        pad_token_id=ids("<|endoftext|>"),
    )
    Qwen2VLForConditionalGeneration(config).save_pretrained(path)
    tok.save_pretrained(path)
    (path / "chat_template.jinja").write_text(TEMPLATE)
    (path / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "image_processor_type": "Qwen2VLImageProcessor",
                "processor_class": "Qwen2VLProcessor",
                "patch_size": 14,
                "merge_size": 2,
                "temporal_patch_size": 2,
                "min_pixels": 3136,
                "max_pixels": 12845056,
                "image_mean": [0.48145466, 0.4578275, 0.40821073],
                "image_std": [0.26862954, 0.26130258, 0.27577711],
            }
        )
    )
    return path


def _old_name(ours: str) -> str:
    """transformers 4.45's name of a weight (what VideoAlign's checkpoints use)."""
    if ours.startswith("model.language_model."):
        return "model." + ours[len("model.language_model.") :]
    if ours.startswith("model.visual."):
        return ours[len("model.") :]
    return ours


def videoalign(
    path: Path, base_dir: Path, seed: int = 1, pickle: bool = True, fps: float = 2.0, max_pixels: int = 56 * 56
) -> dict:
    """Write the layout; return ``expected``: {"state": ours-named weights that changed, "lora": {module: (A, B)},
    "scale": alpha / r, "head": rm_head weight, "tokenizer": the tokenizer with reward tokens}."""
    g = torch.Generator().manual_seed(seed)
    model = Qwen2VLForConditionalGeneration.from_pretrained(base_dir)
    tok = tokenizer()
    tok.add_special_tokens({"additional_special_tokens": SPECIAL[1:] + REWARD})
    model.resize_token_embeddings(len(tok))
    state = model.state_dict()
    hidden = model.config.get_text_config().hidden_size
    ckpt = path / "checkpoint-20"
    ckpt.mkdir(parents=True)
    changed = {
        "model.language_model.embed_tokens.weight": torch.randn(len(tok), hidden, generator=g) * 0.1,
        "model.language_model.layers.0.self_attn.q_proj.weight": state[
            "model.language_model.layers.0.self_attn.q_proj.weight"
        ]
        + 0.05,
        "model.visual.merger.mlp.0.weight": torch.randn(state["model.visual.merger.mlp.0.weight"].shape, generator=g)
        * 0.05,
    }
    head = torch.randn(3, hidden, generator=g)
    non_lora = {"base_model.model.rm_head.weight": head}
    targets = [
        n.removesuffix(".weight")
        for n in state
        if n.startswith("model.language_model.layers.") and n.endswith("proj.weight")
    ]
    for k, v in changed.items():
        old = _old_name(k)
        if k.removesuffix(".weight") in targets:  # a LoRA-wrapped layer's own weight: peft's base_layer
            old = old.removesuffix(".weight") + ".base_layer.weight"
        non_lora["base_model.model." + old] = v
    lora, adapter = {}, {}
    for t in targets:
        w = state[t + ".weight"]
        a, b = torch.randn(RANK, w.shape[1], generator=g) * 0.1, torch.randn(w.shape[0], RANK, generator=g) * 0.1
        lora[t] = (a, b)
        adapter[f"base_model.model.{_old_name(t)}.lora_A.weight"] = a
        adapter[f"base_model.model.{_old_name(t)}.lora_B.weight"] = b
    from safetensors.torch import save_file

    save_file(adapter, str(ckpt / "adapter_model.safetensors"))
    (ckpt / "adapter_config.json").write_text(
        json.dumps(
            {
                "peft_type": "LORA",
                "r": RANK,
                "lora_alpha": ALPHA,
                "use_rslora": False,
                "lora_dropout": 0.05,
                "target_modules": sorted({_old_name(t) for t in targets}),
                "task_type": "CAUSAL_LM",
                "bias": "none",
            }
        )
    )
    if pickle:
        torch.save(non_lora, ckpt / "non_lora_state_dict.pth")
    else:
        save_file({k: v.contiguous() for k, v in non_lora.items()}, str(ckpt / "non_lora_state_dict.safetensors"))
    tok.save_pretrained(ckpt / "tokenizer")
    (path / "model_config.json").write_text(
        json.dumps(
            {
                "data_config": {
                    "max_frame_pixels": max_pixels,
                    "num_frames": None,
                    "fps": fps,
                    "eval_dim": ["VQ", "MQ", "TA"],
                    "prompt_template_type": "detailed_special",
                    "sample_type": "uniform",
                },
                "model_config": {
                    "model_name_or_path": "Qwen/Qwen2-VL-2B-Instruct",
                    "output_dim": 3,
                    "use_special_tokens": True,
                    "reward_token": "special",
                    "torch_dtype": "bfloat16",
                },
                "peft_lora_config": {"lora_enable": True, "lora_r": RANK, "lora_alpha": ALPHA, "vision_lora": False},
                "inference_config": NORM,
            },
            indent=2,
        )
    )
    return {"state": changed, "lora": lora, "scale": ALPHA / RANK, "head": head, "tokenizer": tok}


def classifier(
    path: Path,
    seed: int = 2,
    labels=("text_alignment", "visual_quality", "motion_quality"),
    mean: dict | None = None,
    std: dict | None = None,
) -> Path:
    """A tiny random Gemma 3 sequence-classification VLM with its processor (PIL image processor, 28-pixel images
    as 4 tokens), one output per label; ``mean``/``std`` (label -> number) go into its config as reward_mean and
    reward_std."""
    import re

    from tokenizers import Regex as Rx
    from transformers import Gemma3Config, Gemma3ForSequenceClassification, Gemma3Processor
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

    torch.manual_seed(seed)
    special = [
        "<pad>",
        "<eos>",
        "<bos>",
        "<unk>",
        "<start_of_turn>",
        "<end_of_turn>",
        "<start_of_image>",
        "<end_of_image>",
        "<image_soft_token>",
    ]
    pieces = sorted(
        set(
            re.findall(
                WORDS,
                "user model a red kite number over beach dog cat circle square moving left right up down blue green",
            )
        )
        | set(string.punctuation)
        | set(string.digits)
        | {" ", "\n"}
    )
    tk = Tokenizer(models.WordLevel(vocab={t: i for i, t in enumerate(special + pieces)}, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split(Rx(WORDS), behavior="isolated")
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk,
        pad_token="<pad>",
        eos_token="<eos>",
        bos_token="<bos>",
        unk_token="<unk>",
        additional_special_tokens=special[4:],
        extra_special_tokens={
            "boi_token": "<start_of_image>",
            "eoi_token": "<end_of_image>",
            "image_token": "<image_soft_token>",
        },
    )
    template = (
        "{{ bos_token }}{% for m in messages %}<start_of_turn>{{ m['role'] }}\n{% for c in m['content'] %}"
        "{% if c['type'] == 'image' %}<start_of_image>{% else %}{{ c['text'] }}{% endif %}{% endfor %}"
        "<end_of_turn>\n{% endfor %}"
    )
    ids = tok.convert_tokens_to_ids
    config = Gemma3Config(
        text_config=dict(
            vocab_size=len(tok),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=16,
            sliding_window=64,
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=28,
            patch_size=14,
        ),
        mm_tokens_per_image=4,
        boi_token_index=ids("<start_of_image>"),
        eoi_token_index=ids("<end_of_image>"),
        image_token_index=ids("<image_soft_token>"),
        num_labels=len(labels),
        pad_token_id=0,
        id2label=dict(enumerate(labels)),
        label2id={k: i for i, k in enumerate(labels)},
    )
    if mean:
        config.reward_mean, config.reward_std = mean, std
    Gemma3ForSequenceClassification(config).save_pretrained(path)
    Gemma3Processor(
        image_processor=Gemma3ImageProcessorPil(size={"height": 28, "width": 28}),
        tokenizer=tok,
        chat_template=template,
        image_seq_length=4,
    ).save_pretrained(path)
    return path
