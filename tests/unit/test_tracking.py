"""tracking: a run's metrics mirrored to an experiment tracker on one global step axis, by the first process only."""

import json

import pytest

from vipo import tracking
from vipo.errors import UserError


class Recorder(tracking.Tracker):
    package = "json"
    made: list = []

    def __init__(self, run_dir, config):
        super().__init__(run_dir, config)
        self.logged, self.clips = [], []
        Recorder.made.append(self)

    def scalars(self, metrics, step):
        self.logged.append((step, dict(metrics)))

    def clip(self, tag, path, frames, step, fps, caption=""):
        self.clips.append((tag, frames.shape, step))


@pytest.fixture
def recorder(monkeypatch):
    monkeypatch.setitem(tracking.TRACKERS, "recorder", Recorder)
    Recorder.made = []
    yield Recorder
    tracking.finish()


def test_rounds_share_one_step_axis_and_evals_sit_at_their_round_end(tmp_path, recorder):
    (tmp_path / "round-1").mkdir()
    (tmp_path / "round-1" / "train_log.jsonl").write_text("".join(json.dumps({"step": i}) + "\n" for i in (1, 2, 3)))
    tracking.start("recorder", tmp_path, {"rounds": 2})
    tracking.start("recorder", tmp_path, {"rounds": 2})  # the same run again: the same tracker
    assert len(recorder.made) == 1
    t = recorder.made[0]
    tracking.eval_round(
        0,
        {
            "indist": {"n": 4, "semantic_pass": 0.25, "ci95": {"semantic_pass": [0.05, 0.7]}},
            "config": {"critic": "world"},
        },
        tmp_path / "round-0" / "eval",
    )
    tracking.train_step(2, {"step": 1, "loss": 0.5, "skipped": True, "implicit_acc": 1})
    tracking.eval_round(1, {"heldout": {"n": 2, "score": 0.4}}, tmp_path / "nowhere")
    assert t.logged[0] == (
        0,
        {
            "eval/round": 0.0,
            "eval/indist/n": 4.0,
            "eval/indist/semantic_pass": 0.25,
            "eval/indist/semantic_pass_ci95_low": 0.05,
            "eval/indist/semantic_pass_ci95_high": 0.7,
        },
    )
    assert t.logged[1] == (4, {"train/loss": 0.5, "train/implicit_acc": 1.0, "train/round": 2.0})  # after round 1's 3
    assert t.logged[2] == (3, {"eval/round": 1.0, "eval/heldout/n": 2.0, "eval/heldout/score": 0.4})


def test_only_the_first_process_writes(tmp_path, recorder, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    tracking.start("recorder", tmp_path, {})
    tracking.train_step(1, {"step": 1, "loss": 1.0})
    assert recorder.made == []


def test_a_tracker_that_is_not_installed_is_refused_in_one_line(monkeypatch):
    import builtins

    real = builtins.__import__

    def no_wandb(name, *a, **k):
        if name == "wandb":
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_wandb)
    monkeypatch.setattr(tracking.importlib, "import_module", lambda name: no_wandb(name))
    with pytest.raises(UserError, match=r"train.tracker=wandb: the wandb package is not installed \(pip install wandb"):
        tracking.require("wandb")
    tracking.require("none")


def test_a_tiny_run_writes_tensorboard_events_with_train_loss_and_eval_metrics(tiny_run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = list((tiny_run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert events, "no TensorBoard event file in the run folder"
    acc = EventAccumulator(str(tiny_run_dir / "tensorboard"), size_guidance={"scalars": 0, "images": 0}).Reload()
    tags = acc.Tags()
    log = [json.loads(line) for line in (tiny_run_dir / "round-1" / "train_log.jsonl").read_text().splitlines()]
    loss = acc.Scalars("train/loss")
    assert [e.step for e in loss] == [h["step"] for h in log]
    assert [e.value for e in loss] == pytest.approx([h["loss"] for h in log], rel=1e-6)
    ev = json.loads((tiny_run_dir / "round-1" / "eval" / "eval.json").read_text())
    passed = acc.Scalars("eval/indist/semantic_pass")
    assert [(e.step, e.value) for e in passed][-1] == (len(log), pytest.approx(ev["indist"]["semantic_pass"]))
    assert passed[0].step == 0  # the base model's evaluation
    assert any(t.startswith("clips/indist/") for t in tags["images"])
