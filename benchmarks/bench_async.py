"""Async benchmark: ``AsyncLimiter.hit`` on Redis at 1, 10, 50 and 200 concurrent tasks.

Contenders, all on one server this script starts (or ``--redis-url``), in the same rounds:

- **ratelimit**: ``AsyncLimiter(policy, store=AsyncRedisStore.from_url(url))``, as the README
  recommends: checks of concurrent tasks are pipelined automatically.
- **ratelimit, unpipelined**: the same store sending each check as its own request (the store's
  command swapped back to the client's ``execute_command``): what the store did before.
- **limits.aio**: ``limits.aio.strategies`` with ``limits.aio.storage.RedisStorage`` on
  redis-py's asyncio client (``implementation="redispy"``), the same algorithm.

Each round runs every contender once, in alternating order, for ``--seconds``: ``N`` tasks
each call ``hit`` in a loop on their own key. Figures: the median over rounds of checks per
second, and the ratio to ``limits.aio`` in the same rounds (``x limits`` > 1: faster).
Writes ``benchmarks/results/async.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import _harness as h

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

RATE = 1_000_000_000  # per minute: every hit is allowed
TASKS = (1, 10, 50, 200)
ALGORITHMS = ("fixed_window", "sliding_window")

Hit = Callable[[str], Awaitable[object]]


async def run_tasks(fn: Hit, tasks: int, seconds: float, samples: list[int]) -> float:
    """``tasks`` tasks call ``fn`` on their own key for ``seconds``; returns checks/s."""
    clock = time.perf_counter_ns
    deadline = clock() + int(seconds * 1e9)
    counts = [0] * tasks

    async def worker(i: int) -> None:
        key = f"user:{i}"
        append = samples.append
        n = 0
        while True:
            t0 = clock()
            await fn(key)
            t1 = clock()
            append(t1 - t0)
            n += 1
            if t1 >= deadline:
                break
        counts[i] = n

    start = clock()
    await asyncio.gather(*(worker(i) for i in range(tasks)))
    return sum(counts) * 1e9 / (clock() - start)


async def contenders(
    url: str, algorithm: str, run: str, timeout: float
) -> tuple[dict[str, Hit], list[Any]]:
    import ratelimit as rl

    # from_url's limiter-grade settings (blocking pool of 100, no retries), with socket
    # timeouts of --timeout and a pool wait of 5x that: on a loaded machine 50 ms and 0.5 s
    # fail the run instead of timing it (200 unpipelined tasks queue for 100 connections)
    grade = {"socket_timeout": timeout, "socket_connect_timeout": timeout, "timeout": 5 * timeout}
    policy = {"fixed_window": rl.FixedWindow, "sliding_window": rl.SlidingWindow}[algorithm]
    out: dict[str, Hit] = {}
    to_close: list[Any] = []
    store = rl.AsyncRedisStore.from_url(url, **grade)
    out["ratelimit"] = rl.AsyncLimiter(
        policy(RATE, 60), store=store, prefix=f"rlbench-{run}-a", on_error="raise"
    ).hit
    plain = rl.AsyncRedisStore.from_url(url, **grade)
    plain._pipelined = None  # the store sends each check as its own request
    out["ratelimit, unpipelined"] = rl.AsyncLimiter(
        policy(RATE, 60), store=plain, prefix=f"rlbench-{run}-b", on_error="raise"
    ).hit
    to_close += [store.client, plain.client]
    try:
        from limits import RateLimitItemPerMinute
        from limits.aio import strategies
        from limits.aio.storage import RedisStorage
    except ImportError:
        print("note: limits not installed: skipped")
    else:
        storage = RedisStorage(
            "async+" + url,
            implementation="redispy",
            key_prefix=f"rlbench-{run}-limits",
            max_connections=max(TASKS) + 10,  # its default pool refuses a 200-task burst
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
        )
        strategy = {
            "fixed_window": strategies.FixedWindowRateLimiter,
            "sliding_window": strategies.SlidingWindowCounterRateLimiter,
        }[algorithm](storage)
        item = RateLimitItemPerMinute(RATE)

        async def limits_hit(key: str) -> object:
            return await strategy.hit(item, key)

        out["limits.aio"] = limits_hit
    return out, to_close


async def bench(
    url: str, run: str, rounds: int, seconds: float, counts: tuple[int, ...], timeout: float
) -> list[dict[str, Any]]:
    groups = []
    for algorithm in ALGORITHMS:
        fns, to_close = await contenders(url, algorithm, run, timeout)
        for fn in fns.values():  # scripts loaded, connections open
            await run_tasks(fn, 50, 0.1, [])
        for tasks in counts:
            ops: dict[str, list[float]] = {name: [] for name in fns}
            samples: dict[str, list[int]] = {name: [] for name in fns}
            names = list(fns)
            for r in range(rounds):
                for name in names if r % 2 == 0 else names[::-1]:
                    gc.collect()
                    ops[name].append(await run_tasks(fns[name], tasks, seconds, samples[name]))
            rows = {}
            for name in names:
                ordered = sorted(samples[name])
                row: dict[str, Any] = {
                    "checks_per_s": round(h.median(ops[name]), 1),
                    "round_checks_per_s": [round(x, 1) for x in ops[name]],
                    "p50_us": round(h.percentile(ordered, 50) / 1000, 1),
                    "p99_us": round(h.percentile(ordered, 99) / 1000, 1),
                }
                if "limits.aio" in ops:
                    base = ops["limits.aio"]
                    row["x_limits"] = round(h.median(ops[name]) / h.median(base), 3)
                    row["x_limits_paired"] = round(
                        h.median([a / b for a, b in zip(ops[name], base, strict=True)]), 3
                    )
                rows[name] = row
            groups.append({"algorithm": algorithm, "tasks": tasks, "contenders": rows})
            shown = ", ".join(
                f"{n} {r['checks_per_s']:,.0f}/s"
                + (f" ({r['x_limits']:.2f}x limits)" if "x_limits" in r else "")
                for n, r in rows.items()
            )
            print(f"  {algorithm:14} {tasks:3} tasks: {shown}", flush=True)
        for client in to_close:
            await client.aclose()
    return groups


def cleanup(url: str, run: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    for key in client.scan_iter(match=f"rlbench-{run}*", count=1000):
        client.delete(key)
    client.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis-url", help="use this server instead of starting one")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=0.5, help="per contender and round")
    parser.add_argument("--tasks", default=",".join(map(str, TASKS)), help="e.g. 1,10,50,200")
    parser.add_argument(
        "--timeout", type=float, default=1.0, help="socket timeouts of every contender (s)"
    )
    parser.add_argument("--out", default=os.path.join(HERE, "results", "async.json"))
    args = parser.parse_args(argv)
    run = os.urandom(4).hex()
    pinning, server, url = h.server_for(args.redis_url)
    started = time.perf_counter()
    try:
        tasks = tuple(int(t) for t in args.tasks.split(","))
        groups = asyncio.run(bench(url, run, args.rounds, args.seconds, tasks, args.timeout))
    finally:
        if server is not None:
            server.stop()
        else:
            cleanup(url, run)
    rows = []
    for g in groups:
        for name, r in g["contenders"].items():
            ratio = f"{r['x_limits']:.2f}x" if "x_limits" in r else "-"
            label = g["algorithm"].replace("_", " ")
            speed = f"{r['checks_per_s']:,.0f}"
            rows.append([label, g["tasks"], name, speed, r["p50_us"], r["p99_us"], ratio])
    print()
    print(
        h.markdown_table(
            ["algorithm", "tasks", "library", "checks/s", "p50 µs", "p99 µs", "x limits.aio"],
            rows,
            "lrlrrrr",
        )
    )
    report = {
        "benchmark": "async",
        "command": " ".join([os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]]),
        "settings": {
            "rounds": args.rounds,
            "seconds_per_round": args.seconds,
            "tasks": tasks,
            "socket_timeout": args.timeout,
        },
        "machine": h.machine_info(),
        "load_average": os.getloadavg(),
        "versions": {d: h.version_of(d) for d in ("redis", "hiredis", "limits")},
        "pinning": pinning.as_dict(),
        "groups": groups,
        "elapsed_s": round(time.perf_counter() - started, 1),
    }
    h.write_json(args.out, report)
    print(f"\nJSON: {args.out}; elapsed {report['elapsed_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
