"""`vipo ablate` at tiny size: two variants, one round; the tables name the command of every row."""

from tests.conftest import TINY_RUN
from vipo.cli import main
from vipo.run.ablate import STUDIES, VARIANTS


def test_two_variants_one_round(tmp_path, tiny_model_dir, capsys):
    out = tmp_path / "abl"
    args = [
        "ablate",
        "--out",
        str(out),
        "--model",
        str(tiny_model_dir),
        "--rounds",
        "1",
        "--variant",
        "dpo",
        "--variant",
        "no-nll",
    ] + TINY_RUN
    assert main(args) == 0
    md = (out / "ablation.md").read_text()
    assert "## Real-data NLL term" in md and "## Rounds (IPO Table 2)" in md and "## Objective" not in md
    rows = [line for line in md.splitlines() if line.startswith("| ") and "`vipo run" in line]
    assert len(rows) == 2 + 2  # dpo and no-nll; base and round 1
    assert any("train.lambda_real=0" in r and f"--out {out / 'no-nll'}" in r for r in rows)
    assert (out / "dpo" / "report.html").is_file() and (out / "no-nll" / "summary.json").is_file()
    # the base was evaluated once: no-nll adopted dpo's round-0 evaluation (same base, eval options and critic)
    from vipo.data.ledger import Ledger

    with Ledger(out / "no-nll" / "ledger.sqlite") as ledger:
        assert ledger.stage_info(0, "eval")["adopted_from"] == str(out / "dpo")
    assert (out / "no-nll" / "round-0" / "eval" / "eval.json").read_text() == (
        out / "dpo" / "round-0" / "eval" / "eval.json"
    ).read_text()
    assert main(["ablate", "--out", str(out), "--variant", "nope"]) == 2
    assert all(v in VARIANTS for _, names in STUDIES for v in names)


def test_kto_variant_keeps_the_optimizer_steps_of_dpo():
    from vipo import config
    from vipo.run.ablate import variant_args

    cfg = config.load(config.RunConfig, "configs/world.yaml")  # dpo, 32 epochs, 4 samples per prompt
    assert variant_args("kto", cfg) == ["--method", "kto", "--set", "train.epochs=8"]
    assert variant_args("kto") == ["--method", "kto"] and variant_args("no-nll", cfg) == VARIANTS["no-nll"]


def test_a_base_evaluation_is_adopted_only_from_the_same_inputs(tmp_path, tiny_run_dir):
    from vipo import config
    from vipo.run.driver import adopt_base_eval, base_eval_inputs

    cfg = config.load(config.RunConfig, tiny_run_dir / "config.yaml")
    other = config.load(config.RunConfig, tiny_run_dir / "config.yaml", {"eval": {"num_steps": 3}})
    assert base_eval_inputs(cfg) != base_eval_inputs(other)
    assert not adopt_base_eval(other, tmp_path / "b", tiny_run_dir) and not (tmp_path / "b" / "round-0").exists()
    changed_train = config.load(config.RunConfig, tiny_run_dir / "config.yaml", {"train": {"beta": 10.0}, "seed": 5})
    assert adopt_base_eval(changed_train, tmp_path / "c", tiny_run_dir)
    assert not adopt_base_eval(changed_train, tmp_path / "c", tiny_run_dir)  # it has its own now
