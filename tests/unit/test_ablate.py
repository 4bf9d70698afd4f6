"""vipo.run.ablate's own pieces (the whole command at tiny size is in tests/integration/test_ablate_cli.py): each
variant's flags and the kto variant's epochs, the reproducing command, the comparison tables from known summaries,
and the loop over variants with a stand-in ``run_one``."""

import json
import shlex
from types import SimpleNamespace

import pytest

from vipo.errors import UserError
from vipo.run import ablate


def recipe(method="dpo", epochs=32, samples=4):
    """The two fields of a RunConfig the kto variant reads."""
    return SimpleNamespace(
        train=SimpleNamespace(method=method, epochs=epochs), generate=SimpleNamespace(samples_per_prompt=samples)
    )


@pytest.mark.parametrize(
    "epochs, samples, expect",
    [
        (32, 4, 8),  # 32 / 4
        (10, 3, 3),  # 3.33 rounds to 3
        (1, 8, 1),  # 0.125 rounds to 0: at least one epoch
        (6, 1, 6),  # one sample per prompt: as many epochs as dpo
    ],
)
def test_a_kto_variant_divides_the_epochs_by_the_samples_per_prompt(epochs, samples, expect):
    args = ablate.variant_args("kto-pool-8", recipe(epochs=epochs, samples=samples))
    assert args == ["--method", "kto", "--set", "train.kto_kl_pool=8", "--set", f"train.epochs={expect}"]


def test_a_kto_recipe_or_a_dpo_variant_keeps_its_epochs():
    assert ablate.variant_args("kto", recipe(method="kto")) == ["--method", "kto"]
    assert ablate.variant_args("n8", recipe()) == ["--set", "generate.samples_per_prompt=8"]
    assert ablate.variant_args("dpo", recipe()) == []


def test_variant_args_is_a_copy_of_the_table():
    ablate.variant_args("kto", recipe()).append("--oops")
    assert ablate.VARIANTS["kto"] == ["--method", "kto"]


def test_every_studied_variant_is_defined_and_every_variant_is_studied():
    studied = {v for _, names in ablate.STUDIES for v in names}
    assert studied == set(ablate.VARIANTS)


def test_command_puts_the_variant_in_its_own_folder(tmp_path):
    assert ablate.command("no-nll", "r.yaml", tmp_path, ["--rounds", "2"]) == [
        "vipo", "run", "--config", "r.yaml", "--out", str(tmp_path / "no-nll"),
        "--set", "train.lambda_real=0", "--rounds", "2",
    ]  # fmt: skip
    assert ablate.command("dpo", None, tmp_path, []) == ["vipo", "run", "--out", str(tmp_path / "dpo")]


def test_cells_has_one_column_per_indist_number_and_three_heldout_rates():
    assert len(ablate.CELLS) == 6 + 3
    assert [name for _, _, name in ablate.CELLS][-3:] == [
        "heldout semantic pass",
        "heldout fidelity Good",
        "heldout motion Good",
    ]


def evaluation(rate, ci=None):
    split = {c: rate for _, c, _ in ablate.CELLS}
    if ci:
        split["ci95"] = {c: ci for _, c, _ in ablate.CELLS}
    return {"indist": dict(split), "heldout": dict(split)}


def write_summary(out, variant, rounds):
    (out / variant).mkdir(parents=True)
    (out / variant / "summary.json").write_text(json.dumps({"rounds": rounds}))


def rows(md, section):
    part = md.split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    return [
        line
        for line in part.splitlines()
        if line.startswith("| ") and not line.startswith("| variant") and not line.startswith("| round")
    ]


def test_a_study_with_fewer_than_two_finished_variants_has_no_table(tmp_path):
    write_summary(tmp_path, "kto", {"0": evaluation(0.5), "1": evaluation(0.6)})
    write_summary(tmp_path, "mse", {"0": evaluation(0.5)})
    md = ablate.tables(tmp_path, ["kto", "mse", "dpo"], None, [])
    assert md.startswith(f"# Ablations in {tmp_path}")
    assert "## " not in md  # no study has two of {kto, mse}; no dpo, so no rounds table


def test_a_study_row_is_the_variants_last_round_with_intervals(tmp_path):
    # rounds "2" and "10": the last is 10 as a number, not "2" as text
    write_summary(tmp_path, "dpo", {"0": evaluation(0.25), "2": evaluation(0.5), "10": evaluation(0.125, (0.1, 0.15))})
    write_summary(tmp_path, "kto", {"0": evaluation(0.25), "1": evaluation(0.75)})
    md = ablate.tables(tmp_path, ["dpo", "kto"], "r.yaml", [], recipe())
    dpo, kto = rows(md, "Objective (IPO Table 1)")
    assert dpo.startswith("| dpo | " + " | ".join(["12.5% [10.0, 15.0]"] * 9) + " | `vipo run --config r.yaml")
    assert kto.startswith("| kto | " + " | ".join(["75.0%"] * 9) + " | ")
    # the kto row's command is the one that ran: sized by the recipe to dpo's optimizer steps
    assert kto.endswith(f"`{shlex.join(ablate.command('kto', 'r.yaml', tmp_path, [], recipe()))}` |")
    assert "train.epochs=8" in kto


