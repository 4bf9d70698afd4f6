"""Tests of vipo.critics.reward."""

import json
import math

import numpy as np
import pytest
import tiny_reward
import torch

from tests.critic_helpers import video_folder
from vipo.cli import main
from vipo.config import JudgeConfig
from vipo.critics import reward as reward_critic
from vipo.critics.base import Video
from vipo.errors import UserError
from vipo.models import set_allow_pickle


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("reward")
    base = tiny_reward.base(root / "qwen2-vl")
    expected = tiny_reward.videoalign(root / "VideoReward", base)
    return root / "VideoReward", base, expected


def _critic(checkpoint, **over):
    folder, base, _ = checkpoint
    cfg = JudgeConfig(critic="reward", model=str(folder), reward_base=str(base), device="cpu", **over)
    set_allow_pickle(True)
    try:
        return reward_critic.RewardCritic(cfg)
    finally:
        set_allow_pickle(False)


def _clips(n=3, frames=12, side=40):
    rng = np.random.default_rng(0)
    return [
        Video(f"a red kite number {i} over a beach", rng.integers(0, 256, (frames, side, side + 8, 3), np.uint8))
        for i in range(n)
    ]


def test_frame_count_and_sides_follow_qwen_vl_rules():
    assert reward_critic.frame_count(49, 8.0, fps=2.0) == 12  # 49 / 8 * 2 = 12.25 -> 12 (even)
    assert reward_critic.frame_count(9, 8.0, fps=2.0) == 4  # at least 4
    assert (
        reward_critic.frame_count(3, 8.0, fps=2.0) == 2 and reward_critic.frame_count(49, 8.0, nframes=7) == 8
    )  # even, within the clip
    # 480 x 720 rounds to 476 x 728 = 346,528 pixels > 448^2: scaled by sqrt(345,600 / 200,704) and floored to 28s
    assert reward_critic.fit_sides(480, 720, 448 * 448) == (364, 532)
    # small frames are scaled up to VideoAlign's floor of 128 x 28 x 28 pixels (that rule wins over max_pixels)
    assert reward_critic.fit_sides(32, 32, 200704) == (336, 336) and reward_critic.fit_sides(40, 48, 56 * 56) == (
        308,
        364,
    )


