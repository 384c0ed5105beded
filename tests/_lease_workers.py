"""Worker functions for the multi-process lease tests (importable by spawned interpreters)."""

from __future__ import annotations

import threading
import time
from typing import Any

import ratelimit as rl


def _client(host: str, port: int) -> Any:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Redis(host=host, port=port, retry=Retry(NoBackoff(), 0))


def hold_and_count(host: str, port: int, limit: int, threads: int, rounds: int,
                   in_flight: Any, peak: Any, admitted: Any) -> None:  # fmt: skip
    """``threads`` threads each acquire ``rounds`` times on one identifier; while a lease is
    held, the shared ``in_flight`` counter is one higher, and ``peak`` keeps its maximum."""
    client = _client(host, port)
    limiter = rl.Limiter(rl.Concurrency(limit, lease=30), store=rl.RedisStore(client),
                         prefix="leaseload", on_error="raise")  # fmt: skip

    def worker() -> None:
        for _ in range(rounds):
            lease = limiter.acquire("one-key")
            if not lease.allowed:
                time.sleep(0.001)
                continue
            with in_flight.get_lock():
                in_flight.value += 1
                peak.value = max(peak.value, in_flight.value)
                admitted.value += 1
            time.sleep(0.002)
            with in_flight.get_lock():
                in_flight.value -= 1
            lease.release()

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=120)
    client.close()


def hold_until_killed(host: str, port: int, limit: int, lease: float, ready: Any) -> None:
    """Take ``limit`` slots, say when (``ready``: the wall time after the acquires), then wait
    to be killed, never releasing."""
    limiter = rl.Limiter(rl.Concurrency(limit, lease=lease),
                         store=rl.RedisStore(_client(host, port)), prefix="leasekill")  # fmt: skip
    held = [limiter.acquire("one-key") for _ in range(limit)]
    ready.put((all(lease.allowed for lease in held), time.time()))
    time.sleep(600)
