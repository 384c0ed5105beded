"""The code stays typed and lint-clean: CI runs mypy --strict and ruff as part of the suite."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def test_mypy_strict() -> None:
    result = _run("mypy", "--strict", "ratelimit")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_lint_and_format() -> None:
    lint = _run("ruff", "check", "ratelimit", "tests", "benchmarks", "examples")
    assert lint.returncode == 0, lint.stdout + lint.stderr
    fmt = _run("ruff", "format", "--check", "ratelimit", "tests", "benchmarks", "examples")
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr
