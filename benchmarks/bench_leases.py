"""Lease benchmark: ``acquire`` + ``release`` on Redis against two floor calls.

::

    python benchmarks/bench_leases.py [--redis-url URL] [--quick] [--out FILE.json]

A lease costs two round trips (acquire before the work, release after it), so its floor is
two bare ``EVALSHA`` calls through the same client on the same server: the ``INCR`` +
``PEXPIRE`` script of bench_core.py twice. Contenders, interleaved in rounds on a server the
script starts (pinned as in bench_core.py):

- floor x2: two ``EVALSHA`` of the counting script per iteration;
- acquire + release, one policy: ``Concurrency(1_000_000, lease=60)``;
- acquire + release, two policies: the same and a ``TokenBucket`` (one script call checks and
  charges both);
- acquire + settle + release, two policies: the LLM-proxy pattern (three calls);
- hit, one policy (``FixedWindow``): one round trip, for scale.

Each is reported as iterations per second, p50/p99 latency per iteration, and the ratio of its
time per iteration to the floor's, measured in the same run (median of per-round ratios).
Prints Markdown and writes JSON.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)  # measure this checkout's ratelimit, not an installed copy
sys.path.insert(0, HERE)

import _harness as h  # noqa: E402

FLOOR = "floor x2 (two EVALSHA INCR + PEXPIRE)"
COUNT_SCRIPT = (
    "local n = redis.call('INCR', KEYS[1])\nredis.call('PEXPIRE', KEYS[1], ARGV[1])\nreturn n"
)
KEYS = [f"user:{i}" for i in range(8)]


def contenders(url: str, run: str) -> dict[str, Any]:
    import redis

    import ratelimit as rl

    client = redis.Redis.from_url(url)
    sha = client.script_load(COUNT_SCRIPT)
    evalsha = client.evalsha

    def floor(key: str) -> None:
        evalsha(sha, 1, f"floor:{run}:{key}", 60_000)
        evalsha(sha, 1, f"floor2:{run}:{key}", 60_000)

    # a loaded machine must not turn a slow reply into an on_error decision: every figure is
    # a store call that answered (on_error="raise" fails the run otherwise)
    store = rl.RedisStore.from_url(url, socket_timeout=2.0)
    slots = rl.Concurrency(1_000_000, lease=60)
    bucket = rl.TokenBucket(1_000_000_000, 60, burst=1_000_000_000)
    one = rl.Limiter(slots, store=store, prefix=f"l1{run}", on_error="raise")
    two = rl.Limiter([slots, bucket], store=store, prefix=f"l2{run}", on_error="raise")
    window = rl.Limiter(
        rl.FixedWindow(1_000_000_000, 60), store=store, prefix=f"h{run}", on_error="raise"
    )

    def lease_one(key: str) -> None:
        one.acquire(key).release()

    def lease_two(key: str) -> None:
        two.acquire(key).release()

    def lease_settle(key: str) -> None:
        lease = two.acquire(key, 10)
        lease.settle(3)
        lease.release()

    def hit(key: str) -> None:
        window.hit(key)

    return {
        FLOOR: floor,
        "acquire + release, 1 policy": lease_one,
        "acquire + release, 2 policies": lease_two,
        "acquire + settle + release, 2 policies": lease_settle,
        "hit, 1 policy (one round trip)": hit,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", help="a server to use instead of starting one")
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "leases.json"))
    args = parser.parse_args(argv)
    rounds, seconds, warmup = (3, 0.3, 0.1) if args.quick else (9, 1.0, 0.3)
    pinning, server, url = h.server_for(args.redis_url)
    started = time.perf_counter()
    try:
        results = h.interleave(
            contenders(url, uuid.uuid4().hex[:8]), KEYS, rounds=rounds, seconds=seconds,
            warmup=warmup,
        )  # fmt: skip
    finally:
        if server is not None:
            server.stop()
    base = results[FLOOR]
    rows = []
    report: dict[str, Any] = {"machine": h.machine_info(), "pinning": pinning.as_dict(),
                              "rounds": rounds, "seconds": seconds, "results": {}}  # fmt: skip
    for name, result in results.items():
        ratio = h.paired_ratio(result, base)
        rows.append((name, f"{result.ops:,.0f}", f"{result.latency_us(50):.1f}",
                     f"{result.latency_us(99):.1f}", f"{ratio:.2f}"))  # fmt: skip
        report["results"][name] = {**result.summary(), "time_x_floor": round(ratio, 3)}
    print(h.markdown_table(["per iteration", "iterations/s", "p50 us", "p99 us", "time x floor"],
                           rows))  # fmt: skip
    print(f"({time.perf_counter() - started:.0f} s)")
    h.write_json(args.out, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
