"""``ratelimit.otel.Metrics`` read back through the OpenTelemetry SDK's InMemoryMetricReader:
outcomes, near-limit, store durations, breaker state, series that never grow with the number of
clients, and no OpenTelemetry import before a Metrics is built."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import ratelimit as rl
import ratelimit.limiter
from ratelimit.limiter import TIME_EVERY
from ratelimit.otel import Metrics
from tests.support import Clock
from tests.test_reliability import FlakyStore

ROOT = Path(__file__).resolve().parent.parent


def sdk() -> tuple[MeterProvider, InMemoryMetricReader]:
    reader = InMemoryMetricReader()
    return MeterProvider(metric_readers=[reader]), reader


def points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    """The data points of every ratelimit instrument, by instrument name."""
    data = reader.get_metrics_data()
    out: dict[str, list[Any]] = {}
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            if scope.scope.name != "ratelimit":
                continue
            for metric in scope.metrics:
                out[metric.name] = list(metric.data.data_points)
    return out


def checks(reader: InMemoryMetricReader) -> dict[tuple[Any, ...], int]:
    """``ratelimit.checks`` as {(outcome, prefix, policy, near_limit or None): count}."""
    return {
        (
            p.attributes["ratelimit.outcome"],
            p.attributes["ratelimit.prefix"],
            p.attributes["ratelimit.policy"],
            p.attributes.get("ratelimit.near_limit"),
        ): p.value
        for p in points(reader).get("ratelimit.checks", [])
    }


def test_nothing_imports_opentelemetry_until_a_metrics_is_built() -> None:
    code = (
        "import sys, ratelimit, ratelimit.otel\n"
        "loaded = lambda: sorted(m for m in sys.modules if m.startswith('opentelemetry'))\n"
        "assert loaded() == [], loaded()\n"
        "ratelimit.otel.Metrics()\n"
        "assert 'opentelemetry.metrics' in loaded(), loaded()\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_checks_are_counted_by_outcome_prefix_and_policy(
    clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ratelimit.limiter, "TIME_EVERY", 0.0)  # time every store call
    provider, reader = sdk()
    metrics = Metrics(provider)
    policy = rl.FixedWindow(5, 60)
    store = FlakyStore(clock)
    limiter = rl.Limiter(policy, store=store, prefix="api", clock=clock, deny_cache=10,
                         on_event=metrics)  # fmt: skip
    shadow = rl.Limiter(policy, prefix="new", clock=clock, shadow=True, on_event=metrics)
    for _ in range(7):
        limiter.hit("user:1")  # 5 allowed (the last two 80% or more used), denied, cached
    for _ in range(6):
        shadow.hit("user:1")  # 5 allowed, one would-be denial
    store.down = True
    limiter.hit("user:2")  # store_error: the breaker opens
    limiter.hit("user:3")  # store_error: the breaker kept the call from the store
    got = checks(reader)
    assert got == {
        ("allowed", "api", policy.id, False): 3,
        ("allowed", "api", policy.id, True): 2,
        ("denied", "api", policy.id, None): 1,
        ("cached", "api", policy.id, None): 1,
        ("store_error", "api", policy.id, None): 2,
        ("allowed", "new", policy.id, False): 3,
        ("allowed", "new", policy.id, True): 2,
        ("shadow_denied", "new", policy.id, None): 1,
    }
    found = points(reader)
    [breaker] = found["ratelimit.breaker.state"]
    assert (breaker.attributes, breaker.value) == ({"ratelimit.prefix": "api"}, 1)
    # every store call is timed: 6 answered + 1 failed on "api", 6 on "new"
    durations = {p.attributes["ratelimit.prefix"]: p for p in found["ratelimit.store.duration"]}
    assert (durations["api"].count, durations["new"].count) == (7, 6)
    assert 0 < durations["api"].sum < 1
    # counters are cumulative: a second collection sees the totals, not a delta
    clock.advance(250)
    store.down = False
    limiter.hit("user:4")
    assert checks(reader)[("allowed", "api", policy.id, False)] == 4
    [breaker] = points(reader)["ratelimit.breaker.state"]
    assert breaker.value == 0


def test_near_limit_is_80_percent_of_the_binding_policy(clock: Clock) -> None:
    provider, reader = sdk()
    limiter = rl.Limiter(rl.TokenBucket(1, 1, burst=10), clock=clock, on_event=Metrics(provider))
    for _ in range(10):
        limiter.hit("k")
    policy = limiter.policies[0].id
    # remaining 9..0 after each hit: near from remaining 2 (8 of 10 used) on
    assert checks(reader) == {
        ("allowed", "ratelimit", policy, False): 7,
        ("allowed", "ratelimit", policy, True): 3,
    }


def test_100_000_identifiers_make_no_more_series_than_one(clock: Clock) -> None:
    def series(identifiers: int, hits: int) -> tuple[set[Any], int]:
        provider, reader = sdk()
        limiter = rl.Limiter(rl.FixedWindow(2, 60), clock=clock, on_event=Metrics(provider))
        for i in range(identifiers):
            for _ in range(hits):
                limiter.hit(f"user:{i}@example.com")
        found = points(reader)
        attributes = {
            tuple(sorted(p.attributes.items())) for values in found.values() for p in values
        }
        assert not any("example.com" in str(value) for a in attributes for _, value in a)
        return attributes, sum(checks(reader).values())

    one, one_checks = series(1, 3)
    many, many_checks = series(100_000, 3)
    assert (one_checks, many_checks) == (3, 300_000)
    assert many == one and len(one) == 4  # allowed, allowed near the limit, denied; duration


def test_the_histogram_records_the_calls_the_limiter_timed(clock: Clock) -> None:
    provider, reader = sdk()
    limiter = rl.Limiter("1000/minute", clock=clock, on_event=Metrics(provider))
    started = time.perf_counter()
    for _ in range(500):
        limiter.hit("k")
    elapsed = time.perf_counter() - started
    [durations] = points(reader)["ratelimit.store.duration"]
    # the first call, then one each TIME_EVERY (10 ms) at most
    assert 1 <= durations.count <= 1 + elapsed / TIME_EVERY
    assert checks(reader)[("allowed", "ratelimit", limiter.policies[0].id, False)] == 500


def test_one_metrics_serves_sync_and_async_limiters(clock: Clock) -> None:
    import asyncio

    provider, reader = sdk()
    metrics = Metrics(provider)
    limiter = rl.AsyncLimiter("1/minute", prefix="jobs", clock=clock, on_event=metrics)

    async def run() -> None:
        await limiter.hit("a")
        await limiter.hit("a")

    asyncio.run(run())
    policy = limiter.policies[0].id
    assert checks(reader) == {
        ("allowed", "jobs", policy, True): 1,
        ("denied", "jobs", policy, None): 1,
    }


def test_the_console_example_runs() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout's ratelimit
    out = subprocess.run([sys.executable, "examples/otel_console.py"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert '"name": "ratelimit.checks"' in out.stdout
    for outcome in ("allowed", "denied", "shadow_denied"):
        assert f'"ratelimit.outcome": "{outcome}"' in out.stdout
    assert "carol" not in out.stdout  # identifiers never leave the process
