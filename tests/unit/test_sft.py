"""vipo.critics.learn.sft's own pieces: the target text a record teaches, the conversations a record becomes (frames
sampled and letterboxed, questions from the templates, pairwise ``Video A:``/``Video B:``), the loss log, and what
one tiny training leaves in its output folder (the whole ``vipo critic train`` with a learning check is in
tests/integration/test_critic_train_cli.py)."""

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from vipo.config import JudgeConfig
from vipo.critics.learn import sft
from vipo.critics.learn.data import Record
from vipo.critics.llm import Questions
from vipo.errors import UserError


def record(task="pointwise", verdict="Bad", reasons=(), videos=("a.mp4",), root=".", dimension="motion"):
    return Record(
        f"r#{dimension}", task, dimension, "a red circle moving left", list(videos), "", verdict, {verdict: 1},
        list(reasons), 1, "train", root=Path(root),
    )  # fmt: skip


def test_the_target_is_the_verdict_line_alone_without_reasons():
    assert sft.target(record(verdict="Good")) == "Verdict: Good"
    assert sft.target(record(verdict="Tie", reasons=["", "   "])) == "Verdict: Tie"


def test_the_target_joins_the_reasons_as_sentences_then_the_verdict():
    reasons = ["The square drifts up", "it  is\nblurry!", "The square drifts up", "Wrong way."]
    # duplicates once, whitespace collapsed, a full stop added where none ends the reason
    assert sft.target(record(reasons=reasons)) == "The square drifts up. it is blurry! Wrong way.\nVerdict: Bad"


def test_the_target_is_what_the_critic_parses():
    from vipo.critics.parsing import parse_verdict

    verdict, _ = parse_verdict(sft.target(record(verdict="Normal", reasons=["fine?"])), ("Good", "Normal", "Bad"))
    assert verdict == "Normal"


def frames(n, h, w):
    """``n`` flat frames, frame i at level 10 * (i + 1)."""
    return np.stack([np.full((h, w, 3), 10 * (i + 1), np.uint8) for i in range(n)])


@pytest.fixture
def templates(tmp_path):
    folder = tmp_path / "prompts"
    folder.mkdir()
    (folder / "system.txt").write_text("SYS")
    for d in ("semantic", "fidelity", "motion"):
        (folder / f"pointwise_{d}.txt").write_text(f"P-{d} {{prompt}} ({{n_frames}})")
        (folder / f"pairwise_{d}.txt").write_text(f"AB-{d} {{prompt}} ({{n_frames}})")
    return folder


@pytest.fixture
def dataset(templates, monkeypatch):
    """Records read from stand-in clips: a.mp4 is 5 frames of 16 x 32, b.mp4 3 frames of 32 x 16."""
    clips = {"a.mp4": frames(5, 16, 32), "b.mp4": frames(3, 32, 16) + 100}
    monkeypatch.setattr("vipo.io.video.read_mp4", lambda p: clips[p.name])
    cfg = JudgeConfig(critic="vlm", model="m", frames=3, frame_size=8, prompts_dir=str(templates))
    recs = [
        record(reasons=["drifts up"]),
        record("pairwise", "A", videos=("a.mp4", "b.mp4"), dimension="semantic"),
    ]
    return sft.RecordDataset(recs, Questions(cfg))


def test_a_pointwise_record_is_the_system_frames_and_question(dataset):
    assert len(dataset) == 2
    ex = dataset[0]
    assert ex["prompt"] == [
        {"role": "system", "content": [{"type": "text", "text": "SYS"}]},
        {"role": "user", "content": [{"type": "image"}] * 3 + [{"type": "text", "text": "P-motion a red circle moving left (3)"}]},
    ]  # fmt: skip
    assert ex["completion"] == [
        {"role": "assistant", "content": [{"type": "text", "text": "drifts up.\nVerdict: Bad"}]}
    ]


def test_frames_are_sampled_first_to_last_and_letterboxed_never_cropped(dataset):
    imgs = [np.asarray(i) for i in dataset[0]["images"]]
    assert [i.shape for i in imgs] == [(8, 8, 3)] * 3
    # 5 frames, 3 shown: 0, 2, 4 (levels 10, 30, 50); 16 x 32 fits an 8 square as 4 x 8, rows 2..5, black above and below
    for img, level in zip(imgs, (10, 30, 50)):
        assert (img[2:6] == level).all()
        assert (img[:2] == 0).all() and (img[6:] == 0).all()


def test_a_pairwise_record_shows_video_a_then_video_b(dataset):
    ex = dataset[1]
    user = ex["prompt"][1]["content"]
    texts = [(i, c["text"]) for i, c in enumerate(user) if c["type"] == "text"]
    # A: 3 of 5 frames; B: all 3 of its 3
    assert texts == [(0, "Video A:"), (4, "Video B:"), (8, "AB-semantic a red circle moving left (3)")]
    imgs = [np.asarray(i) for i in ex["images"]]
    assert len(imgs) == 6
    # B is 32 tall, 16 wide: 8 x 4 in columns 2..5, levels 110, 120, 130
    for img, level in zip(imgs[3:], (110, 120, 130)):
        assert (img[:, 2:6] == level).all() and (img[:, :2] == 0).all() and (img[:, 6:] == 0).all()
    assert ex["completion"][0]["content"][0]["text"] == "Verdict: A"