def test_a_number_missing_from_the_evaluation_is_a_dash(tmp_path):
    e = evaluation(0.5)
    del e["indist"]["color"]
    del e["heldout"]
    write_summary(tmp_path, "dpo", {"1": e})
    write_summary(tmp_path, "mse", {"1": e})
    row = rows(ablate.tables(tmp_path, ["dpo", "mse"], None, []), "NLL units")[1]
    assert row.startswith("| dpo | ")
    cells = row.split(" | ")[1:-1]
    assert cells == ["50.0%", "-", "50.0%", "50.0%", "50.0%", "50.0%", "-", "-", "-"]


def test_the_rounds_table_cuts_the_dpo_run_at_each_round(tmp_path):
    write_summary(tmp_path, "dpo", {"10": evaluation(0.5), "0": evaluation(0.25), "2": evaluation(0.375)})
    md = ablate.tables(tmp_path, ["dpo"], None, ["--quiet"])
    table = rows(md, "Rounds (IPO Table 2)")
    assert [r.split(" | ")[0] for r in table] == ["| base", "| 2", "| 10"]
    out = str(tmp_path / "dpo")
    assert table[0].endswith(f"`vipo run --out {out} --quiet` |")  # the base: no --rounds
    assert table[1].endswith(f"`vipo run --out {out} --quiet --rounds 2` |")
    assert " 37.5% " in table[1]


def test_ablate_refuses_an_unknown_variant_before_running_any(tmp_path):
    ran = []
    with pytest.raises(UserError, match=r"^--variant 'nope': one of dpo, kto, "):
        ablate.ablate(tmp_path, ["dpo", "nope"], None, [], ran.append)
    assert ran == []


def test_ablate_runs_each_variant_and_writes_the_tables(tmp_path, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    argvs = []

    def run_one(argv):
        argvs.append(argv)
        variant = argv[argv.index("--out") + 1].rsplit("/", 1)[1]
        write_summary(tmp_path, variant, {"1": evaluation(0.5)})
        return 0

    path = ablate.ablate(tmp_path, ["no-nll", "dpo"], None, ["-q"], run_one)
    assert argvs == [
        ["run", "--out", str(tmp_path / "no-nll"), "--set", "train.lambda_real=0", "-q"],
        ["run", "--out", str(tmp_path / "dpo"), "-q"],
    ]
    assert path == tmp_path / "ablation.md"
    assert path.read_text() == ablate.tables(tmp_path, ["no-nll", "dpo"], None, ["-q"])


def test_ablate_offers_each_variant_the_other_folders_base_evaluation(tmp_path, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    offered = []
    monkeypatch.setattr(
        ablate, "adopt_base_eval", lambda cfg, run_dir, src: offered.append((cfg, run_dir.name, src.name))
    )

    def run_one(argv):
        (tmp_path / argv[argv.index("--out") + 1].rsplit("/", 1)[1]).mkdir()
        return 0

    ablate.ablate(tmp_path, ["dpo", "kto", "mse"], None, [], run_one, load=lambda argv: argv[2])
    # no folder before dpo; kto is offered dpo's; mse is offered dpo's and then kto's (none adopted: all returned None)
    assert offered == [
        (str(tmp_path / "kto"), "kto", "dpo"),
        (str(tmp_path / "mse"), "mse", "dpo"),
        (str(tmp_path / "mse"), "mse", "kto"),
    ]


def test_a_variant_that_fails_stops_the_study_with_its_exit_code(tmp_path, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    argvs = []
    with pytest.raises(UserError, match=r"^variant kto stopped with exit code 3; run the same command again"):
        ablate.ablate(tmp_path, ["kto", "dpo"], None, [], lambda argv: argvs.append(argv) or 3)
    assert len(argvs) == 1 and not (tmp_path / "ablation.md").exists()


def test_under_a_launcher_only_rank_0_offers_base_evaluations(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    (tmp_path / "dpo").mkdir()
    loaded = []
    ablate.ablate(tmp_path, ["kto"], None, [], lambda argv: 0, load=loaded.append)
    assert loaded == []  # rank 1 leaves the run folders' ledgers to rank 0
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setattr(ablate, "adopt_base_eval", lambda *a: False)
    ablate.ablate(tmp_path, ["kto"], None, [], lambda argv: 0, load=loaded.append)
    assert loaded == [["run", "--out", str(tmp_path / "kto"), "--method", "kto"]]
