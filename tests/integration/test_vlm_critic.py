"""The vlm critic through `vipo judge DIR` with a tiny random Qwen2-VL built in code (no downloads, no torchvision).

Its answers are random characters: every question is unparseable, retried, recorded with its raw text and counted.
"""
import json

import pytest
import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

from tests.critic_helpers import check_round, pixel_verdict, run_one_round, split_videos, video_folder
from vipo.cli import main

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
           "<|video_pad|>"]
TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% for c in m['content'] %}"
            "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>{% else %}{{ c['text'] }}"
            "{% endif %}{% endfor %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
            "{% endif %}")


def tiny_qwen2_vl(path):
    from transformers import (PreTrainedTokenizerFast, Qwen2VLConfig, Qwen2VLForConditionalGeneration,
                              Qwen2VLImageProcessorPil)

    vocab = {t: i for i, t in enumerate(SPECIAL + [chr(i) for i in range(32, 127)] + ["\n", "<unk>"])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.add_special_tokens(SPECIAL)
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<|endoftext|>", eos_token="<|im_end|>",
                                   unk_token="<unk>")
    fast.save_pretrained(path)
    image_processor = Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=56 * 56)
    image_processor.save_pretrained(path)
    for name in ("processor_config.json", "preprocessor_config.json"):
        cfg = json.loads((path / name).read_text()) if (path / name).is_file() else {}
        cfg["processor_class"] = "Qwen2VLProcessor"
        (path / name).write_text(json.dumps(cfg))
    (path / "chat_template.json").write_text(json.dumps({"chat_template": TEMPLATE}))
    config = Qwen2VLConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=4096,
                         rope_scaling={"type": "mrope", "mrope_section": [4, 2, 2]}),
        vision_config=dict(depth=1, embed_dim=32, hidden_size=32, num_heads=2, mlp_ratio=2, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2),
        image_token_id=vocab["<|image_pad|>"], video_token_id=vocab["<|video_pad|>"],
        vision_start_token_id=vocab["<|vision_start|>"], vision_end_token_id=vocab["<|vision_end|>"],
        bos_token_id=0, eos_token_id=vocab["<|im_end|>"], pad_token_id=0)
    torch.manual_seed(0)
    Qwen2VLForConditionalGeneration(config).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory):
    return tiny_qwen2_vl(tmp_path_factory.mktemp("vlm") / "model")


def test_tiny_qwen2_vl_through_vipo_judge(tmp_path, tiny_vlm, capsys):
    folder = tmp_path / "videos"
    video_folder(folder)
    out = tmp_path / "j.jsonl"
    args = ["judge", str(folder), "--critic", "vlm", "--model", str(tiny_vlm), "--out", str(out), "--quiet",
            "--set", "frames=2", "--set", "frame_size=56", "--set", "max_tokens=6", "--set", "batch_size=12",
            "--set", "retries=1", "--set", "device=cpu"]
    assert main(args + ["--set", "max_unparseable=1.0"]) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 4 and all("error" in r and "labels" not in r for r in rows)
    assert all(r["raw"].count("attempt 2") == 3 for r in rows)  # 3 dimensions, each asked twice
    info = json.loads(capsys.readouterr().out.split("\njudgments:")[0])
    assert info["unparseable_rate"] == 1.0
    # with the default threshold the stage stops, one line, non-zero exit; the rows asked again are replaced
    assert main(args) == 2
    assert "unparseable" in capsys.readouterr().err


def test_tiny_qwen2_vl_through_vipo_run(tmp_path, tiny_vlm, tiny_model_dir, monkeypatch):
    """The real processor and model answer every question; each answer then ends with the verdict a trained critic
    would give (a random model never writes one), so the run judges, pairs, trains and evaluates."""
    from vipo.critics.vlm import VLMCritic

    real, generated = VLMCritic.complete, []

    def complete(self, queries):
        answers = real(self, queries)
        generated.extend(answers)
        return [f"{a}\n{pixel_verdict(split_videos(q.parts))}" for q, a in zip(queries, answers)]

    monkeypatch.setattr(VLMCritic, "complete", complete)
    out = tmp_path / "run"
    assert main(run_one_round(tiny_model_dir, out, "judge.critic=vlm", f"judge.model={tiny_vlm}", "judge.frames=2",
                              "judge.frame_size=56", "judge.max_tokens=4", "judge.batch_size=16",
                              "judge.device=cpu")) == 0
    judgments, pairs, info = check_round(out, "vlm")
    assert info["unparseable_rate"] == 0.0 and info["consistency_rate"] == 1.0 and len(pairs) == 3
    assert len(generated) == 3 * len(judgments) + 2 * 2 * 3  # + rounds 0 and 1's eval: 2 clips, 3 dimensions
    raws = "\n".join(j["raw"] for j in judgments.values())
    assert all(j["raw"].count("Verdict: ") == 3 for j in judgments.values())
    assert all(isinstance(a, str) and a in raws for a in generated[6:-6])  # the model's own text, kept in the raw
    results = [json.loads(x) for x in (out / "round-1" / "eval" / "results.jsonl").read_text().splitlines()]
    assert len(results) == 2 and all("labels" in r for r in results)
