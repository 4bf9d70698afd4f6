"""Instruction tuning of a VLM critic on critic-training records, through TRL's ``SFTTrainer``, LoRA by default.

Each record becomes one conversation, built by the same code that asks the ``vlm`` critic at judging time
(:class:`vipo.critics.llm.Questions` and :func:`vipo.critics.vlm.chat_messages`): the system text, then the video's
``frames`` frames sampled uniformly in time and letterboxed to ``frame_size`` (never cropped) as images, and the
question of the record's dimension from the critic's templates (pairwise: ``Video A:`` and its frames, then
``Video B:``). The target is the reasoning (the reasons of the annotators who voted for the verdict) followed by the
verdict line that :func:`vipo.critics.parsing.parse_verdict` reads, e.g.::

    The square drifts up instead of moving left.
    Verdict: Bad

TRL trains on the completion only (``completion_only_loss``; its vision collator renders the prompt with the
processor's chat template and ``add_generation_prompt``, as the critic does). Why TRL: it is the maintained SFT
trainer for image-text-to-text models in the transformers stack (vision prompt-completion data, PEFT, checkpoints
and resumption from transformers' Trainer); nothing here is TRL-specific beyond ``SFTConfig``.

The output folder is a PEFT adapter (``adapter_config.json`` + ``adapter_model.safetensors``) that
``vipo judge --critic vlm --model BASE --set adapter=DIR`` loads, with ``critic.json``, ``loss.jsonl`` and
``loss.png``; ``merge: true`` also writes ``DIR/merged``, a full model folder (``--model DIR/merged``). An
interrupted run resumes from the last checkpoint under ``DIR/checkpoints`` when run again.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import torch

from ...config import JudgeConfig
from ...device import resolve_device
from ...errors import UserError
from ...io import atomic
from ..base import Video
from ..llm import Questions
from ..vlm import chat_messages, load_processor
from .data import Record

log = logging.getLogger(__name__)


def target(record: Record) -> str:
    """The answer the critic learns to give: the voters' reasons, then the verdict line."""
    reasons = list(dict.fromkeys(" ".join(r.split()) for r in record.reasons if r.strip()))
    text = " ".join(r if r.endswith((".", "!", "?")) else r + "." for r in reasons)
    return (text + "\n" if text else "") + f"Verdict: {record.verdict}"


class RecordDataset:
    """Records as TRL vision prompt-completion examples, built lazily (frames are decoded when a batch needs them)."""

    def __init__(self, records: list[Record], questions: Questions):
        self.records, self.questions = records, questions

    def __len__(self) -> int:
        return len(self.records)

    def video(self, path: Path, prompt: str) -> Video:
        from ...io.video import read_mp4

        try:
            return Video(prompt, read_mp4(path), str(path))
        except Exception as e:  # noqa: BLE001
            raise UserError(f"{path}: not a usable video ({type(e).__name__}: {e})") from None

    def __getitem__(self, i: int) -> dict:
        from PIL import Image

        r = self.records[i]
        vids = [self.video(p, r.prompt) for p in r.paths()]
        q = (
            self.questions.query_pointwise(vids[0], r.dimension)
            if r.task == "pointwise"
            else self.questions.query_pairwise(vids[0], vids[1], r.dimension)
        )
        return {
            "prompt": chat_messages(q),
            "completion": [{"role": "assistant", "content": [{"type": "text", "text": target(r)}]}],
            "images": [Image.fromarray(p) for p in q.parts if not isinstance(p, str)],
        }

    def as_hf(self):
        """A ``datasets.Dataset`` of record indices whose rows are built on access (``with_transform``)."""
        import datasets

        def build(batch):
            rows = [self[i] for i in batch["record"]]
            return {k: [r[k] for r in rows] for k in ("prompt", "completion", "images")}

        return datasets.Dataset.from_dict({"record": list(range(len(self)))}).with_transform(build)


