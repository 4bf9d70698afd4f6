"""`vipo critic train` end to end on the CPU: a tiny Qwen2-VL built in code learns the records' answers through TRL
(LoRA), and `vipo judge --critic vlm --set adapter=DIR` loads the adapter and parses its answers."""

import json
import random

import pytest
import torch

from tests.critic_helpers import tiny_qwen2_vl
from vipo.cli import main
from vipo.critics.learn import data as learn_data
from vipo.io.video import write_mp4
from vipo.world import grammar, render

PROMPTS = ("a red circle moving left", "a blue square moving up")


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # a 32-wide model: one thread beats two on a busy machine by 10x
    yield
    torch.set_num_threads(before)


def short_templates(folder):
    """Question templates a few characters long (the tiny tokenizer is per character), used for training and
    judging alike (judge.prompts_dir / critic_train prompts_dir)."""
    folder.mkdir()
    (folder / "system.txt").write_text("Judge.")
    for d in ("semantic", "fidelity", "motion"):
        (folder / f"pointwise_{d}.txt").write_text(f"{d[:3]} {{prompt}}?")
        (folder / f"pairwise_{d}.txt").write_text(f"{d[:3]} A/B {{prompt}}?")
    return folder


def test_vlm_critic_trains_and_its_adapter_answers_through_vipo_judge(tmp_path, capsys):
    model = tiny_qwen2_vl(tmp_path / "model", head_std=0.3)
    tpl = short_templates(tmp_path / "prompts")
    data = tmp_path / "data"
    (data / "videos").mkdir(parents=True)
    meta, records = [], []
    for i, p in enumerate(PROMPTS):
        for k in range(2):
            write_mp4(data / "videos" / f"{i}{k}.mp4", render.random_clip(grammar.parse(p), random.Random(2 * i + k)))
            meta.append({"file_name": f"{i}{k}.mp4", "prompt": p})
        base = {"prompt": p, "question": "", "annotators": 3, "split": "train"}
        verdict = ("Good", "Bad")[i]
        for d in ("semantic", "fidelity", "motion"):
            records.append(
                dict(
                    base,
                    id=f"pw{i}#{d}",
                    task="pointwise",
                    dimension=d,
                    videos=[f"videos/{i}0.mp4"],
                    verdict=verdict,
                    votes={verdict: 3},
                    reasons=[],
                )
            )
            records.append(
                dict(
                    base,
                    id=f"pr{i}#{d}",
                    task="pairwise",
                    dimension=d,
                    videos=[f"videos/{i}0.mp4", f"videos/{i}1.mp4"],
                    verdict="A",
                    votes={"A": 2, "B": 1},
                    reasons=[],
                )
            )
    learn_data.write_records(data / "critic_train.jsonl", records)
    (data / "videos" / "metadata.jsonl").write_text("".join(json.dumps(m) + "\n" for m in meta))
    out = tmp_path / "critic"
    shared = ["--set", "frames=2", "--set", "frame_size=56", "--set", f"prompts_dir={tpl}", "--set", "device=cpu"]
    assert (
        main(
            [
                "critic",
                "train",
                str(data / "critic_train.jsonl"),
                "--out",
                str(out),
                "--arch",
                "vlm",
                "--model",
                str(model),
                "--set",
                "max_steps=80",
                "--set",
                "lr=1e-2",
                "--set",
                "batch_size=6",
                "--set",
                "grad_accum=1",
                "--set",
                "eval=false",
                "--quiet",
            ]
            + shared
        )
        == 0
    )
    assert f"--critic vlm --model {model} --set adapter={out}" in capsys.readouterr().out
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    assert (out / "loss.png").is_file() and not (out / "checkpoints").exists()
    loss = [json.loads(x)["loss"] for x in (out / "loss.jsonl").read_text().splitlines()]
    assert len(loss) == 80 and sum(loss[-5:]) / 5 < 0.5 * sum(loss[:5]) / 5
    info = json.loads((out / "critic.json").read_text())
    assert info["arch"] == "vlm" and info["trainer"] == "trl.SFTTrainer" and info["records"]["train"] == 12

    judged = tmp_path / "j.jsonl"
    assert (
        main(
            [
                "judge",
                str(data / "videos"),
                "--critic",
                "vlm",
                "--model",
                str(model),
                "--set",
                f"adapter={out}",
                "--set",
                "max_tokens=16",
                "--set",
                "retries=0",
                "--pairwise",
                "--out",
                str(judged),
                "--quiet",
            ]
            + shared
        )
        == 0
    )
    rows = [json.loads(x) for x in judged.read_text().splitlines()]
    assert rows and all("error" not in r for r in rows), [r.get("raw") for r in rows]
    point = {r["a"]: r["labels"] for r in rows if r["kind"] == "pointwise"}
    assert point["00.mp4"]["semantic"] == "Good" and point["10.mp4"]["semantic"] == "Bad"  # what it was taught
    assert all(r["raw"].count("Verdict: ") == 3 for r in rows)
    # a folder that is not an adapter: one line, exit 2
    assert (
        main(
            [
                "judge",
                str(data / "videos"),
                "--critic",
                "vlm",
                "--model",
                str(model),
                "--set",
                f"adapter={tmp_path}",
                "--out",
                str(judged),
                "--quiet",
            ]
            + shared
        )
        == 2
    )
    assert "judge.adapter:" in capsys.readouterr().err


def test_a_run_labelled_by_a_learned_world_critic_and_evaluated_by_the_world_judge(tmp_path, tiny_model_dir):
    """The loop's machinery with `judge.critic: learned` (here an untrained network: the point is the plumbing;
    docs/results.md has trained ones) and the exact world judge evaluating (`eval.critic: world`)."""
    from tests.critic_helpers import check_round, run_one_round
    from vipo.critics.learn import worldnet

    critic = tmp_path / "critic"
    torch.manual_seed(0)
    worldnet.save(
        worldnet.WorldCriticNet(worldnet.NetConfig(width=4, keypoints=2, hidden=8)), critic, {"note": "untrained"}
    )
    out = tmp_path / "run"
    assert (
        main(run_one_round(tiny_model_dir, out, "judge.critic=learned", f"judge.model={critic}", "eval.critic=world"))
        == 0
    )
    judgments, pairs, info = check_round(out, "learned")
    assert info["unparseable_rate"] == 0.0 and info["consistency_rate"] == 1.0  # position-consistent by design
    assert all("P(Good)" in j["raw"] or "P(A)" in j["raw"] for j in judgments.values())
    for k in (0, 1):
        ev = json.loads((out / f"round-{k}" / "eval" / "eval.json").read_text())
        assert ev["config"]["critic"] == "world" and "semantic_pass" in ev["indist"]
    assert json.loads((out / "summary.json").read_text())["metric"] == "indist_pass"
