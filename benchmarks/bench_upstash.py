"""Redis over HTTP: ``UpstashStore`` / ``AsyncUpstashStore`` checks against the endpoint's bare
round trip, through the same ``upstash-redis`` client, in the same run.

::

    python benchmarks/bench_upstash.py [--quick] [--out benchmarks/results/upstash.json]

It starts a Redis server of its own and, in a separate process (so it does not share this
process's GIL), the test suite's Upstash-compatible REST endpoint (``tests/upstash_endpoint.py``)
in front of it. For the sync and the async client it then times, interleaved in rounds:

- the floor: ``PING`` through the client (one HTTP request, the cheapest command);
- ``EVALSHA`` of a one-line script through the client (what any script call costs);
- our limiter's ``hit`` with one policy (sliding window), and with two (plus a daily cap).

Figures: checks per second (median of the rounds' throughputs), p50 and p99 latency over all
calls, and each as a ratio to the floor. Absolute numbers belong to this machine and to a
Python stand-in for Upstash; the ratios say what the limiter adds to one HTTP round trip.
Prints Markdown, writes JSON (and the Markdown beside it).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)  # measure this checkout's ratelimit, not an installed copy
sys.path.insert(0, HERE)

import _harness as h  # noqa: E402

TOKEN = "bench-token"
KEYS = [f"user:{i}" for i in range(8)]
RATE = 1_000_000  # per minute: every hit of the run is allowed
CAP = 10_000_000  # per day: the second policy
FLOOR = "PING (floor)"
SCRIPT = "EVALSHA return 1"
ONE = "ratelimit hit, 1 policy"
TWO = "ratelimit hit, 2 policies"


@dataclass
class Settings:
    rounds: int
    seconds: float  # per contender per round
    warmup: float


FULL = Settings(rounds=7, seconds=1.5, warmup=0.3)
QUICK = Settings(rounds=3, seconds=0.4, warmup=0.1)


@dataclass
class Timing:
    """One contender: throughput per round, every call's latency."""

    round_ops: list[float] = field(default_factory=list)
    samples_ns: list[int] = field(default_factory=list)

    def summary(self, floor: Timing | None) -> dict[str, Any]:
        ordered = sorted(self.samples_ns)
        out: dict[str, Any] = {
            "checks_per_s": round(h.median(self.round_ops), 1),
            "p50_us": round(h.percentile(ordered, 50) / 1000, 1),
            "p99_us": round(h.percentile(ordered, 99) / 1000, 1),
            "calls": len(ordered),
        }
        if floor is not None:
            base = sorted(floor.samples_ns)
            # time per call against the floor's in the same round, median over rounds
            ratios = [f / o for o, f in zip(self.round_ops, floor.round_ops, strict=True)]
            out["x_floor"] = round(h.median(ratios), 3)
            out["p50_x_floor"] = round(h.percentile(ordered, 50) / h.percentile(base, 50), 3)
            out["p99_x_floor"] = round(h.percentile(ordered, 99) / h.percentile(base, 99), 3)
        return out


# --- the endpoint, in a process of its own ------------------------------------------------------

ENDPOINT_MAIN = """
import sys
sys.path.insert(0, {root!r})
from tests.upstash_endpoint import UpstashEndpoint
endpoint = UpstashEndpoint({redis_url!r}, {token!r}).start()
print(endpoint.url, flush=True)
sys.stdin.read()  # until the benchmark closes our stdin
endpoint.stop()
"""


