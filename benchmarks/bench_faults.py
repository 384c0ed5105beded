"""Denied-flood benchmark: one abuser hammering a key that is already denied.

::

    python benchmarks/bench_faults.py [--redis-url URL] [--quick] [--out FILE]

(default ``--out benchmarks/results/faults.json``)

With the limiter's cache of denied keys (on by default on Redis stores), a denied key is answered
in-process until its ``retry_after``, with ``reason="cached"``, without a round trip. This
measures checks per second of such a flood against the floor measured in the same run (redis-py's
bare ``EVALSHA`` of ``return 1`` on the same server, through the same kind of client): the
cheapest possible store call, which any limiter that asks the store on every check is bounded by.
For context it also times the same flood with the cache turned off (``deny_cache=0``: one
``EVALSHA`` per check, denied by the script).

Target: the cached flood at least 50x the floor's checks per second. Contenders run
interleaved in rounds (``_harness.interleave``); figures are medians of round throughputs and
percentiles of every call. Prints Markdown, writes JSON.
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

TARGET = 50.0  # cached denied checks per second / floor's, at least
FLOOR = "floor (EVALSHA return 1)"
CACHED = "denied, cache of denied keys (default)"
UNCACHED = "denied, deny_cache=0 (EVALSHA per check)"
KEYS = [f"abuser:{i}" for i in range(4)]  # a flood from a few keys, each already denied


def bench(url: str, run: str, rounds: int, seconds: float, warmup: float) -> dict[str, Any]:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    import ratelimit as rl

    client = redis.Redis.from_url(url, retry=Retry(NoBackoff(), 0))
    floor_sha = client.script_load("return 1")
    # An hour-long window, so nothing expires during the run: every check of the flood is a
    # denial, and a cached denial stays valid for the whole measurement.
    policy = rl.FixedWindow(10, 3600)
    store = rl.RedisStore(client)
    prefix = f"rlbench-{run}-faults"
    cached = rl.Limiter(policy, store=store, prefix=prefix, on_error="raise")
    uncached = rl.Limiter(policy, store=store, prefix=prefix, on_error="raise", deny_cache=0)
    for key in KEYS:
        for _ in range(policy.limit):
            cached.hit(key)
        d = cached.hit(key)
        if d.allowed or d.reason is not None:
            raise RuntimeError(f"setup: {key} should be denied by the store, got {d!r}")
        d = cached.hit(key)
        if d.reason != "cached":
            raise RuntimeError(f"setup: {key} should be answered from the cache, got {d!r}")
    contenders = {
        FLOOR: lambda key: client.execute_command("EVALSHA", floor_sha, 1, key),
        CACHED: cached.hit,
        UNCACHED: uncached.hit,
    }
    stats_before = client.info("commandstats")
    started = time.perf_counter()
    results = h.interleave(contenders, KEYS, rounds=rounds, seconds=seconds, warmup=warmup)
    elapsed = time.perf_counter() - started
    stats_after = client.info("commandstats")
    for key in KEYS:  # still denied, still cached: the flood never reached the store
        d = cached.hit(key)
        if d.allowed or d.reason != "cached":
            raise RuntimeError(f"after the run: {key} should still be a cached denial, got {d!r}")
    calls = {
        name: int(stats_after.get(f"cmdstat_{name}", {}).get("calls", 0))
        - int(stats_before.get(f"cmdstat_{name}", {}).get("calls", 0))
        for name in ("evalsha", "eval")
    }
    cleanup = [k for key in KEYS for k in cached.keys(key)]
    client.delete(*cleanup)
    client.close()
    floor = results[FLOOR]
    rows: dict[str, Any] = {}
    for name, result in results.items():
        row = result.summary()
        row["x_floor_ops"] = round(result.ops / floor.ops, 2)
        row["x_floor_ops_paired"] = round(1 / h.paired_ratio(result, floor), 2)
        rows[name] = row
    return {
        "contenders": rows,
        "store_calls_during_run": calls,
        "seconds": round(elapsed, 2),
        "policy": repr(policy),
    }


def table(report: dict[str, Any]) -> str:
    rows = []
    for name, r in report["result"]["contenders"].items():
        rows.append(
            [
                name,
                f"{r['ops_per_s']:,.0f}",
                f"{r['p50_us']:.2f}",
                f"{r['p99_us']:.2f}",
                "1.00x" if name == FLOOR else f"{r['x_floor_ops']:.1f}x",
            ]
        )
    return h.markdown_table(
        ["denied flood", "checks/s", "p50 µs", "p99 µs", "checks/s x floor"], rows, "lrrrr"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis-url", help="an existing server (default: start one)")
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "faults.json"))
    args = parser.parse_args()
    rounds, seconds, warmup = (5, 0.1, 0.05) if args.quick else (9, 0.4, 0.15)
    run = uuid.uuid4().hex[:8]
    pinning = h.Pinning()
    server = None
    if args.redis_url:
        url = args.redis_url
    else:
        server = h.start_server(pinning)
        url = server.url
    h.pin_process(pinning)
    print(f"pinning: {pinning.describe()}", flush=True)
    try:
        result = bench(url, run, rounds, seconds, warmup)
    finally:
        if server is not None:
            server.stop()
    ratio = result["contenders"][CACHED]["x_floor_ops"]
    import redis

    import ratelimit

    report: dict[str, Any] = {
        "benchmark": "faults (denied flood)",
        "command": " ".join([os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]]),
        "quick": args.quick,
        "settings": {
            "rounds": rounds,
            "seconds_per_round": seconds,
            "warmup_seconds": warmup,
            "keys": len(KEYS),
        },
        "machine": h.machine_info(),
        "versions": {
            "ratelimit": ratelimit.__version__,
            "redis": redis.__version__,
            "hiredis": h.version_of("hiredis"),
        },
        "server": {
            "binary": server.binary if server else None,
            "origin": server.origin if server else "--redis-url",
        },
        "pinning": pinning.as_dict(),
        "result": result,
        "target": {
            "target": f"cached denied flood >= {TARGET:.0f}x the floor's checks/s",
            "measured": ratio,
            "pass": ratio >= TARGET,
        },
    }
    print()
    print(table(report))
    print(
        f"\nstore calls during the run: {result['store_calls_during_run']} "
        f"(the floor's and the uncached limiter's; none from the cached flood)"
    )
    verdict = "pass" if ratio >= TARGET else "MISS"
    print(f"target: cached denied flood >= {TARGET:.0f}x floor: {ratio:.1f}x ({verdict})")
    h.write_json(args.out, report)
    print(f"JSON: {args.out}")
    return 0 if ratio >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