def test_a_video_that_does_not_decode_is_one_line_naming_it(tmp_path, templates):
    (tmp_path / "a.mp4").write_bytes(b"not a video")
    cfg = JudgeConfig(critic="vlm", model="m", frames=2, frame_size=8, prompts_dir=str(templates))
    ds = sft.RecordDataset([record(root=tmp_path)], Questions(cfg))
    with pytest.raises(UserError, match=rf"^{tmp_path / 'a.mp4'}: not a usable video \("):
        ds[0]


def test_the_hf_dataset_builds_rows_on_access(dataset):
    hf = dataset.as_hf()
    assert len(hf) == 2 and hf.column_names == ["record"]
    row = hf[1]
    assert row["completion"] == dataset[1]["completion"] and len(row["images"]) == 6


def test_the_loss_log_keeps_the_loss_rows_and_rewrites_the_file(tmp_path):
    rows = []
    cb = sft._loss_logger(tmp_path, rows)
    state = SimpleNamespace(global_step=1, epoch=0.123456)
    cb.on_log(None, state, None, logs={"loss": 2.5, "learning_rate": 1e-4})
    cb.on_log(None, state, None, logs={"train_runtime": 3.0})  # no loss: not a row
    cb.on_log(None, SimpleNamespace(global_step=2, epoch=None), None, logs={"loss": 1.5})
    want = [{"step": 1, "epoch": 0.1235, "loss": 2.5, "lr": 1e-4}, {"step": 2, "epoch": 0, "loss": 1.5}]
    assert rows == want
    assert [json.loads(x) for x in (tmp_path / "loss.jsonl").read_text().splitlines()] == want


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two optimizer steps of the tiny Qwen2-VL on two records, merged; one thread (a 32-wide model)."""
    from tests.critic_helpers import tiny_qwen2_vl
    from vipo.critics.learn.train import CriticTrainConfig
    from vipo.io.video import write_mp4

    tmp = tmp_path_factory.mktemp("sft")
    model = tiny_qwen2_vl(tmp / "model")
    prompts = tmp / "prompts"
    prompts.mkdir()
    (prompts / "system.txt").write_text("J.")
    for d in ("semantic", "fidelity", "motion"):
        (prompts / f"pointwise_{d}.txt").write_text(f"{d[0]}?")
        (prompts / f"pairwise_{d}.txt").write_text(f"{d[0]}?")
    write_mp4(tmp / "a.mp4", frames(2, 56, 56))
    recs = [record(verdict="Good", root=tmp), record(verdict="Bad", reasons=["x"], root=tmp)]
    cfg = CriticTrainConfig(
        arch="vlm", model=str(model), max_steps=2, batch_size=1, grad_accum=1, frames=1, frame_size=56,
        prompts_dir=str(prompts), device="cpu", eval=False, merge=True, lora_rank=2,
    )  # fmt: skip
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        info = sft.train_vlm(recs, [], tmp / "critic", cfg, {"arch": "vlm"}, progress=False)
    finally:
        torch.set_num_threads(before)
    return tmp / "critic", model, info


def test_the_output_folder_is_a_finished_adapter_with_its_record(trained):
    out, model, info = trained
    names = {p.name for p in out.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "critic.json", "loss.jsonl", "loss.png"} <= names
    assert "checkpoints" not in names and (out / "COMPLETE").is_file() and "eval.json" not in names  # eval=false
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 2
    assert json.loads((out / "critic.json").read_text()) == info
    assert info["steps"] == 2 and info["base"] == str(model) and info["trainer"] == "trl.SFTTrainer"
    assert (info["device"], info["frames"], info["frame_size"]) == ("cpu", 1, 56)
    loss = [json.loads(x) for x in (out / "loss.jsonl").read_text().splitlines()]
    assert [r["step"] for r in loss] == [1, 2] and info["final_loss"] == loss[-1]["loss"]


def test_merge_writes_a_full_model_folder_the_critic_loads(trained):
    out, model, _ = trained
    merged = out / "merged"
    assert (merged / "config.json").is_file() and (merged / "chat_template.json").is_file()
    assert not (merged / "adapter_config.json").exists()
    from transformers import AutoModelForImageTextToText

    m = AutoModelForImageTextToText.from_pretrained(merged)
    base = AutoModelForImageTextToText.from_pretrained(model)
    assert m.config.text_config.hidden_size == 32
    assert not any("lora" in k for k in m.state_dict())
    # the adapter moved the weights it targets: the merged model is not the base
    assert any(not torch.equal(v, base.state_dict()[k]) for k, v in m.state_dict().items())
