"""Limit plain functions, sync and async, with ``rl.rate_limit``.

python examples/decorator.py
"""

from __future__ import annotations

import asyncio
import time

import ratelimit as rl

emails = rl.Limiter("3/minute")


@rl.rate_limit(emails, key=lambda user_id, subject: f"user:{user_id}")
def send_email(user_id: int, subject: str) -> str:
    return f"sent {subject!r} to user {user_id}"


# A token bucket: 5 calls at once, then 5 per second. wait=True sleeps instead of raising.
api = rl.AsyncLimiter(rl.TokenBucket(rate=5, period=1, burst=5))


@rl.rate_limit(api, key=lambda host: host, wait=True, timeout=10)
async def call_api(host: str) -> str:
    return f"called {host}"


def main() -> None:
    for i in range(4):
        try:
            print(send_email(42, f"hello #{i}"))
        except rl.RateLimitExceeded as denied:
            print(f"denied: retry in {denied.retry_after:.1f}s")
    print(send_email(7, "another user has their own limit"))

    async def burst() -> float:
        started = time.monotonic()
        results = await asyncio.gather(*(call_api("api.example.com") for _ in range(8)))
        print(f"{len(results)} calls done")
        return time.monotonic() - started

    took = asyncio.run(burst())
    print(f"8 calls through a 5-call bucket took {took:.1f}s: the last 3 waited their turn")


if __name__ == "__main__":
    main()
