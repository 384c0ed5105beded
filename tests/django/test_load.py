"""Proof under load: ``examples/django_app`` under 4 gunicorn workers on one real Redis,
100 concurrent requests of one client against its ``5/minute`` view admit exactly five; every
other answer is a 429 with ``Retry-After``. The same through our DRF ``Throttle``.

The harness is ``benchmarks/bench_django.py``'s (which also prints DRF's own
``UserRateThrottle`` beside ours; its number is not asserted here). Bounded: 100 requests per
burst, each with a 30 s timeout, one server start.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from benchmarks.bench_django import burst, serve_example, summarize

pytestmark = [pytest.mark.redis_server, pytest.mark.slow]

CLIENTS = 100


@pytest.fixture(scope="module")
def four_workers(redis_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log: Path = tmp_path_factory.mktemp("gunicorn") / "server.log"
    with serve_example(redis_server.url, workers=4, log=log) as base:
        yield base


@pytest.mark.parametrize(("path", "client_ip"), [("/login", "198.51.100.10"),
                                                 ("/api/ours", "198.51.100.11")])  # fmt: skip
def test_four_workers_admit_exactly_the_limit(four_workers: str, path: str,
                                              client_ip: str) -> None:  # fmt: skip
    results = burst(four_workers, path, CLIENTS, client_ip=client_ip)
    assert summarize(results) == {"admitted": 5, "denied": CLIENTS - 5,
                                  "denied_without_retry_after": 0, "other": 0}  # fmt: skip
    assert all(int(retry or 0) >= 1 for status, retry in results if status == 429)


def test_async_view_on_redis_under_wsgi_workers(four_workers: str) -> None:
    """An async view under gunicorn's sync workers runs in a new event loop per request
    (Django's async_to_sync): each loop gets its own asyncio Redis client, and the count is
    still one count across the four workers."""
    import httpx

    with httpx.Client(base_url=four_workers, timeout=30, trust_env=False) as client:
        who = {"X-Forwarded-For": "198.51.100.12"}
        statuses = [client.get("/search", headers=who).status_code for _ in range(21)]
    assert statuses == [200] * 20 + [429]
