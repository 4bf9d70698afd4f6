"""`ruff check` (the rules in pyproject.toml's [tool.ruff.lint]) and `ruff format --check` pass on the code base."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_ruff_check_passes():
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    got = subprocess.run([ruff, "check", "src", "tests", "tools"], cwd=REPO, capture_output=True, text=True)
    assert got.returncode == 0, got.stdout[-3000:] + got.stderr[-1000:]


def test_ruff_format_leaves_the_code_base_as_it_is():
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    got = subprocess.run([ruff, "format", "--check", "src", "tests", "tools"], cwd=REPO, capture_output=True, text=True)
    assert got.returncode == 0, "run `ruff format src tests tools`:\n" + got.stdout[-3000:] + got.stderr[-1000:]
