"""vipo.critics.vlm: the chat messages of a question, the processor assembled without torchvision, the adapter
check, and batched generation (a tiny random Qwen2-VL built in code: tests/critic_helpers.py)."""

import numpy as np
import pytest
import torch

from tests.critic_helpers import tiny_qwen2_vl
from vipo.critics.llm import Query
from vipo.critics.options import VLMOptions
from vipo.critics.vlm import VLMCritic, chat_messages, load_processor, with_adapter
from vipo.errors import UserError

IMG = np.zeros((28, 28, 3), np.uint8)


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory):
    return tiny_qwen2_vl(tmp_path_factory.mktemp("vlm") / "model")


@pytest.fixture()
def no_torchvision(monkeypatch):
    """AutoProcessor fails as it does where torchvision is missing (whether or not it is installed here)."""
    import transformers

    def fail(*a, **k):
        raise ImportError("Qwen2VLVideoProcessor requires the Torchvision library but it was not found")

    monkeypatch.setattr(transformers.AutoProcessor, "from_pretrained", fail)


def test_chat_messages_keep_text_and_image_placeholders_in_order():
    q = Query("be strict", ["Video A:", IMG, IMG, "Video B:", IMG, "Which is better?"])
    assert chat_messages(q) == [
        {"role": "system", "content": [{"type": "text", "text": "be strict"}]},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Video A:"},
                {"type": "image"},
                {"type": "image"},
                {"type": "text", "text": "Video B:"},
                {"type": "image"},
                {"type": "text", "text": "Which is better?"},
            ],
        },
    ]


def test_processor_without_torchvision_is_assembled_from_its_parts(tiny_vlm, no_torchvision):
    p = load_processor(str(tiny_vlm))
    assert type(p).__name__ == "Qwen2VLProcessor"
    assert getattr(p, "video_processor", None) is None and p.image_processor is not None
    # the chat template came from chat_template.json
    text = p.apply_chat_template(chat_messages(Query("S", [IMG, "hi"])), add_generation_prompt=True, tokenize=False)
    assert text == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>hi<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_processor_class_unknown_without_torchvision_is_one_line(tmp_path, no_torchvision):
    (tmp_path / "preprocessor_config.json").write_text('{"image_mean": [0.5]}')
    with pytest.raises(UserError) as e:
        load_processor(str(tmp_path))
    assert str(e.value) == f"judge.model: {tmp_path}: cannot tell its processor class without torchvision"
    (tmp_path / "preprocessor_config.json").write_text('{"processor_class": "NoSuchProcessor"}')
    with pytest.raises(UserError, match="cannot tell its processor class"):
        load_processor(str(tmp_path))


def test_an_import_error_about_something_else_is_not_swallowed(tmp_path, monkeypatch):
    import transformers

    def fail(*a, **k):
        raise ImportError("needs sentencepiece")

    monkeypatch.setattr(transformers.AutoProcessor, "from_pretrained", fail)
    with pytest.raises(ImportError, match="sentencepiece"):
        load_processor(str(tmp_path))


def test_adapter_folder_without_adapter_config_is_refused(tmp_path):
    (tmp_path / "critic.json").write_text("{}")
    with pytest.raises(UserError) as e:
        with_adapter(torch.nn.Linear(1, 1), str(tmp_path))
    assert str(e.value) == f"judge.adapter: {tmp_path}: not a PEFT adapter folder (no adapter_config.json)"


class Recorder(torch.nn.Module):
    """Wraps the tiny model: records each generate() call's batch and arguments."""

    def __init__(self, model):
        super().__init__()
        self.inner, self.calls = model, []

    def generate(self, **kw):
        self.calls.append({k: v for k, v in kw.items() if not torch.is_tensor(v)} | {"rows": len(kw["input_ids"])})
        return self.inner.generate(**kw)


@pytest.fixture(scope="module")
def loaded(tiny_vlm):
    """The tiny model and its processor, loaded once (each test wraps the model in a fresh Recorder)."""
    from transformers import AutoModelForImageTextToText

    return AutoModelForImageTextToText.from_pretrained(str(tiny_vlm)), load_processor(str(tiny_vlm))


def make(tiny_vlm, loaded, **kw):
    opts = VLMOptions(model=str(tiny_vlm), device="cpu", max_tokens=4, **kw)
    model, processor = loaded
    return VLMCritic(opts, model=Recorder(model), processor=processor)


def questions(n):
    # questions of different lengths, so the batch is padded
    return [Query("sys", [IMG, "q" + "?" * i]) for i in range(n)]


def test_complete_batches_by_batch_size_left_padded_and_greedy(tiny_vlm, loaded):
    c = make(tiny_vlm, loaded, batch_size=2)
    assert c.processor.tokenizer.padding_side == "left" and c.device == "cpu"
    got = c.complete(questions(3))
    assert len(got) == 3 and all(isinstance(a, str) for a in got)
    calls = c.model.calls
    assert [k["rows"] for k in calls] == [2, 1]
    assert all(k["max_new_tokens"] == 4 and k["do_sample"] is False and "temperature" not in k for k in calls)
    # left padding: a question's greedy answer does not depend on the batch it is asked in
    one = make(tiny_vlm, loaded, batch_size=1).complete(questions(3))
    assert got == one
    # only the new tokens are decoded: the question's text is not echoed
    assert not any("sys" in a or "<|im_start|>" in a for a in got)


def test_complete_samples_with_the_temperature(tiny_vlm, loaded):
    c = make(tiny_vlm, loaded, batch_size=4, temperature=0.7)
    torch.manual_seed(0)
    assert len(c.complete(questions(2))) == 2
    (call,) = c.model.calls
    assert call["do_sample"] is True and call["temperature"] == 0.7 and call["rows"] == 2
