"""Many processes, threads and tasks on one key of a real server admit exactly the limit."""

from __future__ import annotations

import asyncio
import multiprocessing
import threading

import pytest

import ratelimit as rl
from tests._workers import _policy, hammer
from tests.conftest import Lane
from tests.servers import lane_kinds

LIMIT = 137


@pytest.mark.redis_server
@pytest.mark.parametrize("kind", [*lane_kinds(), "cluster"])
@pytest.mark.parametrize("policy", ["fixed", "bucket"])
def test_eight_processes_admit_exactly_the_limit(servers: object, kind: str, policy: str) -> None:
    server = servers.get(kind)  # type: ignore[attr-defined]
    server.reset()
    if kind == "cluster":
        startup, cluster = server.startup_nodes, True
    else:
        startup, cluster = [(server.host, server.port)], False
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(8) as pool:
        results = pool.starmap(hammer, [(startup, cluster, policy, LIMIT, 100)] * 8)
    assert sum(results) == LIMIT, results


async def test_fifty_tasks_admit_exactly_the_limit(real_lane: Lane) -> None:
    if not real_lane.is_async:
        return await _threads(real_lane)
    limiter = real_lane.limiter(_policy("fixed", LIMIT), on_error="raise")

    async def worker() -> int:
        return sum([(await limiter.hit("one-key")).allowed for _ in range(4)])

    results = await asyncio.gather(*(worker() for _ in range(50)))
    assert sum(results) == LIMIT


async def _threads(lane: Lane) -> None:
    """The sync face: 16 threads sharing one client (redis-py's pool is thread-safe)."""
    limiter = lane.limiter(_policy("bucket", LIMIT), on_error="raise").limiter
    assert isinstance(limiter, rl.Limiter)
    counts: list[int] = []

    def worker() -> None:
        counts.append(sum(limiter.hit("one-key").allowed for _ in range(15)))

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sum(counts) == LIMIT


def test_memory_store_threads_admit_exactly_the_limit() -> None:
    limiter = rl.Limiter([rl.FixedWindow(LIMIT, 3600), rl.TokenBucket(1, 3600, burst=LIMIT + 5)])
    counts: list[int] = []

    def worker() -> None:
        counts.append(sum(limiter.hit("k").allowed for _ in range(50)))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sum(counts) == LIMIT
    assert limiter.peek("k", 0).details[1].remaining == 5
