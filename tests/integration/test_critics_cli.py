"""Human labels, the ensemble, `vipo critic eval`, and the omniscore, human and ensemble critics through `vipo run`
(the openai and vlm critics' runs are in their own files)."""

import json

import pytest
import yaml

from tests.conftest import TINY_RUN
from tests.critic_helpers import check_round, run_one_round, video_folder
from vipo.cli import main
from vipo.critics.base import Pairwise, Pointwise
from vipo.critics.ensemble import EnsembleCritic

GOOD = {"semantic": "Good", "fidelity": "Good", "motion": "Good"}
BAD = {"semantic": "Bad", "fidelity": "Good", "motion": "Good"}


def _labels(path):
    # clip-00 and clip-02 move the wrong way (video_folder); clip-03 is left unannotated on purpose
    rows = [
        {"video": "clip-00.mp4", "labels": BAD, "reasons": {"semantic": "moves right"}},
        {"video": "clip-01.mp4", "labels": GOOD},
        {"video": "clip-02.mp4", "labels": BAD},
        {"a": "clip-00.mp4", "b": "clip-01.mp4", "verdicts": {"semantic": "B", "fidelity": "Tie", "motion": "Tie"}},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_human_critic_through_vipo_judge(tmp_path, capsys):
    folder = tmp_path / "videos"
    video_folder(folder)
    out = tmp_path / "j.jsonl"
    assert (
        main(
            [
                "judge",
                str(folder),
                "--critic",
                "human",
                "--labels",
                str(_labels(tmp_path / "l.jsonl")),
                "--out",
                str(out),
                "--pairwise",
                "--set",
                "max_unparseable=0.5",
                "--quiet",
            ]
        )
        == 0
    )
    rows = {r["key"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert rows["pw:clip-00.mp4"]["labels"] == BAD and rows["pw:clip-00.mp4"]["reasons"]["semantic"] == "moves right"
    assert rows["pair:clip-00.mp4|clip-01.mp4"]["overall"] == "B"
    assert rows["pair:clip-01.mp4|clip-00.mp4"]["overall"] == "A"  # the same annotation, flipped
    assert "error" in rows["pw:clip-03.mp4"] and "error" in rows["pair:clip-02.mp4|clip-03.mp4"]
    info = json.loads(capsys.readouterr().out.split("\njudgments:")[0])
    assert info["consistency_rate"] == 1.0 and info["parse_errors"] == 3


class Fixed:
    def __init__(self, labels, verdict, fail=False):
        self.name, self.labels, self.verdict, self.fail = "fixed", labels, verdict, fail

    def pointwise_many(self, videos):
        from vipo.critics.base import CriticParseError

        return [CriticParseError("x", "?") if self.fail else Pointwise(dict(self.labels), {}, "r") for _ in videos]

    def pairwise_many(self, pairs):
        return [Pairwise({d: self.verdict for d in GOOD}, {}, "r") for _ in pairs]


def test_ensemble_vote_and_mean():
    members = [Fixed(GOOD, "A"), Fixed(GOOD, "A"), Fixed(BAD, "B"), Fixed(BAD, "B", fail=True)]
    (p,) = EnsembleCritic(members, "vote").pointwise_many([None])
    assert p.labels == GOOD and "[fixed]" in p.raw  # the unparseable member is left out
    (m,) = EnsembleCritic(members, "mean").pointwise_many([None])
    assert m.labels["semantic"] == "Normal" and m.scores["semantic"] == pytest.approx(2 / 3)
    (q,) = EnsembleCritic(members[:3], "vote").pairwise_many([(None, None)])
    assert q.overall == "A"
    (t,) = EnsembleCritic(members[1:3], "vote").pairwise_many([(None, None)])
    assert t.overall == "Tie"


def test_critic_eval_against_the_world_judge_and_human_labels(tmp_path, capsys):
    folder = tmp_path / "videos"
    video_folder(folder)
    assert main(["critic", "eval", str(folder), "--critic", "world"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["pointwise"]["all_dimensions"] == 1.0 and res["pairwise"]["overall"] == 1.0
    assert res["pairwise"]["n"] == 4 and res["truth"] == "world"
    out = tmp_path / "eval.json"
    assert main(["critic", "eval", str(folder), "--critic", "pixelstats", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    capsys.readouterr()
    assert res["pointwise"]["accuracy"]["semantic"] == 0.0  # pixelstats never reads the prompt: always Normal
    assert sum(res["pointwise"]["confusion"]["semantic"]["Bad"].values()) == 2
    labels = _labels(tmp_path / "l.jsonl")
    assert main(["critic", "eval", str(folder), "--critic", "world", "--truth", str(labels)]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["pointwise"]["n"] == 3 and res["pointwise"]["unanswered"] == 1
    assert res["pointwise"]["accuracy"]["semantic"] == 1.0 and res["pairwise"]["n"] == 2


def test_omniscore_critic_through_vipo_run(tmp_path, tiny_model_dir, capsys):
    out = tmp_path / "run"
    assert (
        main(
            [
                "run",
                "--model",
                str(tiny_model_dir),
                "--out",
                str(out),
                "--rounds",
                "1",
                "--set",
                "judge.critic=omniscore",
                "--set",
                "pairs.alpha=1",
            ]
            + TINY_RUN
            + ["--set", "eval.clips_per_split=1"]
        )
        == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    # eval.metric 'auto': a critic without the world judge's exact pass rate is watched by its mean score
    assert summary["metric"] == "indist_score" and 0 < summary["best_metric"] <= 1
    capsys.readouterr()
    assert main(["run", "--out", str(out), "--force", "--set", "eval.metric=indist_pass"]) == 2  # world only
    assert "eval.metric=indist_pass: this run's evaluation has no 'semantic_pass'" in capsys.readouterr().err
    judgments = [json.loads(x) for x in (out / "round-1" / "judgments.jsonl").read_text().splitlines()]
    assert all(j["critic"] == "omniscore" and "error" not in j for j in judgments)
    pairs = [json.loads(x) for x in (out / "round-1" / "pairs.jsonl").read_text().splitlines()]
    assert all(p["gap"] >= 0 for p in pairs)
    import sqlite3

    info = json.loads(
        sqlite3.connect(out / "ledger.sqlite")
        .execute("select data from stages where round=1 and stage='judge'")
        .fetchone()[0]
    )
    assert info["unparseable_rate"] == 0.0 and info["consistency_rate"] == 1.0 and info["pairwise"] == 18


def test_human_critic_through_vipo_run(tmp_path, tiny_model_dir, capsys):
    """Generate, label what was generated, run on: labels name a sample by its file name in samples/metadata.jsonl
    or by any longer tail of its path (here: relative to the round folder, as in samples.jsonl)."""
    out, labels = tmp_path / "run", tmp_path / "labels.jsonl"
    args = run_one_round(tiny_model_dir, out, "judge.critic=human", f"judge.labels={labels}")
    assert main(["generate", "--round", "1"] + args[1:]) == 0  # no labels yet: generating needs no critic
    meta = [json.loads(x) for x in (out / "round-1" / "samples" / "metadata.jsonl").read_text().splitlines()]
    grade = (
        {"semantic": "Good", "fidelity": "Good", "motion": "Normal"},
        {"semantic": "Normal", "fidelity": "Good", "motion": "Normal"},
        {"semantic": "Bad", "fidelity": "Normal", "motion": "Normal"},
    )
    by_sample = {(m["prompt_id"], m["sample_index"]): m["file_name"] for m in meta}
    labels.write_text(
        "".join(
            json.dumps(
                {
                    "video": m["file_name"],
                    "labels": grade[m["sample_index"]],
                    "reasons": {"semantic": f"sample {m['sample_index']}"},
                }
            )
            + "\n"
            for m in meta
        )
    )
    # pointwise labels only: every pair is unanswered, so the judge stage stops the run (exit 2, one line)
    assert main(args) == 2 and "unparseable" in capsys.readouterr().err.strip().splitlines()[-1]
    pairs = []
    for pid in {m["prompt_id"] for m in meta}:
        s0, s1, s2 = (f"samples/{by_sample[pid, k]}" for k in range(3))
        pairs += [
            {"a": s0, "b": s1, "verdicts": {"semantic": "A", "fidelity": "Tie", "motion": "Tie"}},
            {"a": s1, "b": s2, "verdicts": {"semantic": "A", "fidelity": "A", "motion": "Tie"}},
            {"a": s2, "b": s0, "verdicts": {"semantic": "B", "fidelity": "B", "motion": "Tie"}},
        ]
    with labels.open("a") as f:
        f.write("".join(json.dumps(p) + "\n" for p in pairs))
    assert main(args) == 0  # the run goes on; the unanswered questions are asked again
    judgments, made, info = check_round(out, "human")
    assert info["unparseable_rate"] == 0.0 and info["consistency_rate"] == 1.0
    samples = {s["id"]: s for s in map(json.loads, (out / "round-1" / "samples.jsonl").read_text().splitlines())}
    for sid, s in samples.items():
        j = judgments[f"pw:{sid}"]
        assert j["labels"] == grade[s["sample_index"]] and j["reasons"]["semantic"] == f"sample {s['sample_index']}"
    assert (
        sorted((samples[p["chosen"]]["sample_index"], samples[p["rejected"]]["sample_index"]) for p in made)
        == [(0, 2)] * 3
    )
    # the eval clips are generated and judged in one step, so nobody labelled them: recorded, left out of the rates
    results = [json.loads(x) for x in (out / "round-1" / "eval" / "results.jsonl").read_text().splitlines()]
    assert all(
        r["error"].startswith("no human label for") and r["error"].endswith(f"round-1/eval/{r['file_name']}")
        for r in results
    )


def test_ensemble_critic_through_vipo_run(tmp_path, tiny_model_dir):
    """Trains on the ensemble's judgments and evaluates with the world judge alone (``eval.critic``)."""
    out = tmp_path / "run"
    args = run_one_round(
        tiny_model_dir,
        out,
        "judge.critic=ensemble",
        "judge.combine=mean",
        "judge.members=[{critic: world}, {critic: pixelstats}]",
        "eval.critic=world",
    )
    assert main(args) == 0
    judgments, pairs, info = check_round(out, "ensemble")
    assert info["unparseable_rate"] == 0.0 and len(pairs) == 3
    assert all(j["raw"].startswith("[world]\n") and "\n\n[pixelstats]\n" in j["raw"] for j in judgments.values())
    point = [j for j in judgments.values() if j["kind"] == "pointwise"]
    assert all(j["reasons"]["semantic"] == "mean of 2 critics" and set(j["scores"]) == set(GOOD) for j in point)
    for k in (0, 1):  # the evaluation is the world judge's: exact pass rates, its own raw text, its metric
        results = [json.loads(x) for x in (out / f"round-{k}" / "eval" / "results.jsonl").read_text().splitlines()]
        assert len(results) == 2 and all("[world]" not in r["raw"] and "passed" in r for r in results)
        ev = json.loads((out / f"round-{k}" / "eval" / "eval.json").read_text())
        assert ev["config"]["critic"] == "world" and "semantic_pass" in ev["indist"]
    assert json.loads((out / "summary.json").read_text())["metric"] == "indist_pass"
    # the members are in the config snapshot, and the same command on the finished run is accepted and does nothing
    assert yaml.safe_load((out / "config.yaml").read_text())["judge"]["members"] == [
        {"critic": "world"},
        {"critic": "pixelstats"},
    ]
    before = (out / "round-1" / "judgments.jsonl").read_bytes()
    assert main(args) == 0 and (out / "round-1" / "judgments.jsonl").read_bytes() == before
