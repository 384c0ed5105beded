"""Cold start: ``import ratelimit`` imports no client library, web framework or asyncio.

Each check runs in a fresh interpreter and compares ``sys.modules`` before and after, so what
the interpreter's own start-up loaded does not count. Timing is the benchmark's business
(``benchmarks/bench_import.py``); this is about what gets imported.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("redis", "httpx", "upstash_redis", "starlette", "fastapi", "flask", "asyncio")

PROBE = """
import json, sys
heavy = {heavy!r}
before = set(sys.modules)
preloaded = sorted(m for m in heavy if m in before)
{code}
new = set(sys.modules) - before
print(json.dumps({{"preloaded": preloaded,
                  "imported": sorted(m for m in new if m.split(".")[0] in heavy)}}))
"""


def imported_by(code: str) -> list[str]:
    """The heavy modules that running ``code`` in a fresh interpreter imports."""
    probe = PROBE.format(heavy=HEAVY, code=code)
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["preloaded"] == [], f"the interpreter preloads {result['preloaded']}"
    return result["imported"]  # type: ignore[no-any-return]


def test_import_ratelimit_imports_none_of_the_heavy_modules() -> None:
    assert imported_by("import ratelimit") == []


def test_using_the_memory_limiter_imports_none_of_them() -> None:
    code = """
import ratelimit as rl
limiter = rl.Limiter("10/second; 1000/day")
assert limiter.hit("k").allowed and limiter.peek("k").remaining == 9
limiter.reset("k")
rl.Limiter([rl.TokenBucket(5, 1, burst=10), rl.SlidingWindow(100, 60)]).hit("k", cost=3)
"""
    assert imported_by(code) == []


def test_naming_the_http_stores_imports_no_client() -> None:
    """``rl.UpstashStore`` is a lazy attribute; the client libraries load when one is built."""
    code = """
import ratelimit as rl
assert rl.UpstashStore.__name__ == "UpstashStore" and rl.AsyncUpstashStore
import ratelimit.stores.upstash, ratelimit.stores.redis
"""
    assert imported_by(code) == []


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("rl.UpstashStore.from_url('http://127.0.0.1:9', 't').client.close()", "upstash_redis"),
        ("rl.RedisStore.from_url('redis://127.0.0.1:9').client.close()", "redis"),
    ],
    ids=["upstash", "redis"],
)
def test_building_a_store_imports_its_client(code: str, expected: str) -> None:
    """The probe can see an import: building a store loads its client library, then."""
    assert expected in imported_by(f"import ratelimit as rl\n{code}")
