"""vipo.run.critic_commands, the verbs behind ``vipo critic train|import|eval`` and ``vipo world annotate``
called directly: the configuration's precedence and one-line refusals, and what each verb prints and writes around
the trainer, importers, evaluator and simulated annotators (stand-ins here; they are tested in test_learn_data.py,
test_accuracy.py, test_learned.py, test_learn_train.py and tests/integration/test_critic_train_cli.py)."""

import json
from types import SimpleNamespace

import pytest
from record_helpers import GOOD

from vipo.errors import UserError
from vipo.run import critic_commands as commands

RECORD = dict(GOOD, videos=["a.mp4"])


@pytest.fixture
def recipe(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text("critic_train:\n  epochs: 2\n  lr: 0.5\n  seed: 1\n")
    return str(path)


def test_defaults_without_config_sets_or_flags():
    cfg = commands.train_config(None, [], {})
    assert (cfg.arch, cfg.split, cfg.epochs, cfg.lr, cfg.grad_accum, cfg.seed) == ("auto", "train", 0.0, 0.0, 8, 0)


def test_a_config_section_then_sets_then_flags(recipe):
    cfg = commands.train_config(recipe, ["lr=0.25", "seed=2"], {"seed": 3, "batch_size": 4, "model": None})
    assert cfg.epochs == 2.0  # the config's
    assert cfg.lr == 0.25  # --set over the config
    assert cfg.seed == 3 and cfg.batch_size == 4  # a flag over both
    assert cfg.model == ""  # a flag not given (None) leaves the default


def test_a_config_of_bare_keys_and_prefixed_sets(tmp_path):
    path = tmp_path / "bare.yaml"
    path.write_text("epochs: 5\nfraction: 0.5\n")
    cfg = commands.train_config(str(path), ["critic_train.fraction=0.25"], {})
    assert (cfg.epochs, cfg.fraction) == (5.0, 0.25)


def test_bare_and_prefixed_sets_both_count(recipe):
    cfg = commands.train_config(recipe, ["lr=0.25", "critic_train.seed=3"], {})
    assert (cfg.lr, cfg.seed) == (0.25, 3)


@pytest.mark.parametrize(
    "sets, message",
    [
        (["nope=1"], r"^unknown config key 'critic_train.nope' \(known: arch, "),
        (["split=dev"], r"^critic_train.split must be train or all, got 'dev'$"),
        (["fraction=2"], r"^critic_train.fraction must be in \(0, 1\], got 2.0$"),
        (["epochs=abc"], r"^critic_train.epochs: expected float, got 'abc'$"),
    ],
)
def test_a_bad_setting_is_one_line_naming_the_field(sets, message):
    with pytest.raises(UserError, match=message):
        commands.train_config(None, sets, {})


def trained(monkeypatch, info):
    calls = []
    monkeypatch.setattr("vipo.critics.learn.train.train_critic", lambda *a: calls.append(a) or info)
    return calls


def test_train_prints_the_summary_and_how_to_judge_with_a_world_critic(tmp_path, monkeypatch, capsys):
    info = {"arch": "world", "records": 12, "train_seconds": 1.5, "final_loss": 0.25, "steps": 9}
    cfg = commands.train_config(None, [], {})
    calls = trained(monkeypatch, info)
    assert commands.train("d.jsonl", str(tmp_path / "c"), cfg, progress=False) == 0
    assert calls == [("d.jsonl", str(tmp_path / "c"), cfg, False)]
    out = capsys.readouterr().out
    summary, end = json.JSONDecoder().raw_decode(out)
    assert summary == {"arch": "world", "records": 12, "train_seconds": 1.5, "final_loss": 0.25}  # no "steps"
    assert out[end:].strip() == (
        f"critic: {tmp_path / 'c'} (vipo judge DIR --critic learned --model {tmp_path / 'c'}; "
        f"loss curve {tmp_path / 'c' / 'loss.png'})"
    )


def test_train_names_the_base_model_and_adapter_of_a_vlm_critic(tmp_path, monkeypatch, capsys):
    cfg = commands.train_config(None, ["model=base-vlm"], {})
    trained(monkeypatch, {"arch": "vlm", "records": 3, "base": "/models/qwen"})
    commands.train("d.jsonl", "crit", cfg)
    assert "(vipo judge DIR --critic vlm --model /models/qwen --set adapter=crit;" in capsys.readouterr().out
    trained(monkeypatch, {"arch": "vlm", "records": 3})  # no base recorded: the configured model
    commands.train("d.jsonl", "crit", cfg)
    assert "--critic vlm --model base-vlm --set adapter=crit;" in capsys.readouterr().out


@pytest.mark.parametrize("fraction", [-0.1, 1.5])
def test_import_refuses_a_test_fraction_outside_0_1(fraction):
    with pytest.raises(UserError, match=rf"^critic import --test-fraction: {fraction} must be in \[0, 1\]$"):
        commands.import_records("lift", "src", "out", None, fraction)


def test_import_of_judgments_needs_the_judged_folder():
    with pytest.raises(UserError, match=r"^critic import judgments: give --videos DIR"):
        commands.import_records("judgments", "j.jsonl", "out", None, 0.1)


def test_import_counts_the_records_of_each_split(monkeypatch, capsys):
    from vipo.critics.learn import importers

    calls = []
    rows = [{"split": "train"}] * 3 + [{"split": "test"}]
    monkeypatch.setitem(importers.IMPORTERS, "lift", lambda *a: calls.append(("lift", *a)) or rows)
    monkeypatch.setattr(importers, "judgments", lambda *a: calls.append(("judgments", *a)) or rows[:1])
    assert commands.import_records("lift", "src.json", "o.jsonl", None, 0.0) == 0
    assert capsys.readouterr().out == "4 records (3 train, 1 test) in o.jsonl\n"
    commands.import_records("judgments", "j.jsonl", "o.jsonl", "clips", 1.0)
    assert capsys.readouterr().out == "1 records (1 train, 0 test) in o.jsonl\n"
    assert calls == [("lift", "src.json", "o.jsonl", 0.0), ("judgments", "j.jsonl", "clips", "o.jsonl", 1.0)]


RESULT = {"pointwise": {"rates": {"semantic": {"rate": 0.5, "ci95": [0.25, 0.75], "n": 4}}, "all": None}}


@pytest.fixture
def records(tmp_path, monkeypatch):
    (tmp_path / "a.mp4").write_bytes(b"")
    rows = [RECORD, dict(RECORD, id="y#semantic", split="test")]
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    asked = []
    monkeypatch.setattr(
        "vipo.critics.learn.train.evaluate_records",
        lambda critic, recs, truth: asked.append((recs, truth)) or dict(RESULT),
    )
    return path, asked


@pytest.mark.parametrize("split, ids", [("test", ["y#semantic"]), ("all", ["x#semantic", "y#semantic"])])
def test_eval_scores_the_records_of_the_split(records, split, ids, tmp_path, capsys):
    path, asked = records
    out = tmp_path / "res" / "eval.json"
    assert commands.eval_records(str(path), SimpleNamespace(name="crit"), split, "labels", str(out)) == 0
    ((recs, truth),) = asked
    assert [r.id for r in recs] == ids and truth == "labels"
    want = dict(RESULT, critic="crit", truth="labels", data=str(path), split=split, records=len(ids))
    assert json.loads(out.read_text()) == want
    stdout, err = capsys.readouterr()
    assert json.loads(stdout) == want
    assert err.splitlines() == [
        f"{'pointwise semantic':32s} 50.0% [25.0, 75.0] (n=4)",
        f"{'pointwise fidelity':32s} n/a",
        f"{'pointwise motion':32s} n/a",
        f"{'pointwise all':32s} n/a",
    ]


def test_eval_refuses_an_empty_split(tmp_path, monkeypatch):
    (tmp_path / "a.mp4").write_bytes(b"")
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(RECORD) + "\n")
    with pytest.raises(UserError, match=rf"^{path}: no records in the test split$"):
        commands.eval_records(str(path), SimpleNamespace(name="c"), "test", "labels", None)


