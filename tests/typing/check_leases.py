"""Type checks only (``mypy --strict tests/typing/check_leases.py``; never run): the faces of
``acquire`` as the README writes them, sync and async."""

from __future__ import annotations

import ratelimit as rl

limiter = rl.Limiter([rl.Concurrency(2, lease=60), rl.TokenBucket(100, 60)])
alimiter = rl.AsyncLimiter([rl.Concurrency(2), rl.TokenBucket(100, 60)])


def sync_use() -> None:
    lease: rl.Lease = limiter.acquire("user:42", cost=5)
    allowed: bool = lease.allowed
    decision: rl.Decision = lease.decision
    renewed: bool = lease.renew()
    lease.settle(3)
    lease.release()
    with limiter.acquire("user:42") as held:
        remaining: int = held.remaining
    print(allowed, decision, renewed, remaining)


async def async_use() -> None:
    lease: rl.AsyncLease = await alimiter.acquire("user:42", cost=5)
    renewed: bool = await lease.renew()
    await lease.settle(3)
    await lease.release()
    async with alimiter.acquire("user:42") as held:
        remaining: int = held.remaining
    print(renewed, remaining)
