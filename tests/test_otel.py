"""``ratelimit.otel.Metrics`` read back through the OpenTelemetry SDK's InMemoryMetricReader:
outcomes, near-limit, store durations, breaker state, series that never grow with the number of
clients, and no OpenTelemetry import before a Metrics is built."""

from __future__ import annotations

import gc
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import ratelimit as rl
import ratelimit.limiter
from ratelimit.decision import Decision
from ratelimit.errors import StoreError
from ratelimit.events import Event
from ratelimit.limiter import TIME_EVERY
from ratelimit.otel import DURATIONS, OTHER, POLICIES, Metrics
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


def allowed(policy: rl.Policy, remaining: int, prefix: str = "p") -> Event:
    decision = Decision(True, policy.limit, remaining, 1.0, 0.0, policy)
    return Event("allowed", prefix, policy, None, decision)


def test_counts_from_many_threads_are_exact() -> None:
    provider, reader = sdk()
    metrics = Metrics(provider)
    policies = [rl.FixedWindow(100, 60), rl.SlidingWindow(50, 1)]
    threads, per_thread = 8, 20_000
    start = threading.Barrier(threads)

    def run(n: int) -> None:
        start.wait()  # every thread creates the series at once, then counts on them
        for i in range(per_thread):
            policy = policies[i % 2]
            if i % 3 == 2:
                metrics(Event("denied", f"t{n % 2}", policy, None, None))
            else:
                metrics(allowed(policy, 0 if i % 5 == 0 else policy.limit, f"t{n % 2}"))

    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        workers = [threading.Thread(target=run, args=(n,)) for n in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=120)
    finally:
        sys.setswitchinterval(switch)
    got = checks(reader)
    # per thread and policy: 10,000 events, a third denied, of the others one in five near
    expected: dict[tuple[Any, ...], int] = {}
    for n in range(threads):
        for p, policy in enumerate(policies):
            indexes = range(p, per_thread, 2)
            denied = sum(1 for i in indexes if i % 3 == 2)
            near = sum(1 for i in indexes if i % 3 != 2 and i % 5 == 0)
            for series, value in (
                (("denied", f"t{n % 2}", policy.id, None), denied),
                (("allowed", f"t{n % 2}", policy.id, True), near),
                (("allowed", f"t{n % 2}", policy.id, False), len(indexes) - denied - near),
            ):
                expected[series] = expected.get(series, 0) + value
    assert got == expected
    assert sum(got.values()) == threads * per_thread


def test_series_are_per_prefix_and_binding_policy(clock: Clock) -> None:
    provider, reader = sdk()
    metrics = Metrics(provider)
    short, long = rl.FixedWindow(10, 1), rl.FixedWindow(12, 60)
    both = rl.Limiter([short, long], prefix="api", clock=clock, on_event=metrics)
    other = rl.Limiter(short, prefix="web", clock=clock, on_event=metrics)
    for _ in range(11):
        both.hit("k")  # short binds (least headroom): 7 allowed, 3 near its limit, 1 denied
    clock.advance(1000)  # short starts a new window; long has 2 left
    for _ in range(3):
        both.hit("k")  # long binds: 2 allowed near its limit, 1 denied
    other.hit("k")  # the same policy under another prefix: a series of its own
    assert checks(reader) == {
        ("allowed", "api", short.id, False): 7,
        ("allowed", "api", short.id, True): 3,
        ("denied", "api", short.id, None): 1,
        ("allowed", "api", long.id, True): 2,
        ("denied", "api", long.id, None): 1,
        ("allowed", "web", short.id, False): 1,
    }


def test_equal_policies_share_a_series_whatever_the_object() -> None:
    provider, reader = sdk()
    metrics = Metrics(provider)
    for _ in range(3):  # a new, equal policy object each time (as an override's plan cache
        metrics(allowed(rl.FixedWindow(10, 60), 9))  # rebuilds them)
    assert checks(reader) == {("allowed", "p", rl.FixedWindow(10, 60).id, False): 3}