class Endpoint:
    """The REST endpoint in a child process, pinned beside the server when possible."""

    def __init__(self, redis_url: str, pinning: h.Pinning) -> None:
        command = [sys.executable, "-c", ENDPOINT_MAIN.format(root=ROOT, redis_url=redis_url,
                                                              token=TOKEN)]  # fmt: skip
        if pinning.server_cpu is not None and shutil.which("taskset"):
            command = ["taskset", "-c", str(pinning.server_cpu), *command]
            self.pinned = f"CPU {pinning.server_cpu}, with the server"
        else:
            self.pinned = "not pinned"
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True)  # fmt: skip
        assert self.process.stdout is not None
        self.url = self.process.stdout.readline().strip()
        if not self.url.startswith("http://"):
            self.stop()
            raise RuntimeError("the endpoint did not start")

    def stop(self) -> None:
        process = self.process
        if process.poll() is None:
            assert process.stdin is not None
            process.stdin.close()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


# --- timing ---------------------------------------------------------------------------------


def run_sync(contenders: dict[str, Callable[[str], object]], s: Settings) -> dict[str, Timing]:
    def batch(fn: Callable[[str], object], seconds: float, out: list[int] | None) -> float:
        clock = time.perf_counter_ns
        calls, start = 0, clock()
        end = start + int(seconds * 1e9)
        t1 = start
        while t1 < end:
            for key in KEYS:
                t0 = clock()
                fn(key)
                t1 = clock()
                if out is not None:
                    out.append(t1 - t0)
            calls += len(KEYS)
        return calls * 1e9 / (t1 - start)

    return _rounds(contenders, s, batch)


def run_async(contenders: dict[str, Callable[[str], Awaitable[object]]], s: Settings,
              loop: asyncio.AbstractEventLoop) -> dict[str, Timing]:  # fmt: skip
    async def batch(fn: Callable[[str], Awaitable[object]], seconds: float,
                    out: list[int] | None) -> float:  # fmt: skip
        clock = time.perf_counter_ns
        calls, start = 0, clock()
        end = start + int(seconds * 1e9)
        t1 = start
        while t1 < end:
            for key in KEYS:
                t0 = clock()
                await fn(key)
                t1 = clock()
                if out is not None:
                    out.append(t1 - t0)
            calls += len(KEYS)
        return calls * 1e9 / (t1 - start)

    async def run() -> dict[str, Timing]:
        names = list(contenders)
        for name in names:
            await batch(contenders[name], s.warmup, None)
        timings = {name: Timing() for name in names}
        for r in range(s.rounds):
            for name in names if r % 2 == 0 else names[::-1]:
                gc.collect()
                t = timings[name]
                t.round_ops.append(await batch(contenders[name], s.seconds, t.samples_ns))
        return timings

    return loop.run_until_complete(run())


