"""The package type-checks under mypy --strict and the tree passes ruff, in CI too."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True)


def test_mypy_strict_on_the_package() -> None:
    result = run("mypy", "hbd")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_on_the_tree() -> None:
    result = run("ruff", "check", "hbd", "tests", "bench")
    assert result.returncode == 0, result.stdout + result.stderr