def test_near_limit_is_a_fifth_of_the_limit_or_less_left_rounded_down() -> None:
    provider, reader = sdk()
    metrics = Metrics(provider)
    policy = rl.FixedWindow(7, 60)  # remaining * 5 <= 7: remaining 0 or 1
    for remaining in range(8):
        metrics(allowed(policy, remaining))
    assert checks(reader) == {
        ("allowed", "p", policy.id, True): 2,
        ("allowed", "p", policy.id, False): 6,
    }


def test_an_event_the_hot_path_cannot_read_is_counted_once_and_never_raises() -> None:
    provider, reader = sdk()
    metrics = Metrics(provider)
    policy = rl.FixedWindow(10, 60)
    metrics(allowed(policy, 9))  # the series exists: the next events take the hot path first
    metrics(Event("allowed", "p", policy, None, None))  # no decision: far from the limit
    metrics(Event("store_error", "p", None, StoreError("down"), None))  # no policy
    metrics(Event("breaker_open", "p", None, StoreError("down")))
    assert checks(reader) == {
        ("allowed", "p", policy.id, False): 2,
        ("store_error", "p", "", None): 1,
    }
    [breaker] = points(reader)["ratelimit.breaker.state"]
    assert breaker.value == 1


def test_store_durations_are_recorded_when_the_sdk_collects_each_once() -> None:
    provider, reader = sdk()
    metrics = Metrics(provider)
    policy = rl.FixedWindow(10, 60)
    for prefix, seconds in (("a", 0.001), ("a", 0.003), ("b", 0.002)):
        metrics(Event("allowed", prefix, policy, None, None, seconds))

    def durations() -> dict[str, tuple[int, float]]:
        found = points(reader)["ratelimit.store.duration"]
        return {p.attributes["ratelimit.prefix"]: (p.count, round(p.sum, 6)) for p in found}

    assert durations() == {"a": (2, 0.004), "b": (1, 0.002)}
    assert len(metrics._durations) == 0  # handed over to the SDK
    assert durations() == {"a": (2, 0.004), "b": (1, 0.002)}  # cumulative, never twice


def test_store_durations_kept_between_collections_are_bounded() -> None:
    provider, reader = sdk()
    metrics = Metrics(provider)
    policy = rl.FixedWindow(10, 60)
    for i in range(DURATIONS + 5):
        metrics(Event("allowed", "a", policy, None, None, 1.0 if i < 5 else 0.5))
    [durations] = points(reader)["ratelimit.store.duration"]
    assert (durations.count, durations.sum) == (DURATIONS, DURATIONS * 0.5)  # the newest


def test_a_listener_object_is_called_as_its_class_defines() -> None:
    seen: list[str] = []

    class Plain:
        def __call__(self, event: Event) -> None:
            seen.append(f"plain {event.kind}")

    class Static:
        @staticmethod
        def __call__(event: Event) -> None:
            seen.append(f"static {event.kind}")

    class Shadowed(Plain):
        pass

    shadowed = Shadowed()
    shadowed.__call__ = lambda event: seen.append("instance attribute")  # type: ignore[method-assign]
    for listener in (Plain(), Static(), shadowed):
        rl.Limiter("1/minute", on_event=listener).hit("k")
    # Python calls an object through its class's __call__, never an instance attribute
    assert seen == ["plain allowed", "static allowed", "plain allowed"]


