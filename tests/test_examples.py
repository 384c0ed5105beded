"""The examples run as a newcomer would run them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_quickstart_prints_a_burst_turning_into_denials() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py")],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    lines = out.splitlines()
    assert lines[1].startswith("hit 1: allowed") and lines[2].startswith("hit 2: allowed")
    assert "denied, retry in" in lines[3] and "denied, retry in" in lines[4]
    assert "after wait: allowed=True" in out
