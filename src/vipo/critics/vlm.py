"""The ``vlm`` critic: a local transformers image-text-to-text model (Qwen2.5-VL, Qwen3-VL, LLaVA-OneVision, ...).

Loaded with ``AutoProcessor`` and ``AutoModelForImageTextToText`` from ``judge.model``; the LLM critic's questions
are rendered with the processor's chat template, frames passed as a list of PIL images (never as a video: video
processors need torchvision, which is not required here), and answered by batched greedy (or ``temperature``)
generation, ``batch_size`` questions at a time, left-padded.

Without torchvision, ``AutoProcessor`` fails for models that ship a video processor (Qwen-VL's): the processor is
then assembled from its tokenizer and image processor with the video processor left out, which serves images.
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path

import torch
from PIL import Image

from ..errors import UserError
from .llm import LLMCritic, Query
from .options import VLMOptions

log = logging.getLogger(__name__)


@contextlib.contextmanager
def _allow_missing_parts():
    """ProcessorMixin checks each part's class, and the video processor's base class needs torchvision."""
    from transformers.processing_utils import ProcessorMixin

    orig = ProcessorMixin.check_argument_for_proper_class

    def check(self, name, arg):
        return None if arg is None else orig(self, name, arg)

    ProcessorMixin.check_argument_for_proper_class = check
    try:
        yield
    finally:
        ProcessorMixin.check_argument_for_proper_class = orig


def images_only_processor(cls, image_processor, tokenizer, chat_template: str | None):
    """A processor of class ``cls`` without its video processor."""
    with _allow_missing_parts():
        kwargs = {"video_processor": None} if "video_processor" in cls.get_attributes() else {}
        return cls(image_processor=image_processor, tokenizer=tokenizer, chat_template=chat_template, **kwargs)


def load_processor(path: str, trust_remote_code: bool = False):
    import transformers
    from transformers import AutoImageProcessor, AutoProcessor, AutoTokenizer

    try:
        return AutoProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
    except ImportError as e:
        if "torchvision" not in str(e).lower():
            raise
    log.info("vlm critic: no torchvision; assembling the processor without its video processor")
    root = Path(path)
    name = None
    for f in ("processor_config.json", "preprocessor_config.json"):
        if (root / f).is_file():
            name = name or json.loads((root / f).read_text()).get("processor_class")
    if name is None or not hasattr(transformers, name):
        raise UserError(f"judge.model: {path}: cannot tell its processor class without torchvision")
    template = None
    if (root / "chat_template.jinja").is_file():
        template = (root / "chat_template.jinja").read_text()
    elif (root / "chat_template.json").is_file():
        template = json.loads((root / "chat_template.json").read_text())["chat_template"]
    tok = AutoTokenizer.from_pretrained(path)
    return images_only_processor(
        getattr(transformers, name),
        AutoImageProcessor.from_pretrained(path),
        tok,
        template or getattr(tok, "chat_template", None),
    )


def chat_messages(q: Query) -> list[dict]:
    """A question as chat messages: the system text, then the user's text and image placeholders in order (the
    images themselves go to the processor separately, in the same order)."""
    content = [{"type": "text", "text": p} if isinstance(p, str) else {"type": "image"} for p in q.parts]
    return [{"role": "system", "content": [{"type": "text", "text": q.system}]}, {"role": "user", "content": content}]


def with_adapter(model, adapter: str):
    """The model with a PEFT LoRA adapter folder (``vipo critic train``'s output) merged in."""
    from peft import PeftModel

    path = Path(adapter)
    if not (path / "adapter_config.json").is_file():
        raise UserError(f"judge.adapter: {adapter}: not a PEFT adapter folder (no adapter_config.json)")
    meta = path / "critic.json"
    if meta.is_file():
        log.info("vlm critic: adapter %s (trained on %s)", adapter, json.loads(meta.read_text()).get("data", "?"))
    return PeftModel.from_pretrained(model, str(path)).merge_and_unload()


class VLMCritic(LLMCritic):
    name = "vlm"
    Options = VLMOptions

    def __init__(self, cfg: VLMOptions, model=None, processor=None):
        super().__init__(cfg)
        from ..device import resolve_device

        device = resolve_device(cfg.device)  # (under a launcher: this rank's GPU)
        if model is None:
            from transformers import AutoModelForImageTextToText

            if not Path(cfg.model).exists():
                log.info("vlm critic: %s is not a folder; loading it from the local Hugging Face cache", cfg.model)
            dtype = {
                "auto": torch.bfloat16 if device.startswith("cuda") else torch.float32,
                "bfloat16": torch.bfloat16,
                "float16": torch.float16,
                "float32": torch.float32,
            }[cfg.dtype]
            from ..models import allow_pickle, check_weights

            if Path(cfg.model).is_dir():
                check_weights(Path(cfg.model))
            model = AutoModelForImageTextToText.from_pretrained(
                cfg.model, dtype=dtype, use_safetensors=not allow_pickle(), trust_remote_code=cfg.trust_remote_code
            )
        if cfg.adapter:
            model = with_adapter(model, cfg.adapter)
        self.model = model.to(device).eval()
        self.processor = processor or load_processor(cfg.model, cfg.trust_remote_code)
        self.processor.tokenizer.padding_side = "left"
        self.device = device

    def messages(self, q: Query) -> list[dict]:
        return chat_messages(q)

    @torch.no_grad()
    def complete(self, queries: list[Query]) -> list[str | Exception]:
        out: list[str | Exception] = []
        for i in range(0, len(queries), self.cfg.batch_size):
            chunk = queries[i : i + self.cfg.batch_size]
            texts = [
                self.processor.apply_chat_template(self.messages(q), add_generation_prompt=True, tokenize=False)
                for q in chunk
            ]
            images = [[Image.fromarray(p) for p in q.parts if not isinstance(p, str)] for q in chunk]
            inputs = self.processor(text=texts, images=images, padding=True, return_tensors="pt").to(self.device)
            sample = self.cfg.temperature > 0
            gen = self.model.generate(
                **inputs,
                max_new_tokens=self.cfg.max_tokens,
                do_sample=sample,
                **({"temperature": self.cfg.temperature} if sample else {}),
            )
            out += self.processor.batch_decode(gen[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        return out
