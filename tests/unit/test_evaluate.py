"""vipo.stages.evaluate: the fixed evaluation set, the per-split summary of known judgments, and the stage itself
with a stand-in model (flat grey clips) and a scripted critic: what it writes, what it asks, what it resumes."""

import json

import pytest
from unit_helpers import FakeModel, ScriptedCritic, answer

from vipo import seeds
from vipo.config import EvalConfig
from vipo.stages.evaluate import eval_prompts, evaluate, read_summary, summarize
from vipo.stats import wilson
from vipo.world import grammar


def test_eval_prompts_cycle_over_each_splits_combinations_with_eval_seeds():
    n = len(grammar.HELDOUT_LIST) + 2  # one more clip than held-out combinations: the cycle wraps
    rows = eval_prompts(EvalConfig(clips_per_split=n, seed=7))
    assert [r["split"] for r in rows] == ["indist"] * n + ["heldout"] * n
    held = rows[n:]
    assert held[0]["file_name"] == "heldout-000.mp4" and held[-1]["file_name"] == f"heldout-{n - 1:03d}.mp4"
    assert [r["prompt"] for r in held] == [
        grammar.HELDOUT_LIST[i % len(grammar.HELDOUT_LIST)].prompt() for i in range(n)
    ]
    assert held[len(grammar.HELDOUT_LIST)]["prompt"] == held[0]["prompt"]
    assert rows[1]["prompt"] == grammar.INDIST[1].prompt()
    assert [r["seed"] for r in rows[:2]] == [seeds.eval_seed(7, "indist", 0), seeds.eval_seed(7, "indist", 1)]
    # evaluation seeds are never training seeds ([0, 2**31))
    assert all(r["seed"] >= 2**31 for r in rows)
    assert len({r["seed"] for r in rows}) == len(rows)


def row(split, labels=None, scores=None, **checks):
    r = {"split": split, "file_name": "x.mp4", "prompt": "p"}
    if labels is None:
        return dict(r, error="unparseable", raw="?")
    return dict(r, labels=dict(zip(("semantic", "fidelity", "motion"), labels)), scores=scores or {}, **checks)


def test_summarize_rates_scores_and_intervals_on_known_judgments():
    results = [
        row("indist", ("Good", "Good", "Bad"), {"semantic": 1.0, "fidelity": 0.9, "motion": 0.2}),
        row("indist", ("Good", "Normal", "Good"), {"semantic": 0.8, "fidelity": 0.5, "motion": 0.8}),
        row("indist", ("Bad", "Good", "Good"), {"semantic": 0.0, "fidelity": 1.0, "motion": 0.0}),
        row("indist"),  # unparseable: counted apart
        row("heldout", ("Normal", "Normal", "Normal"), {"semantic": 0.5, "fidelity": 0.5, "motion": 0.5}),
    ]
    out = summarize(results)
    ind = out["indist"]
    assert ind["n"] == 3 and ind["unparseable"] == 1
    assert ind["semantic_good"] == pytest.approx(2 / 3)
    assert ind["fidelity_good"] == pytest.approx(2 / 3) and ind["motion_good"] == pytest.approx(2 / 3)
    assert ind["semantic_score"] == pytest.approx(0.6)  # (1.0 + 0.8 + 0.0) / 3
    assert ind["fidelity_score"] == pytest.approx(0.8)  # (0.9 + 0.5 + 1.0) / 3
    assert ind["motion_score"] == pytest.approx(1 / 3)  # (0.2 + 0.8 + 0.0) / 3: graded scores, not the labels
    assert ind["score"] == pytest.approx((0.6 + 0.8 + 1 / 3) / 3)
    assert ind["ci95"]["semantic_good"] == list(wilson(2, 3))
    assert "color" not in ind  # no attribute checks from this critic
    held = out["heldout"]
    assert held["n"] == 1 and "unparseable" not in held and held["semantic_good"] == 0.0 and held["score"] == 0.5


def test_summarize_scores_a_clip_without_graded_scores_by_its_labels():
    # a critic that only labels (openai, vlm, human): Good 1, Normal 0.5, Bad 0
    out = summarize([row("indist", ("Good", "Normal", "Bad")), row("indist", ("Good", "Good", "Normal"))])
    ind = out["indist"]
    assert (ind["semantic_score"], ind["fidelity_score"], ind["motion_score"]) == (1.0, 0.75, 0.25)
    assert ind["score"] == pytest.approx(2 / 3)


def test_summarize_attribute_checks_and_a_split_with_nothing_judged():
    results = [
        row("indist", ("Good",) * 3, color_ok=True, shape_ok=True, direction_ok=False, passed=False),
        row("indist", ("Bad",) * 3, color_ok=True, shape_ok=False, direction_ok=True, passed=False),
        row("heldout"),
    ]
    out = summarize(results)
    ind = out["indist"]
    assert (ind["color"], ind["shape"], ind["direction"], ind["semantic_pass"]) == (1.0, 0.5, 0.5, 0.0)
    assert ind["ci95"]["semantic_pass"] == list(wilson(0, 2))
    assert "heldout" not in out  # no judged clip: no rates to give
    assert summarize([]) == {}


def cfg(**kw):
    return EvalConfig(**{"clips_per_split": 3, "num_steps": 2, "batch_size": 2, "versus_base": False, **kw})


