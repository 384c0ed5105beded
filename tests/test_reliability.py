"""The failure policy's moving parts, driven by a fake clock: the circuit breaker, the cache of
denied keys and the event hook. (Real servers killed, paused and restarted: test_faults.py.)"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pytest

import ratelimit as rl
from ratelimit.breaker import CircuitBreaker
from ratelimit.events import Event
from ratelimit.stores.base import Plan, Reply
from tests.conftest import Clock, Lane


class FlakyStore(rl.MemoryStore):
    """A memory store that fails on demand and counts the calls that reach it."""

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self.breaker = CircuitBreaker(base=0.25, cap=2.0, jitter=0, clock=clock)
        self.down = False
        self.calls = 0

    def evaluate(self, plan: Plan, keys: Sequence[str], now: int | None, cost: int,
                 charge: bool) -> Reply:  # fmt: skip
        self.calls += 1
        if self.down:
            try:
                raise ConnectionError("connection refused")
            except ConnectionError as error:
                raise rl.StoreError("FlakyStore failed") from error
        return super().evaluate(plan, keys, now, cost, charge)

    def delete(self, keys: Sequence[str]) -> None:
        if self.down:
            raise rl.StoreError("FlakyStore failed")
        super().delete(keys)


def test_breaker_turns_an_outage_into_one_call_per_backoff(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    store = FlakyStore(clock)
    limiter = rl.Limiter("100/minute", store=store, clock=clock, on_error="allow")
    assert limiter.hit("k").reason is None and store.calls == 1
    store.down = True
    with caplog.at_level(logging.WARNING, logger="ratelimit"):
        calls = []
        for backoff in (250, 500, 1000, 2000, 2000):  # doubling, capped at 2 s
            before = store.calls
            for _ in range(100):
                d = limiter.hit("k")
                assert d.allowed and d.reason == "store_error"
            calls.append(store.calls - before)
            assert limiter.breaker is not None and limiter.breaker.state == "open"
            clock.advance(backoff - 1)
            limiter.hit("k")
            assert store.calls - before == 1  # still open one millisecond early
            clock.advance(1)
        assert calls == [1, 1, 1, 1, 1]
        store.down = False
        d = limiter.hit("k")
        assert d.reason is None and d.allowed and limiter.breaker.state == "closed"
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, messages
    assert "FlakyStore failed" in messages[0] or "ConnectionError" in messages[0]
    assert "recovered" in messages[1] and "checks were decided by on_error" in messages[1]


def test_breaker_lets_one_probe_through(clock: Clock) -> None:
    breaker = CircuitBreaker(base=1, cap=1, jitter=0, clock=clock)
    breaker.failure(rl.StoreError("down"))
    assert not breaker.allow()
    clock.advance(1000)
    assert breaker.allow() and breaker.state == "half_open"
    assert not breaker.allow() and not breaker.allow()  # the probe is out: others wait
    breaker.success()
    assert breaker.state == "closed" and breaker.allow()


def test_breaker_jitter_stays_within_bounds(clock: Clock) -> None:
    waits = set()
    for _ in range(50):
        breaker = CircuitBreaker(base=1, cap=8, jitter=0.5, clock=clock)
        breaker.failure(rl.StoreError("down"))
        waits.add(round(breaker.retry_after, 6))
    assert all(1 <= w <= 1.5 for w in waits) and len(waits) > 1


@pytest.mark.parametrize(("on_error", "allowed"), [("allow", True), ("deny", False)])
def test_open_breaker_decides_by_on_error(clock: Clock, on_error: str, allowed: bool) -> None:
    store = FlakyStore(clock)
    store.down = True
    limiter = rl.Limiter("1/s", store=store, clock=clock, on_error=on_error)  # type: ignore[arg-type]
    for _ in range(3):
        d = limiter.hit("k")
        assert d.allowed is allowed and d.reason == "store_error"
        assert [x.reason for x in d.details] == ["store_error"]
        assert d.retry_after == (0.0 if allowed else 1.0)
    assert store.calls == 1


def test_open_breaker_raises_when_asked(clock: Clock) -> None:
    store = FlakyStore(clock)
    store.down = True
    limiter = rl.Limiter("1/s", store=store, clock=clock, on_error="raise")
    with pytest.raises(rl.StoreError, match="FlakyStore failed"):
        limiter.hit("k")
    with pytest.raises(rl.StoreError, match="circuit breaker open") as caught:
        limiter.hit("k")
    assert isinstance(caught.value.__cause__, ConnectionError)
    with pytest.raises(rl.StoreError):
        limiter.reset("k")


def test_breaker_options_are_checked() -> None:
    with pytest.raises(rl.ConfigurationError, match="0 < base <= cap"):
        CircuitBreaker(base=0)
    with pytest.raises(rl.ConfigurationError, match="0 < base <= cap"):
        CircuitBreaker(base=2, cap=1)
    with pytest.raises(rl.ConfigurationError, match="breaker must be a CircuitBreaker or False"):
        rl.RedisStore(None, breaker="yes")  # type: ignore[arg-type]
    assert rl.RedisStore(None, breaker=False).breaker is None  # type: ignore[arg-type]


async def test_denied_cache_answers_floods_without_the_store(
    script_lane: Lane, clock: Clock
) -> None:
    limiter = script_lane.limiter(rl.FixedWindow(2, 10), clock=clock, deny_cache=100)
    assert (await limiter.hit("k")).allowed and (await limiter.hit("k")).allowed
    first = await limiter.hit("k")
    assert not first.allowed and first.reason is None
    server = script_lane.server
    if server is not None:
        server.reset_stats()
    for step in range(1, 50):
        clock.advance(100)
        d = await limiter.hit("k")
        assert not d.allowed and d.reason == "cached"
        assert round(d.retry_after * 1000) == 10_000 - 100 * step  # counted down, still exact
    if server is not None:
        assert server.commandstats().get("evalsha", 0) == 0
    assert (await limiter.hit("other")).reason is None  # other keys still go to the store
    assert (await limiter.hit("k", 0)).reason is None  # a smaller cost asks the store
    clock.set(10_000)
    d = await limiter.hit("k")
    assert d.allowed and d.reason is None  # the entry ended exactly at retry_after


async def test_reset_clears_a_cached_denial(script_lane: Lane, clock: Clock) -> None:
    limiter = script_lane.limiter("1/minute", clock=clock, deny_cache=100)
    await limiter.hit("k")
    assert (await limiter.hit("k")).reason is None
    assert (await limiter.hit("k")).reason == "cached"
    await limiter.reset("k")
    assert (await limiter.hit("k")).allowed


def test_denied_cache_is_bounded(clock: Clock) -> None:
    limiter = rl.Limiter("1/minute", clock=clock, deny_cache=10)
    for i in range(100):
        limiter.hit(f"k{i}")
        limiter.hit(f"k{i}")
    assert limiter._denied is not None and len(limiter._denied) == 10


def test_deny_cache_default_depends_on_the_store() -> None:
    assert rl.Limiter("1/s")._denied is None
    remote = rl.Limiter("1/s", store=rl.RedisStore.from_url("redis://127.0.0.1:1"))
    assert remote._denied is not None and remote._denied.size == 10_000
    with pytest.raises(rl.ConfigurationError, match="deny_cache must be a number of keys"):
        rl.Limiter("1/s", deny_cache=-1)


def test_events_carry_low_cardinality_labels_only(clock: Clock) -> None:
    events: list[Event] = []
    store = FlakyStore(clock)
    limiter = rl.Limiter("1/minute", store=store, clock=clock, prefix="api",
                         deny_cache=10, on_event=events.append)  # fmt: skip
    limiter.hit("user:secret")
    limiter.hit("user:secret")
    limiter.hit("user:secret")
    store.down = True
    limiter.hit("other")
    clock.advance(250)
    store.down = False
    limiter.hit("third")
    kinds = [e.kind for e in events]
    assert kinds == ["allowed", "denied", "cached", "breaker_open", "store_error",
                     "breaker_closed", "allowed"], kinds  # fmt: skip
    assert all(e.prefix == "api" for e in events)
    assert events[0].policy == rl.SlidingWindow(1, 60) and events[3].policy is None
    assert isinstance(events[3].error, rl.StoreError)
    assert not any("secret" in repr(e) for e in events)


def test_a_failing_listener_never_breaks_a_check(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    def explode(event: Event) -> None:
        raise RuntimeError("metrics backend down")

    limiter = rl.Limiter("1/minute", clock=clock, on_event=explode)
    with caplog.at_level(logging.ERROR, logger="ratelimit"):
        assert limiter.hit("k").allowed
    assert "on_event listener failed" in caplog.text
