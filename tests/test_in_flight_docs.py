"""The examples of docs/in-flight.md run as written, as a script, and print what they say
(tests/test_docs.py runs them too; this checks their output)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _blocks() -> list[str]:
    text = (ROOT / "docs" / "in-flight.md").read_text(encoding="utf-8")
    return re.findall(r"```python\n(.*?)```", text, re.DOTALL)


def _run(code: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=60,
        cwd=ROOT,
    ).stdout  # fmt: skip
    return out.splitlines()


def test_the_llm_proxy_example_settles_the_real_token_count() -> None:
    lines = _run(_blocks()[0])
    assert lines[0] == "['PROMPT 0', 'PROMPT 1']"
    assert lines[1] == "third in flight denied: Concurrency(limit=2, lease=120)"
    assert lines[2] == "tokens left for ada: 19988"


def test_the_login_example_counts_failed_attempts_only() -> None:
    lines = _run(_blocks()[1])
    assert lines[0] == str([200] * 10)
    assert lines[1] == str([401] * 5 + [429])