def critic():
    # every clip Good on semantic, Normal on fidelity; motion Bad for the first held-out prompt, unparseable on none
    held0 = grammar.HELDOUT_LIST[0].prompt()
    point = {a.prompt(): answer("Good", "Normal", "Good") for a in grammar.ALL}
    point[held0] = answer("Good", "Normal", "Bad")
    return ScriptedCritic("scripted", point=point)


def test_evaluate_writes_clips_records_and_rates(tmp_path):
    model, c = FakeModel(), critic()
    out = evaluate(model, tmp_path / "eval", cfg(), c, progress=False)
    rows = eval_prompts(cfg())
    # sampler batches of 2 over the 6 rows, each with its rows' eval seeds
    assert model.calls == [[r["seed"] for r in rows[i : i + 2]] for i in (0, 2, 4)]
    meta = [json.loads(x) for x in (tmp_path / "eval" / "metadata.jsonl").read_text().splitlines()]
    assert meta == rows
    results = [json.loads(x) for x in (tmp_path / "eval" / "results.jsonl").read_text().splitlines()]
    assert [r["file_name"] for r in results] == [r["file_name"] for r in rows]
    assert all((tmp_path / "eval" / r["file_name"]).is_file() for r in rows)
    # the critic was shown each clip once, with its own prompt
    assert [q[1] for q in c.asked] == [r["prompt"] for r in rows]
    # motion is Bad on the held-out clips of HELDOUT_LIST[0] (the split cycles over its combinations)
    bad = sum(r["prompt"] == grammar.HELDOUT_LIST[0].prompt() for r in rows[3:])
    assert out["indist"]["motion_good"] == 1.0 and out["heldout"]["motion_good"] == pytest.approx(1 - bad / 3)
    assert out["indist"]["semantic_good"] == 1.0 and out["indist"]["fidelity_good"] == 0.0
    assert out["config"] == {
        "clips_per_split": 3,
        "num_steps": 2,
        "guidance": 2.0,
        "seed": 0,
        "critic": "scripted",
        "size": [4, 16, 16],
    }
    assert json.loads((tmp_path / "eval" / "eval.json").read_text()) == out


def test_evaluate_resumes_only_the_missing_batches(tmp_path):
    first = FakeModel()
    evaluate(first, tmp_path / "eval", cfg(), critic(), progress=False)
    (tmp_path / "eval" / "eval.json").unlink()
    (tmp_path / "eval" / "heldout-001.mp4").unlink()
    again = FakeModel()
    evaluate(again, tmp_path / "eval", cfg(), critic(), progress=False)
    rows = eval_prompts(cfg())
    assert again.calls == [[rows[4]["seed"], rows[5]["seed"]]]  # the one batch holding the missing clip
    # a finished evaluation is read back, nothing sampled or judged
    done, c = FakeModel(), critic()
    assert evaluate(done, tmp_path / "eval", cfg(), c, progress=False)["config"]["critic"] == "scripted"
    assert done.calls == [] and c.asked == []


def test_unparseable_clips_are_recorded_and_left_out(tmp_path):
    c = critic()
    held = {a.prompt() for a in grammar.HELDOUT_LIST}
    for p in held:
        c.point[p] = "I cannot judge this."
    out = evaluate(FakeModel(), tmp_path / "eval", cfg(), c, progress=False)
    assert out["indist"]["n"] == 3 and "semantic_good" not in out.get("heldout", {})
    results = [json.loads(x) for x in (tmp_path / "eval" / "results.jsonl").read_text().splitlines()]
    errs = [r for r in results if "error" in r]
    assert len(errs) == 3 and all(r["raw"] == "I cannot judge this." and "labels" not in r for r in errs)


def test_a_finished_evaluation_is_read_by_todays_rules_and_its_other_blocks_kept(tmp_path):
    """An eval.json written when a label-only critic's scores counted 0: read back with the label scores (1, 0.5, 0
    per Good, Normal, Bad), rewritten once; the win rate block, not derived from results.jsonl, stays as it was."""
    rows = [
        {"split": "indist", "labels": {"semantic": "Good", "fidelity": "Normal", "motion": "Bad"}},
        {"split": "indist", "labels": {"semantic": "Good", "fidelity": "Good", "motion": "Normal"}, "scores": {}},
    ]
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    old = summarize([dict(r, scores={d: 0.0 for d in ("semantic", "fidelity", "motion")}) for r in rows])
    old["indist"].update(win_rate=0.75)
    old["indist"]["ci95"]["win_rate"] = [0.5, 0.9]
    (tmp_path / "eval.json").write_text(json.dumps(old))
    got = read_summary(tmp_path)
    assert (got["indist"]["semantic_score"], got["indist"]["fidelity_score"], got["indist"]["motion_score"]) == (
        1.0,
        0.75,
        0.25,
    )
    assert got["indist"]["score"] == pytest.approx(2 / 3)
    assert got["indist"]["win_rate"] == 0.75 and got["indist"]["ci95"]["win_rate"] == [0.5, 0.9]
    assert json.loads((tmp_path / "eval.json").read_text()) == got  # rewritten once
    before = (tmp_path / "eval.json").stat().st_mtime_ns
    assert read_summary(tmp_path) == got and (tmp_path / "eval.json").stat().st_mtime_ns == before
