"""tests/unit mirrors src/vipo: one test file per module, named after it.

The rule: a module's test file is ``tests/unit/test_<name>.py``, where <name> is the shortest tail of the module's
dotted path under ``vipo`` (a package's ``__init__.py`` counts as the package itself) that no other module of
src/vipo shares, joined with ``_``: ``train/trainer.py`` -> ``test_trainer.py``; ``critics/base.py`` and
``models/base.py`` -> ``test_critics_base.py`` and ``test_models_base.py``; ``critics/learn/train.py`` (beside the
``train/`` package) -> ``test_learn_train.py``; ``losses/__init__.py`` -> ``test_losses.py``.
Every file in tests/unit is the test file of exactly one module, and every module with logic (at least one function
or class defined in it; a re-export-only ``__init__.py`` has none) has its test file, except those in EXEMPT, each
with its reason; an EXEMPT entry that has a test file, or names no module, fails too."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "vipo"
UNIT = Path(__file__).resolve().parent / "unit"
#: module (dotted, under vipo) -> why it has no unit test file
EXEMPT = {
    "cli": "parses arguments and calls the layers: tested end to end in tests/integration",
    "errors": "two exception classes with no behaviour of their own (how the CLI prints them is tested with it)",
}


def modules(src: Path = SRC) -> dict[tuple[str, ...], Path]:
    """Each module's dotted path under vipo (as parts; a package is its folder) -> its file."""
    out = {}
    for path in sorted(src.rglob("*.py")):
        parts = path.relative_to(src).with_suffix("").parts
        parts = parts[:-1] if parts[-1] == "__init__" else parts
        if parts:
            out[parts] = path
    return out


def file_names(mods) -> dict[tuple[str, ...], str]:
    """Each module -> the name of its test file: the shortest tail of its path no other module shares."""
    names = {}
    for parts in mods:
        for k in range(1, len(parts) + 1):
            if not any(other != parts and other[-k:] == parts[-k:] for other in mods):
                break
        names[parts] = "test_" + "_".join(parts[-k:]) + ".py"
    return names


def has_logic(path: Path) -> bool:
    return any(
        isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
        for n in ast.parse(path.read_text(encoding="utf-8")).body
    )


def problems(src: Path = SRC, unit: Path = UNIT, exempt: dict = EXEMPT) -> list[str]:
    mods = modules(src)
    names = file_names(mods)
    by_file = {}
    for parts, name in names.items():
        by_file.setdefault(name, []).append(".".join(parts))
    bad = [f"{name} would be the test file of {', '.join(m)}" for name, m in by_file.items() if len(m) > 1]
    files = {p.name for p in unit.glob("test_*.py")}
    bad += [f"tests/unit/{f}: the test file of no module of src/vipo" for f in sorted(files - set(by_file))]
    for parts, path in mods.items():
        dotted, name = ".".join(parts), names[parts]
        if dotted in exempt:
            if name in files:
                bad.append(f"EXEMPT[{dotted!r}] is stale: tests/unit/{name} exists")
        elif has_logic(path) and name not in files:
            bad.append(f"vipo.{dotted} has no tests/unit/{name} (write it, or add it to EXEMPT with a reason)")
    known = {".".join(p) for p in mods}
    bad += [f"EXEMPT names {m!r}, which is no module of src/vipo" for m in exempt if m not in known]
    return bad


def test_unit_tests_mirror_modules():
    bad = problems()
    assert not bad, "\n".join(bad)


def test_the_names_follow_the_rule():
    names = {".".join(p): n for p, n in file_names(modules()).items()}
    for dotted, name in {
        "train.trainer": "test_trainer.py",
        "data.real": "test_real.py",
        "critics.base": "test_critics_base.py",
        "models.base": "test_models_base.py",
        "data.pairs": "test_data_pairs.py",
        "stages.pairs": "test_stages_pairs.py",
        "critics.learn.train": "test_learn_train.py",
        "losses": "test_losses.py",
        "bench": "test_bench.py",
        "models.world": "test_models_world.py",
        "critics.world": "test_critics_world.py",
        "world.grammar": "test_grammar.py",
        "bench.report": "test_bench_report.py",
        "run.report": "test_run_report.py",
        "annotate.commands": "test_commands.py",
        "run.critic_commands": "test_critic_commands.py",
    }.items():
        assert names[dotted] == name, dotted


def test_the_checker_sees_strays_missing_and_stale_exemptions(tmp_path):
    src, unit = tmp_path / "vipo", tmp_path / "unit"
    (src / "a").mkdir(parents=True)
    unit.mkdir()
    (src / "a" / "__init__.py").write_text("from .x import f\n")  # re-export only: needs no test file
    (src / "a" / "x.py").write_text("def f():\n    pass\n")
    (src / "y.py").write_text("class Y:\n    pass\n")
    (src / "z.py").write_text("Z = 1\n")
    (unit / "test_x.py").write_text("")
    (unit / "test_concern.py").write_text("")
    got = problems(src, unit, {"x": "gone", "a.x": "stale"})
    assert got == [
        "tests/unit/test_concern.py: the test file of no module of src/vipo",
        "EXEMPT['a.x'] is stale: tests/unit/test_x.py exists",
        "vipo.y has no tests/unit/test_y.py (write it, or add it to EXEMPT with a reason)",
        "EXEMPT names 'x', which is no module of src/vipo",
    ]


def test_no_two_test_files_share_a_name():
    """pytest imports test files by their base name (no packages under tests/): two of one name across tests/unit,
    tests/integration and tests/faults stop the suite at collection ("import file mismatch")."""
    seen: dict[str, list[str]] = {}
    for path in sorted(UNIT.parent.rglob("test_*.py")):
        seen.setdefault(path.name, []).append(str(path.relative_to(UNIT.parent)))
    assert {k: v for k, v in seen.items() if len(v) > 1} == {}
