"""A burst against a limiter on the in-process memory store: no Redis needed.

python examples/quickstart.py
"""

from __future__ import annotations

import ratelimit as rl


def main() -> None:
    # 5 requests per 10 seconds, and at most 2 at once refilled at 1 per second.
    limiter = rl.Limiter([rl.FixedWindow(5, 10), rl.TokenBucket(1, 1, burst=2)])
    print(f"limiter: {limiter}")
    for i in range(1, 5):
        d = limiter.hit("user:42")
        verdict = "allowed" if d.allowed else f"denied, retry in {d.retry_after:.3f}s"
        print(f"hit {i}: {verdict:<28} remaining={d.remaining} (binding: {d.policy})")
    print("waiting for the bucket to refill...")
    d = limiter.wait("user:42", timeout=2)
    print(f"after wait: allowed={d.allowed} remaining={d.remaining}")
    print(f"peek (charges nothing): {limiter.peek('user:42')}")


if __name__ == "__main__":
    main()
