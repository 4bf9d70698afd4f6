"""Human labels, the ensemble, `vipo critic eval`, and a non-world critic through `vipo run`."""
import json

import pytest

from tests.conftest import TINY_RUN
from tests.critic_helpers import video_folder
from vipo.cli import main
from vipo.critics.base import Pairwise, Pointwise
from vipo.critics.ensemble import EnsembleCritic

GOOD = {"semantic": "Good", "fidelity": "Good", "motion": "Good"}
BAD = {"semantic": "Bad", "fidelity": "Good", "motion": "Good"}


def _labels(path):
    # clip-00 and clip-02 move the wrong way (video_folder); clip-03 is left unannotated on purpose
    rows = [{"video": "clip-00.mp4", "labels": BAD, "reasons": {"semantic": "moves right"}},
            {"video": "clip-01.mp4", "labels": GOOD}, {"video": "clip-02.mp4", "labels": BAD},
            {"a": "clip-00.mp4", "b": "clip-01.mp4", "verdicts": {"semantic": "B", "fidelity": "Tie", "motion": "Tie"}}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_human_critic_through_vipo_judge(tmp_path, capsys):
    folder = tmp_path / "videos"
    video_folder(folder)
    out = tmp_path / "j.jsonl"
    assert main(["judge", str(folder), "--critic", "human", "--labels", str(_labels(tmp_path / "l.jsonl")),
                 "--out", str(out), "--pairwise", "--set", "max_unparseable=0.5", "--quiet"]) == 0
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
    assert main(["critic", "eval", str(folder), "--critic", "metric", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    capsys.readouterr()
    assert res["pointwise"]["accuracy"]["semantic"] == 0.0  # the metric never reads the prompt: always Normal
    assert sum(res["pointwise"]["confusion"]["semantic"]["Bad"].values()) == 2
    labels = _labels(tmp_path / "l.jsonl")
    assert main(["critic", "eval", str(folder), "--critic", "world", "--truth", str(labels)]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["pointwise"]["n"] == 3 and res["pointwise"]["unanswered"] == 1
    assert res["pointwise"]["accuracy"]["semantic"] == 1.0 and res["pairwise"]["n"] == 2


def test_omniscore_critic_through_vipo_run(tmp_path, tiny_model_dir):
    out = tmp_path / "run"
    assert main(["run", "--model", str(tiny_model_dir), "--out", str(out), "--rounds", "1", "--set",
                 "judge.critic=omniscore", "--set", "pairs.alpha=1", "--set", "eval.clips_per_split=1"]
                + TINY_RUN) == 0
    judgments = [json.loads(x) for x in (out / "round-1" / "judgments.jsonl").read_text().splitlines()]
    assert all(j["critic"] == "omniscore" and "error" not in j for j in judgments)
    pairs = [json.loads(x) for x in (out / "round-1" / "pairs.jsonl").read_text().splitlines()]
    assert all(p["gap"] >= 0 for p in pairs)
    import sqlite3
    info = json.loads(sqlite3.connect(out / "ledger.sqlite").execute(
        "select data from stages where round=1 and stage='judge'").fetchone()[0])
    assert info["unparseable_rate"] == 0.0 and info["consistency_rate"] == 1.0 and info["pairwise"] == 18