def test_video_patches_match_the_image_processor_for_a_still_clip():
    """A still 2-frame clip is one temporal patch of two equal frames: exactly what Qwen2-VL's image processor makes
    of the frame (it repeats an image over the temporal patch); distinct frames keep their order in each row."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    rng = np.random.default_rng(1)
    frame = rng.integers(0, 256, (56, 84, 3), np.uint8)
    ours, grid = reward_critic.video_patches(torch.from_numpy(np.stack([frame, frame])).permute(0, 3, 1, 2).float())
    theirs = Qwen2VLImageProcessorPil(min_pixels=56 * 84, max_pixels=56 * 84)(images=[frame], return_tensors="np")
    assert grid == (1, 4, 6) and tuple(theirs["image_grid_thw"][0]) == grid
    assert np.allclose(ours.numpy(), theirs["pixel_values"], atol=1e-5)
    moving = torch.stack([torch.zeros(3, 28, 28), torch.full((3, 28, 28), 255.0), torch.zeros(3, 28, 28)])
    p, g = reward_critic.video_patches(moving)
    assert g == (2, 2, 2) and p.shape == (8, 3 * 2 * 14 * 14)
    row = p[0].view(3, 2, 14, 14)  # (channel, frame in the temporal patch, y, x): frame 0 dark, frame 1 bright
    assert (row[:, 0] < 0).all() and (row[:, 1] > 0).all()
    assert torch.equal(p[4].view(3, 2, 14, 14)[:, 0], p[4].view(3, 2, 14, 14)[:, 1])  # the last frame, repeated


def _reference(checkpoint, inputs):
    """The same rewards computed another way: the base model with the changed weights set by their own names, the
    LoRA applied by peft (unmerged), the head read at the reward tokens."""
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2VLForConditionalGeneration

    _, base, exp = checkpoint
    model = Qwen2VLForConditionalGeneration.from_pretrained(base)
    model.resize_token_embeddings(len(exp["tokenizer"]))
    with torch.no_grad():
        state = model.state_dict()
        for k, v in exp["state"].items():
            state[k].copy_(v)
    modules = sorted(exp["lora"])
    model = get_peft_model(
        model, LoraConfig(r=tiny_reward.RANK, lora_alpha=tiny_reward.ALPHA, target_modules=modules, lora_dropout=0.0)
    )
    with torch.no_grad():
        for name, mod in model.named_modules():
            key = name.removeprefix("base_model.model.")
            if key in exp["lora"]:
                mod.lora_A["default"].weight.copy_(exp["lora"][key][0])
                mod.lora_B["default"].weight.copy_(exp["lora"][key][1])
        hidden = model.base_model.model.model(**inputs).last_hidden_state
        logits = hidden @ exp["head"].T
    ids = exp["tokenizer"].convert_tokens_to_ids(tiny_reward.REWARD)
    out = []
    for b in range(len(logits)):
        pos = [int((inputs["input_ids"][b] == t).nonzero()[0, 0]) for t in ids]
        out.append([float(logits[b, p, i]) for i, p in enumerate(pos)])
    return out


def test_videoalign_layout_loads_and_scores_like_the_reference(checkpoint):
    critic = _critic(checkpoint, batch_size=2)
    clips = _clips()
    backend = critic.backend
    raw = backend.raw(clips)
    assert [sorted(r) for r in raw] == [["MQ", "TA", "VQ"]] * 3
    inputs = backend.inputs(clips)
    ref = _reference(checkpoint, inputs)
    for r, want in zip(raw, ref):
        assert [r["VQ"], r["MQ"], r["TA"]] == pytest.approx(want, abs=1e-4)
    # one clip alone scores as in a padded batch; the question is VideoAlign's, with the reward tokens once each
    alone = backend.raw(clips[2:])[0]
    assert [alone[k] for k in "VQ MQ TA".split()] == pytest.approx([raw[2][k] for k in "VQ MQ TA".split()], abs=1e-4)
    text = "".join(backend.tokenizer.convert_ids_to_tokens(inputs["input_ids"][0]))
    assert all(text.count(t) == 1 for t in tiny_reward.REWARD) and "Textual prompt - a red kite number 0" in text
    assert int(inputs["video_grid_thw"][0][0]) == 2  # 12 frames at 8 fps and 2 per second: 4 frames, 2 temporal


def test_verdicts_from_normalised_scores(checkpoint):
    critic = _critic(checkpoint, reward_thresholds=[-0.2, 0.3], reward_tie_margin=0.05)
    clips = _clips()
    raw = critic.backend.raw(clips)
    points = critic.pointwise_many(clips)
    for r, p in zip(raw, points):
        z = {"fidelity": (r["VQ"] - 0.5) / 2.0, "motion": (r["MQ"] + 0.25) / 0.5, "semantic": r["TA"]}
        for d, v in z.items():
            assert p.labels[d] == ("Good" if v >= 0.3 else "Bad" if v < -0.2 else "Normal")
            assert p.scores[d] == pytest.approx(1 / (1 + math.exp(-v)), abs=1e-6)
        assert p.overall == pytest.approx(1 / (1 + math.exp(-np.mean(list(z.values())))), abs=1e-6)
        assert f"TA {r['TA']:.4f}" in p.raw and "thresholds Bad < -0.2" in p.raw
    one = critic.pointwise(clips[0])  # one clip is a batch of one: the same answer, graded scores and all
    assert (one.labels, one.scores, one.raw) == (points[0].labels, points[0].scores, points[0].raw)
    (ab,), (ba,) = critic.pairwise_many([(clips[0], clips[1])]), critic.pairwise_many([(clips[1], clips[0])])
    flip = {"A": "B", "B": "A", "Tie": "Tie"}
    assert {d: flip[v] for d, v in ab.verdicts.items()} == ba.verdicts and flip[ab.overall] == ba.overall
    (same,) = critic.pairwise_many([(clips[2], clips[2])])
    assert same.verdicts == {"semantic": "Tie", "fidelity": "Tie", "motion": "Tie"} and same.overall == "Tie"


def test_a_sequence_classification_vlm_scores_per_label(tmp_path):
    """Gemma 3's ...ForSequenceClassification: frames as images with the prompt, one output per id2label name."""
    from vipo.critics.llm import letterbox, sample_frames

    folder = tiny_reward.classifier(tmp_path / "clf", mean={"visual_quality": 1.0}, std={"visual_quality": 0.5})
    critic = reward_critic.RewardCritic(
        JudgeConfig(critic="reward", model=str(folder), device="cpu", frames=3, frame_size=28)
    )
    assert critic.mapped == {"text_alignment": "semantic", "visual_quality": "fidelity", "motion_quality": "motion"}
    clips = _clips(2)
    s = critic.scores(clips)
    backend = critic.backend
    from PIL import Image

    with torch.no_grad():  # the model's own logits on the same turn
        frames = [[Image.fromarray(letterbox(f, 28)) for f in sample_frames(v.frames, 3)] for v in clips]
        turn = [{"role": "user", "content": [{"type": "image"}] * 3 + [{"type": "text", "text": clips[0].prompt}]}]
        text = backend.processor.apply_chat_template(turn, tokenize=False)
        logits = backend.model(**backend.processor(text=[text], images=[frames[0]], return_tensors="pt")).logits[0]
    assert [s[0]["raw"][k] for k in backend.names] == pytest.approx(logits.tolist(), abs=1e-5)
    assert s[0]["dims"]["fidelity"] == pytest.approx((logits[1].item() - 1.0) / 0.5, abs=1e-5)
    assert s[0]["dims"]["semantic"] == pytest.approx(logits[0].item(), abs=1e-5)  # no mean/std: raw
    one = tiny_reward.classifier(tmp_path / "one", labels=("reward",))
    single = reward_critic.RewardCritic(
        JudgeConfig(critic="reward", model=str(one), device="cpu", frames=2, frame_size=28)
    )
    (p,) = single.pointwise_many(clips[:1])
    assert len(set(p.scores.values())) == 1  # one output serves every dimension