def test_a_limiter_counts_into_metrics_without_building_an_event(
    clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[str] = []

    class Counted(Event):
        __slots__ = ()

        def __init__(self, *args: Any) -> None:
            built.append(args[0])
            super().__init__(*args)

    monkeypatch.setattr(ratelimit.limiter, "Event", Counted)
    provider, reader = sdk()
    policy = rl.FixedWindow(2, 60)
    limiter = rl.Limiter(policy, clock=clock, on_event=Metrics(provider))
    for _ in range(3):
        limiter.hit("k")  # remaining 1 (far), 0 (near), then denied
    assert built == []  # Metrics was given the parts
    assert checks(reader) == {
        ("allowed", "ratelimit", policy.id, False): 1,
        ("allowed", "ratelimit", policy.id, True): 1,
        ("denied", "ratelimit", policy.id, None): 1,
    }
    seen: list[Event] = []
    rl.Limiter(policy, clock=clock, on_event=seen.append).hit("k")  # any other listener
    assert built == ["allowed"] and [e.kind for e in seen] == ["allowed"]


def test_a_metrics_subclass_with_its_own_call_is_given_every_event(clock: Clock) -> None:
    provider, reader = sdk()
    seen: list[str] = []

    class Logged(Metrics):
        def __call__(self, event: Event) -> None:
            seen.append(event.kind)
            super().__call__(event)

    limiter = rl.Limiter("1/minute", clock=clock, on_event=Logged(provider))
    limiter.hit("k")
    limiter.hit("k")
    assert seen == ["allowed", "denied"]
    assert sorted(outcome for outcome, *_ in checks(reader)) == ["allowed", "denied"]


def test_overrides_with_limits_of_their_own_make_a_bounded_number_of_series() -> None:
    provider, reader = sdk()
    limiter = rl.Limiter("100/minute", clock=lambda: 1000.0, on_event=Metrics(provider))
    for i in range(POLICIES + 50):  # one customer, one limit each
        limiter.overrides.set(f"c:{i}", f"{101 + i}/minute")
        limiter.hit(f"c:{i}")
    limiter.overrides.set("tiny", "5/minute")
    for _ in range(5):
        limiter.hit("tiny")  # remaining 4, 3, 2, 1, 0: near the limit at 1 and 0
    found = checks(reader)
    labels = {policy for _, _, policy, _ in found}
    assert len(labels) == POLICIES + 1 and OTHER in labels
    assert found[("allowed", "ratelimit", OTHER, False)] == 50 + 3
    assert found[("allowed", "ratelimit", OTHER, True)] == 2
    assert sum(found.values()) == POLICIES + 50 + 5


def test_one_stores_recovery_never_hides_anothers_outage_under_the_same_prefix(
    clock: Clock,
) -> None:
    provider, reader = sdk()
    metrics = Metrics(provider)
    first, second = FlakyStore(clock), FlakyStore(clock)  # two stores (or two masters)
    limiters = [rl.Limiter("100/minute", store=s, clock=clock, on_event=metrics)
                for s in (first, second)]  # fmt: skip

    def gauge() -> list[tuple[dict[str, Any], int]]:
        return [(dict(p.attributes), p.value) for p in points(reader)["ratelimit.breaker.state"]]

    first.down = second.down = True
    for limiter in limiters:
        assert limiter.hit("k").reason == "store_error"
    assert gauge() == [({"ratelimit.prefix": "ratelimit"}, 1)]
    clock.advance(250)
    first.down = False
    assert limiters[0].hit("k").reason is None  # the first store's probe closes its breaker
    assert first.breaker.state == "closed" and second.breaker.state != "closed"
    assert gauge() == [({"ratelimit.prefix": "ratelimit"}, 1)]  # the second is still out
    second.down = False
    assert limiters[1].hit("k").reason is None
    assert gauge() == [({"ratelimit.prefix": "ratelimit"}, 0)]


def test_a_breaker_collected_with_its_store_leaves_the_gauge(
    clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # no log record: pytest keeps records, whose error's traceback would keep the store alive
    monkeypatch.setattr(logging.getLogger("ratelimit"), "disabled", True)
    provider, reader = sdk()
    metrics = Metrics(provider)
    store = FlakyStore(clock)
    limiter = rl.Limiter("100/minute", store=store, clock=clock, on_event=metrics)
    store.down = True
    limiter.hit("k")  # the breaker opens, and the limiter and store are dropped mid-outage
    del limiter, store
    gc.collect()
    assert points(reader).get("ratelimit.breaker.state", []) == []
    assert metrics._watched == {}
