"""The dependency direction of shared/ARCHITECTURE.md, checked on the imports (module level and inside functions):
models and data never import training, stages, the driver or the CLI; training never imports stages, the driver or
the CLI; stages never import the driver or the CLI; critics import no training, stage, driver, CLI, annotation or
bench code (what a verb does with a critic and a folder of videos, ``vipo critic``, lives in ``run/critic_commands``). A policy is read beside the models (``vipo.models.policy``), the
LoRA a round trains and writes lives beside training (``vipo.train.lora``)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "vipo"
#: package -> the packages it must not import
FORBIDDEN = {
    "models": ("train", "stages", "run", "cli", "critics"),
    "data": ("train", "stages", "run", "cli"),
    "train": ("stages", "run", "cli"),
    "stages": ("run", "cli"),
    "critics": ("train", "stages", "run", "cli", "annotate", "bench"),
}


def imported(path: Path) -> set[str]:
    """The vipo modules a file imports, as dotted names under vipo ('train.lora', 'stages', ...)."""
    package = path.relative_to(SRC).parent.parts
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(package[: len(package) - (node.level - 1)] if node.level > 1 else package)
                target = base + (node.module.split(".") if node.module else [])
            elif node.module and node.module.startswith("vipo"):
                target = node.module.split(".")[1:]
            else:
                continue
            names = [".".join(target + [a.name]) for a in node.names] if not node.module else [".".join(target)]
            out.update(n for n in names if n)
        elif isinstance(node, ast.Import):
            out.update(a.name.split(".", 1)[1] for a in node.names if a.name.startswith("vipo."))
    return out


def test_imports_follow_the_dependency_direction():
    bad = []
    for package, forbidden in FORBIDDEN.items():
        for path in sorted((SRC / package).rglob("*.py")):
            for name in imported(path):
                if name.split(".")[0] in forbidden:
                    bad.append(f"{path.relative_to(SRC.parent)} imports vipo.{name}")
    assert not bad, "\n".join(bad)


def test_the_checker_sees_relative_and_absolute_imports(tmp_path):
    probe = SRC / "train" / "lora.py"
    assert "models.policy" in imported(probe)
    assert any(n.startswith("models") for n in imported(SRC / "stages" / "generate.py"))