def test_world_annotate_labels_a_given_folder_without_generating(tmp_path, monkeypatch, capsys):
    calls = []
    summary = {
        "questions": {"pointwise": 3},
        "critic_train_records": 9,
        "simulated": {"annotators": 2},
        "agreement": {
            "pointwise": {
                "dimensions": {"motion": {"percent_agreement": 0.875}, "fidelity": {"percent_agreement": None}}
            }
        },
        "ignored": 1,
    }
    monkeypatch.setattr("vipo.world.annotators.annotate", lambda *a, **k: calls.append((a, k)) or summary)
    monkeypatch.setattr(commands, "generate_world_clips", lambda *a: pytest.fail("a folder was given"))
    out = tmp_path / "w"
    commands.world_annotate(str(out), "clips", "m", None, 1, 2, 2, 0.1, 5, 3, "cpu", progress=False)
    assert calls == [((commands.Path("clips"), out / "export", 2, 0.1, 5, 3), {"progress": False})]
    stdout = capsys.readouterr().out
    head, end = json.JSONDecoder().raw_decode(stdout)
    assert head == {"questions": {"pointwise": 3}, "critic_train_records": 9, "simulated": {"annotators": 2}}
    labels = out / "export" / "critic_train.jsonl"
    assert stdout[end:].strip().splitlines() == [
        "pointwise motion: percent agreement 87.5%",
        "pointwise fidelity: percent agreement n/a",
        f"labels: {labels} (vipo critic train {labels} --out CRITIC)",
    ]


@pytest.mark.parametrize("repeats, samples", [(0, 2), (1, 1)])
def test_world_clips_need_a_repeat_and_two_samples_per_prompt(tmp_path, repeats, samples, monkeypatch):
    monkeypatch.setattr("vipo.models.policy.load_policy", lambda *a, **k: pytest.fail("refused before loading"))
    with pytest.raises(UserError, match=r"^world annotate: --repeats >= 1 and --samples-per-prompt >= 2"):
        commands.generate_world_clips(tmp_path, "m", None, repeats, samples, 0, "cpu", False)
    assert not (tmp_path / "ledger.sqlite").exists()
