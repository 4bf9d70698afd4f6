"""run.driver: the run's checks before it starts, and a run folder's snapshot read by a newer vipo."""

import pytest
import yaml
from cli_helpers import _clips, one_line
from suite_helpers import PROMPTS, _cfg, _file

from vipo.cli import main
from vipo.config import RunConfig, TrainConfig, build, to_dict
from vipo.errors import UserError
from vipo.run import driver


def test_run_checks_and_old_snapshots(tmp_path):
    with pytest.raises(UserError, match="train.real_videos: the world family draws its real videos from its renderer"):
        driver.check(RunConfig(train=TrainConfig(real_videos=str(tmp_path))))
    with pytest.raises(UserError, match="nothing: real videos not found"):
        driver.check(RunConfig(model="x", train=TrainConfig(real_videos=str(tmp_path / "nothing"))))
    old = to_dict(RunConfig())  # a run folder started before the memory options existed resumes unchanged
    del old["train"]["finetune"], old["generate"]["vae_tiling"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    driver.snapshot(RunConfig(), tmp_path)
    with pytest.raises(UserError, match="train.finetune: 'lora' then, 'full' now"):
        driver.snapshot(RunConfig(train=TrainConfig(finetune="full")), tmp_path)


def test_inputs_are_checked_before_the_run_folder_is_written(tmp_path, tiny_model_dir, capsys):
    out = tmp_path / "run"
    assert main(["run", "--out", str(out), "--model", "/no/such/path", "--quiet"]) == 2
    assert "/no/such/path" in one_line(capsys) and not out.exists()  # the corrected command is not "a changed config"
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle moving left\na cat playing the piano\n")
    assert (
        main(
            ["run", "--out", str(out), "--model", str(tiny_model_dir), "--set", f"prompts.source={prompts}", "--quiet"]
        )
        == 2
    )
    err = one_line(capsys)
    assert f"{prompts}:2: prompt 'a cat playing the piano': the world critic cannot judge it" in err
    assert not out.exists()
    assert (
        main(
            [
                "run",
                "--out",
                str(out),
                "--model",
                str(tiny_model_dir),
                "--set",
                "judge.critic=human",
                "--set",
                f"judge.labels={tmp_path / 'none.jsonl'}",
                "--quiet",
            ]
        )
        == 2
    )
    assert "judge.labels" in one_line(capsys) and not out.exists()
    root = _clips(tmp_path / "v", prompt="a cat playing the piano")  # and vipo judge DIR, naming metadata's line
    assert main(["judge", str(root), "--out", str(tmp_path / "j.jsonl"), "--quiet"]) == 2
    assert f"{root / 'metadata.jsonl'}:1: prompt 'a cat" in one_line(capsys)


def test_the_metric_follows_the_suite(tmp_path):
    from vipo.run.driver import eval_rows, metric_name

    f = _file(tmp_path / "p.txt", PROMPTS)
    cfg = _cfg(
        prompts={"source": f},
        judge={"critic": "pixelstats"},
        eval={"clips_per_split": 2, "vbench": _file(tmp_path / "v.txt", ["x"])},
    )
    assert metric_name(cfg) == "heldout_score"
    assert [r["split"] for r in eval_rows(cfg)] == ["heldout", "heldout", "vbench", "vbench"]
    assert metric_name(_cfg()) == "indist_pass"  # the world as before
    world = eval_rows(_cfg(eval={"clips_per_split": 1}))
    assert [r["file_name"] for r in world] == ["indist-000.mp4", "heldout-000.mp4"]
    with pytest.raises(UserError, match="heldout_fraction must be in"):
        _cfg(eval={"heldout_fraction": 1})


def test_a_run_folder_started_under_a_critics_earlier_name_resumes(tmp_path):
    cfg = build(RunConfig, {"judge": {"critic": "pixelstats"}, "eval": {"critic": {"critic": "metric"}}})
    stored = to_dict(cfg)
    stored["judge"]["critic"] = "metric"  # the snapshot a vipo before the rename wrote
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(stored))
    driver.snapshot(cfg, tmp_path)  # the same config, spelled as today: not refused
    with pytest.raises(UserError, match=r"judge.critic: 'pixelstats' then, 'world' now"):  # another critic still is
        driver.snapshot(build(RunConfig, {"judge": {"critic": "world"}}), tmp_path)