def _loss_logger(out: Path, rows: list[dict]):
    from transformers import TrainerCallback

    class LossLog(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                rows.append(
                    {
                        "step": state.global_step,
                        "epoch": round(state.epoch or 0, 4),
                        "loss": logs["loss"],
                        **({"lr": logs["learning_rate"]} if "learning_rate" in logs else {}),
                    }
                )
                atomic.write_text(out / "loss.jsonl", "".join(json.dumps(r) + "\n" for r in rows))

    return LossLog()


def train_vlm(train: list[Record], test: list[Record], out: Path, cfg, info: dict, progress: bool = True) -> dict:
    from peft import LoraConfig
    from transformers import AutoModelForImageTextToText
    from trl import SFTConfig, SFTTrainer

    from ...models import allow_pickle
    from .train import evaluate_records, plot_loss

    device = resolve_device(cfg.device)
    cuda = device.startswith("cuda")
    dtype = {"auto": torch.bfloat16 if cuda else torch.float32, "bfloat16": torch.bfloat16, "float32": torch.float32}[
        cfg.dtype
    ]
    if not Path(cfg.model).exists():
        log.info("critic train: %s is not a folder; loading it from the local Hugging Face cache", cfg.model)
    processor = load_processor(cfg.model)
    if processor.tokenizer.pad_token is None:
        processor.tokenizer.pad_token = processor.tokenizer.eos_token
    model = AutoModelForImageTextToText.from_pretrained(cfg.model, dtype=dtype, use_safetensors=not allow_pickle())
    judge = JudgeConfig(
        critic="vlm", model=cfg.model, frames=cfg.frames, frame_size=cfg.frame_size, prompts_dir=cfg.prompts_dir
    )
    dataset = RecordDataset(train, Questions(judge))
    out.mkdir(parents=True, exist_ok=True)
    targets = [t.strip() for t in cfg.lora_targets.split(",")] if cfg.lora_targets != "all-linear" else "all-linear"
    peft = (
        LoraConfig(
            r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=0.05, target_modules=targets, task_type="CAUSAL_LM"
        )
        if cfg.lora
        else None
    )
    args = SFTConfig(
        output_dir=str(out / "checkpoints"),
        num_train_epochs=cfg.epochs or 3,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.batch_size or 1,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.lr or 1e-4,
        weight_decay=cfg.weight_decay,
        lr_scheduler_type="cosine",
        warmup_steps=0.03,
        logging_steps=1,
        save_strategy="steps",
        save_steps=200,
        save_total_limit=2,
        report_to=[],
        seed=cfg.seed,
        bf16=dtype == torch.bfloat16,
        use_cpu=not cuda,
        completion_only_loss=True,
        max_length=None,
        remove_unused_columns=False,
        gradient_checkpointing=cfg.gradient_checkpointing,
        dataloader_num_workers=0,
        disable_tqdm=not progress,
    )
    rows: list[dict] = []

    class Trainer(SFTTrainer):
        def _save(self, output_dir=None, state_dict=None):
            # checkpoints hold the adapter and the optimizer; the processor is the base model's (and the one
            # assembled without torchvision cannot save itself)
            processing_class, self.processing_class = self.processing_class, None
            try:
                super()._save(output_dir, state_dict)
            finally:
                self.processing_class = processing_class

    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=dataset.as_hf(),
        processing_class=processor,
        peft_config=peft,
        callbacks=[_loss_logger(out, rows)],
    )
    resume = any((out / "checkpoints").glob("checkpoint-*"))
    t0 = time.time()
    trainer.train(resume_from_checkpoint=resume or None)
    info.update(
        train_seconds=round(time.time() - t0, 1),
        device=device,
        base=cfg.model,
        frames=cfg.frames,
        frame_size=cfg.frame_size,
        steps=trainer.state.global_step,
        final_loss=rows[-1]["loss"] if rows else None,
        trainer="trl.SFTTrainer",
    )
    trained = trainer.model
    trained.save_pretrained(str(out))
    if rows:
        plot_loss(rows, out / "loss.png", "step")
    if cfg.merge:
        _write_merged(trained, processor, cfg.model, out / "merged")
    if cfg.eval and test:
        from ..vlm import VLMCritic

        critic = VLMCritic(
            JudgeConfig(
                critic="vlm",
                model=cfg.model,
                frames=cfg.frames,
                frame_size=cfg.frame_size,
                prompts_dir=cfg.prompts_dir,
                device=device,
                max_tokens=256,
            ),
            model=_merged_copy(trained),
            processor=processor,
        )
        res = evaluate_records(critic, test, truth="labels")
        atomic.write_json(out / "eval.json", {"split": "test", "labels": res})
    atomic.write_json(out / "critic.json", info)
    shutil.rmtree(out / "checkpoints", ignore_errors=True)
    atomic.write_text(out / atomic.DONE_MARKER, "ok\n")
    return info


def _merged_copy(peft_model):
    """A plain model with the adapter merged, leaving the trained PEFT model as it is."""
    import copy

    return copy.deepcopy(peft_model).merge_and_unload()


def _write_merged(peft_model, processor, base: str, folder: Path) -> None:
    merged = _merged_copy(peft_model)
    merged.save_pretrained(str(folder))
    try:
        processor.save_pretrained(str(folder))
    except Exception:  # noqa: BLE001  (an images-only processor may not save: copy the base's files instead)
        src = Path(base)
        for f in src.iterdir() if src.is_dir() else []:
            if f.is_file() and not f.name.endswith((".safetensors", ".bin")) and f.name != "config.json":
                shutil.copy2(f, folder / f.name)
    if Path(base).is_dir():
        for name in ("chat_template.json", "chat_template.jinja", "preprocessor_config.json", "processor_config.json"):
            if (Path(base) / name).is_file() and not (folder / name).is_file():
                shutil.copy2(Path(base) / name, folder / name)