def _rounds(contenders: dict[str, Callable[[str], object]], s: Settings,
            batch: Callable[..., float]) -> dict[str, Timing]:  # fmt: skip
    """Every contender once per round, order reversed every other round (drift lands on all
    alike), after an untimed warm-up (script loaded, connection open)."""
    names = list(contenders)
    for name in names:
        batch(contenders[name], s.warmup, None)
    timings = {name: Timing() for name in names}
    for r in range(s.rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            gc.collect()
            t = timings[name]
            t.round_ops.append(batch(contenders[name], s.seconds, t.samples_ns))
    return timings


# --- the contenders ---------------------------------------------------------------------------


def policies(n: int) -> list[Any]:
    import ratelimit as rl

    first = rl.SlidingWindow(RATE, 60)
    return [first] if n == 1 else [first, rl.FixedWindow(CAP, 86_400)]


def _client(cls: Any, url: str) -> Any:
    import httpx

    client = cls(url=url, token=TOKEN, rest_retries=0, allow_telemetry=False)
    client._http._client.timeout = httpx.Timeout(10.0)  # a slow call is timed, not failed
    return client


def bench_sync(url: str, s: Settings) -> dict[str, Timing]:
    import upstash_redis

    import ratelimit as rl

    client = _client(upstash_redis.Redis, url)
    try:
        sha = client.script_load("return 1")
        store = rl.UpstashStore(client)
        one = rl.Limiter(policies(1), store=store, prefix="bench1", on_error="raise")
        two = rl.Limiter(policies(2), store=store, prefix="bench2", on_error="raise")
        for limiter in (one, two):
            d = limiter.hit(KEYS[0])
            if not d.allowed or d.reason is not None:
                raise RuntimeError(f"the setup is wrong: a first hit gave {d}")
        contenders: dict[str, Callable[[str], object]] = {
            FLOOR: lambda key: client.ping(),
            SCRIPT: lambda key: client.evalsha(sha),
            ONE: one.hit,
            TWO: two.hit,
        }
        return run_sync(contenders, s)
    finally:
        client.close()


def bench_async(url: str, s: Settings) -> dict[str, Timing]:
    import upstash_redis.asyncio

    import ratelimit as rl

    loop = asyncio.new_event_loop()
    client = _client(upstash_redis.asyncio.Redis, url)
    try:
        sha = loop.run_until_complete(client.script_load("return 1"))
        store = rl.AsyncUpstashStore(client)
        one = rl.AsyncLimiter(policies(1), store=store, prefix="abench1", on_error="raise")
        two = rl.AsyncLimiter(policies(2), store=store, prefix="abench2", on_error="raise")
        for limiter in (one, two):
            d = loop.run_until_complete(limiter.hit(KEYS[0]))
            if not d.allowed or d.reason is not None:
                raise RuntimeError(f"the setup is wrong: a first hit gave {d}")
        contenders: dict[str, Callable[[str], Awaitable[object]]] = {
            FLOOR: lambda key: client.ping(),
            SCRIPT: lambda key: client.evalsha(sha),
            ONE: one.hit,
            TWO: two.hit,
        }
        return run_async(contenders, s, loop)
    finally:
        loop.run_until_complete(client.close())
        loop.close()


# --- reporting --------------------------------------------------------------------------------


def table(report: dict[str, Any]) -> str:
    rows = []
    for face in ("sync", "async"):
        for name, r in report[face].items():
            rows.append([face, name, f"{r['checks_per_s']:,.0f}", f"{r['p50_us']:.0f}",
                         f"{r['p99_us']:.0f}", f"{r.get('x_floor', 1.0):.2f}x",
                         f"{r.get('p50_x_floor', 1.0):.2f}x",
                         f"{r.get('p99_x_floor', 1.0):.2f}x"])  # fmt: skip
    head = ["client", "call", "calls/s", "p50 µs", "p99 µs", "time x PING", "p50 x PING",
            "p99 x PING"]  # fmt: skip
    return f"Through the local Upstash REST endpoint ({report['setup']})\n\n" + h.markdown_table(
        head, rows, "llrrrrrr"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "upstash.json"))
    args = parser.parse_args()
    s = QUICK if args.quick else FULL
    pinning = h.Pinning()
    server = h.start_server(pinning)
    h.pin_process(pinning)
    endpoint = Endpoint(server.url, pinning)
    try:
        report: dict[str, Any] = {
            "machine": h.machine_info(),
            "versions": {name: h.version_of(name) for name in ("upstash-redis", "httpx")},
            "server": {"binary": server.binary, "origin": server.origin},
            "pinning": pinning.as_dict(),
            "setup": f"{pinning.describe()}; endpoint: {endpoint.pinned}; {s.rounds} rounds "
            f"of {s.seconds}s per call kind, one call in flight",
            "settings": s.__dict__,
        }
        for face, bench in (("sync", bench_sync), ("async", bench_async)):
            started = time.perf_counter()
            timings = bench(endpoint.url, s)
            floor = timings[FLOOR]
            report[face] = {name: t.summary(None if name == FLOOR else floor)
                            for name, t in timings.items()}  # fmt: skip
            print(f"  {face}: {time.perf_counter() - started:.1f}s", flush=True)
    finally:
        endpoint.stop()
        server.stop()
    text = table(report)
    report["markdown"] = text
    h.write_json(args.out, report)
    with open(os.path.splitext(args.out)[0] + ".md", "w", encoding="utf-8") as f:
        f.write(text + "\n")
    print(text)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
