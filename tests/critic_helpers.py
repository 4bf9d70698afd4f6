"""Shared by the critic tests: a folder of rendered world clips with metadata.jsonl, as `vipo judge DIR` reads it;
answers decided by the pixels; a tiny one-round `vipo run` and what every critic's run must leave."""

import json
import random

import numpy as np
import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

from vipo.io.video import write_mp4
from vipo.world import grammar, render

PROMPTS = ("a red circle moving left", "a blue square moving up")


def video_folder(root, per_prompt=2, wrong_every=2):
    """Clips of PROMPTS; every ``wrong_every``-th clip moves the opposite way (semantically wrong)."""
    root.mkdir(parents=True, exist_ok=True)
    opposite = {"left": "right", "right": "left", "up": "down", "down": "up"}
    rows, k = [], 0
    for p in PROMPTS:
        a = grammar.parse(p)
        for i in range(per_prompt):
            shown = a if k % wrong_every else grammar.Attributes(a.color, a.shape, opposite[a.direction])
            name = f"clip-{k:02d}.mp4"
            write_mp4(root / name, render.random_clip(shown, random.Random(k), 32, 9))
            rows.append({"file_name": name, "prompt": p})
            k += 1
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def pixel_verdict(videos):
    """A critic's answer decided by the pixels alone (``videos``: one list of uint8 frames per video shown), the way
    a real critic's is: pointwise a label from the mean brightness, pairwise the brighter video, so both orders
    agree and every prompt's samples rank cleanly."""
    means = [float(np.mean(np.stack(v))) for v in videos]
    if len(means) == 2:
        v = "A" if means[0] > means[1] else "B" if means[1] > means[0] else "Tie"
        return f"Video A has mean brightness {means[0]:.3f}, video B {means[1]:.3f}.\nVerdict: {v}"
    return f"Mean brightness {means[0]:.3f}.\nVerdict: {('Good', 'Normal', 'Bad')[int(means[0] * 10) % 3]}"


def split_videos(parts):
    """The frames of each video in a question's parts (text and images; 'Video A:' and 'Video B:' open a pair's)."""
    videos = []
    for p in parts:
        if isinstance(p, str):
            if p in ("Video A:", "Video B:"):
                videos.append([])
        else:
            if not videos:
                videos.append([])
            videos[-1].append(p)
    return videos


def run_one_round(model_dir, out, *sets):
    """Args of a tiny one-round DPO ``vipo run``; ``sets``: 'key=value' overrides (after TINY_RUN, so they win)."""
    from tests.conftest import TINY_RUN

    return (
        ["run", "--model", str(model_dir), "--out", str(out), "--rounds", "1", "--method", "dpo"]
        + TINY_RUN
        + ["--set", "eval.clips_per_split=1", "--set", "eval.versus_base=false"]  # the judge's traffic only
        + [a for s in sets for a in ("--set", s)]
    )


def check_round(out, critic):
    """What every critic's run must leave: judgments by ``critic`` (raw text kept), each pointwise question asked
    once, each pair in both orders, the judge stage's counts, pairs, a finished training and evaluations."""
    from vipo.data.ledger import Ledger
    from vipo.io import atomic

    rd = out / "round-1"
    samples = [json.loads(x) for x in (rd / "samples.jsonl").read_text().splitlines()]
    judgments = {j["key"]: j for j in map(json.loads, (rd / "judgments.jsonl").read_text().splitlines())}
    assert all(j["critic"] == critic and j["raw"] for j in judgments.values())
    assert {k for k in judgments if k.startswith("pw:")} == {f"pw:{s['id']}" for s in samples}
    both = {
        f"pair:{a['id']}|{b['id']}"
        for a in samples
        for b in samples
        if a["prompt_id"] == b["prompt_id"] and a["id"] != b["id"]
    }
    assert {k for k in judgments if k.startswith("pair:")} == both
    pairs = [json.loads(x) for x in (rd / "pairs.jsonl").read_text().splitlines()]
    assert pairs and all(p["chosen"] != p["rejected"] for p in pairs)
    assert (rd / "train_log.jsonl").read_text().strip() and atomic.is_complete(rd / "checkpoint")
    with Ledger(out / "ledger.sqlite") as ledger:
        info = ledger.stage_info(1, "judge")
        assert all(ledger.is_done(k, s) for k, s in ((0, "eval"), (1, "train"), (1, "eval"), (1, "round")))
    assert info["pairwise"] == len(both) and info["pointwise"] == len(samples)
    assert (rd / "eval" / "eval.json").is_file() and (out / "report.md").is_file()
    return judgments, pairs, info


SPECIAL = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>{% else %}{{ c['text'] }}"
    "{% endif %}{% endfor %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% endif %}"
)


def tiny_qwen2_vl(path, head_std: float | None = None):
    """A tiny random Qwen2-VL (char-level tokenizer, 1 layer, 32 wide) saved in the transformers layout, with an images
    processor and a chat template. ``head_std``: re-draw the output layer with this spread, so that a fine-tuned
    adapter can make it confident (at the default 0.02 a 32-wide model's logits cannot move beyond ~0.6)."""
    from transformers import (
        PreTrainedTokenizerFast,
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessorPil,
    )

    vocab = {t: i for i, t in enumerate(SPECIAL + [chr(i) for i in range(32, 127)] + ["\n", "<unk>"])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.add_special_tokens(SPECIAL)
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<|endoftext|>", eos_token="<|im_end|>", unk_token="<unk>"
    )
    fast.save_pretrained(path)
    image_processor = Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=56 * 56)
    image_processor.save_pretrained(path)
    for name in ("processor_config.json", "preprocessor_config.json"):
        cfg = json.loads((path / name).read_text()) if (path / name).is_file() else {}
        cfg["processor_class"] = "Qwen2VLProcessor"
        (path / name).write_text(json.dumps(cfg))
    (path / "chat_template.json").write_text(json.dumps({"chat_template": TEMPLATE}))
    config = Qwen2VLConfig(
        text_config=dict(
            vocab_size=len(vocab),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            max_position_embeddings=4096,
            rope_scaling={"type": "mrope", "mrope_section": [4, 2, 2]},
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
        ),
        image_token_id=vocab["<|image_pad|>"],
        video_token_id=vocab["<|video_pad|>"],
        vision_start_token_id=vocab["<|vision_start|>"],
        vision_end_token_id=vocab["<|vision_end|>"],
        bos_token_id=0,
        eos_token_id=vocab["<|im_end|>"],
        pad_token_id=0,
    )
    torch.manual_seed(0)
    model = Qwen2VLForConditionalGeneration(config)
    if head_std is not None:
        torch.nn.init.normal_(model.lm_head.weight, std=head_std)
    model.save_pretrained(path)
    return path