def test_pickles_need_allow_pickle_and_bad_folders_one_line(checkpoint, tmp_path):
    folder, base, _ = checkpoint
    with pytest.raises(UserError, match="non_lora_state_dict.pth: pickle-format weights .* --allow-pickle"):
        reward_critic.RewardCritic(JudgeConfig(critic="reward", model=str(folder), reward_base=str(base), device="cpu"))
    with pytest.raises(UserError, match="not a local folder"):
        reward_critic.RewardCritic(JudgeConfig(critic="reward", model=str(tmp_path / "nope")))
    with pytest.raises(UserError, match="reward_base"):
        reward_critic.RewardCritic(
            JudgeConfig(critic="reward", model=str(folder), reward_base=str(tmp_path / "no-base"), device="cpu")
        )


def test_reward_critic_judges_a_folder_through_the_cli(tmp_path, capsys):
    """The safetensors variant (no pickle, no --allow-pickle), through `vipo judge DIR --pairwise`."""
    base = tiny_reward.base(tmp_path / "qwen2-vl")
    tiny_reward.videoalign(tmp_path / "VideoReward", base, pickle=False)
    folder = tmp_path / "videos"
    video_folder(folder)
    out = tmp_path / "j.jsonl"
    assert (
        main(
            [
                "judge",
                str(folder),
                "--critic",
                "reward",
                "--model",
                str(tmp_path / "VideoReward"),
                "--set",
                f"reward_base={base}",
                "--set",
                "device=cpu",
                "--out",
                str(out),
                "--pairwise",
                "--quiet",
            ]
        )
        == 0
    )
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert sum(r["kind"] == "pointwise" for r in rows) == 4 and sum(r["kind"] == "pairwise" for r in rows) == 4
    assert all("error" not in r and r["critic"] == "reward" and "normalised" in r["raw"] for r in rows)
    info = json.loads(capsys.readouterr().out.split("\njudgments:")[0])
    assert info["consistency_rate"] == 1.0  # a scorer is never position-biased
