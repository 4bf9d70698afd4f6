"""The vlm critic through `vipo judge DIR` with a tiny random Qwen2-VL built in code (no downloads, no torchvision).

Its answers are random characters: every question is unparseable, retried, recorded with its raw text and counted.
"""

import json

import pytest

from tests.critic_helpers import check_round, pixel_verdict, run_one_round, split_videos, tiny_qwen2_vl, video_folder
from vipo.cli import main


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory):
    return tiny_qwen2_vl(tmp_path_factory.mktemp("vlm") / "model")


def test_tiny_qwen2_vl_through_vipo_judge(tmp_path, tiny_vlm, capsys):
    folder = tmp_path / "videos"
    video_folder(folder)
    out = tmp_path / "j.jsonl"
    args = [
        "judge",
        str(folder),
        "--critic",
        "vlm",
        "--model",
        str(tiny_vlm),
        "--out",
        str(out),
        "--quiet",
        "--set",
        "frames=2",
        "--set",
        "frame_size=56",
        "--set",
        "max_tokens=6",
        "--set",
        "batch_size=12",
        "--set",
        "retries=1",
        "--set",
        "device=cpu",
    ]
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
    assert (
        main(
            run_one_round(
                tiny_model_dir,
                out,
                "judge.critic=vlm",
                f"judge.model={tiny_vlm}",
                "judge.frames=2",
                "judge.frame_size=56",
                "judge.max_tokens=4",
                "judge.batch_size=16",
                "judge.device=cpu",
            )
        )
        == 0
    )
    judgments, pairs, info = check_round(out, "vlm")
    assert info["unparseable_rate"] == 0.0 and info["consistency_rate"] == 1.0 and len(pairs) == 3
    assert len(generated) == 3 * len(judgments) + 2 * 2 * 3  # + rounds 0 and 1's eval: 2 clips, 3 dimensions
    raws = "\n".join(j["raw"] for j in judgments.values())
    assert all(j["raw"].count("Verdict: ") == 3 for j in judgments.values())
    assert all(isinstance(a, str) and a in raws for a in generated[6:-6])  # the model's own text, kept in the raw
    results = [json.loads(x) for x in (out / "round-1" / "eval" / "results.jsonl").read_text().splitlines()]
    assert len(results) == 2 and all("labels" in r for r in results)
