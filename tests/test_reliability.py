"""The failure policy's moving parts, driven by a fake clock: the circuit breaker, the cache of
denied keys and the event hook. (Real servers killed, paused and restarted: test_faults.py.)"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import pytest

import ratelimit as rl
from ratelimit.breaker import CircuitBreaker
from ratelimit.events import Event
from ratelimit.stores.base import Plan, Reply
from tests.conftest import Lane
from tests.support import Clock


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


# -- the probe: bounded, resolved once per check, the only voice in half_open ------------------


class StallingStore(rl.MemoryStore):
    """A memory store whose calls raise what a test puts in ``raise_`` (a store error, a
    KeyboardInterrupt standing for a gevent timeout) and count the calls that reach it."""

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self.breaker = CircuitBreaker(base=0.25, cap=2.0, jitter=0, clock=clock)
        self.raise_: BaseException | None = None
        self.calls = 0
        self.deletes = 0

    def evaluate(self, plan: Plan, keys: Sequence[str], now: int | None, cost: int,
                 charge: bool) -> Reply:  # fmt: skip
        self.calls += 1
        if self.raise_ is not None:
            raise self.raise_
        return super().evaluate(plan, keys, now, cost, charge)

    def delete(self, keys: Sequence[str]) -> None:
        self.deletes += 1
        if self.raise_ is not None:
            raise self.raise_
        super().delete(keys)


def test_a_probe_that_never_reports_frees_the_breaker_after_probe_timeout(clock: Clock) -> None:
    store = StallingStore(clock)
    limiter = rl.Limiter("100/minute", store=store, clock=clock)
    breaker = store.breaker
    assert breaker is not None and breaker.probe_timeout == breaker.cap == 2.0
    store.raise_ = rl.StoreError("down")
    limiter.hit("k")
    clock.advance(250)
    store.raise_ = KeyboardInterrupt()  # the probe is interrupted: it never reports
    with pytest.raises(KeyboardInterrupt):
        limiter.hit("k")
    assert breaker.state == "half_open"
    store.raise_ = None
    clock.advance(1999)
    assert limiter.hit("k").reason == "store_error" and store.calls == 2  # the probe is out
    clock.advance(1)
    d = limiter.hit("k")  # the lost probe is given up: this check probes, and closes
    assert d.reason is None and d.allowed and breaker.state == "closed" and store.calls == 3


async def test_a_cancelled_async_probe_frees_the_breaker_after_probe_timeout(
    clock: Clock,
) -> None:
    import asyncio

    gate = asyncio.Event()

    class HangingStore(rl.MemoryStore):
        breaker = CircuitBreaker(base=0.25, cap=1.0, jitter=0, clock=clock)
        down = True

        async def aevaluate(self, plan: Plan, keys: Sequence[str], now: int | None, cost: int,
                            charge: bool) -> Reply:  # fmt: skip
            if self.down:
                raise rl.StoreError("down")
            await gate.wait()
            return super().evaluate(plan, keys, now, cost, charge)

    store = HangingStore()
    limiter = rl.AsyncLimiter("100/minute", store=store, clock=clock)
    await limiter.hit("k")
    store.down = False
    clock.advance(250)
    with pytest.raises(TimeoutError):  # asyncio.wait_for cancels the probe
        await asyncio.wait_for(limiter.hit("k"), 0.01)
    assert store.breaker.state == "half_open"
    gate.set()
    assert (await limiter.hit("k")).reason == "store_error"
    clock.advance(1000)
    assert (await limiter.hit("k")).reason is None and store.breaker.state == "closed"


def test_a_check_reports_to_the_breaker_that_admitted_it(clock: Clock) -> None:
    """A cluster slot that moves between the start and the end of a check: the answer goes to
    the node breaker that admitted the call, whatever the slot map says by then."""
    first = CircuitBreaker(base=0.25, cap=2.0, jitter=0, clock=clock, name="node a")
    second = first.child("node b")

    class MovingSlots(StallingStore):
        per_node_breakers = True
        owner = first

        def breaker_for(self, keys: Sequence[str]) -> CircuitBreaker | None:
            return self.owner

        def evaluate(self, plan: Plan, keys: Sequence[str], now: int | None, cost: int,
                     charge: bool) -> Reply:  # fmt: skip
            reply = super().evaluate(plan, keys, now, cost, charge)
            self.owner = second if self.owner is first else first  # the slot moved
            return reply

    store = MovingSlots(clock)
    limiter = rl.Limiter("100/minute", store=store, clock=clock)
    first.failure(rl.StoreError("node a was down"))
    clock.advance(250)
    assert limiter.hit("k").reason is None  # the probe, admitted by node a, answered
    assert first.state == "closed" and second.state == "closed"
    store.raise_ = rl.StoreError("node b is down")
    store.owner = second
    limiter.hit("k")
    assert second.state == "open" and first.state == "closed"


def test_a_late_failure_does_not_reopen_the_breaker_while_the_probe_is_out(clock: Clock) -> None:
    breaker = CircuitBreaker(base=1, cap=8, jitter=0, clock=clock)
    straggler = breaker.admit()  # sent before the outage, answers late
    assert straggler is not None
    breaker.failure(rl.StoreError("down"), breaker.admit())
    clock.advance(1000)
    probe = breaker.admit()
    assert probe is not None and breaker.state == "half_open"
    breaker.failure(rl.StoreError("timed out late"), straggler)
    assert breaker.state == "half_open" and breaker.failures == 1  # the probe decides
    breaker.success(straggler)
    assert breaker.state == "half_open"  # a late success says nothing of the store now
    breaker.success(probe)
    assert breaker.state == "closed" and breaker.failures == 0
    breaker.failure(rl.StoreError("from before the last outage"), straggler)
    assert breaker.state == "closed"


async def test_a_late_failure_through_the_limiter_does_not_reopen_the_breaker(
    clock: Clock,
) -> None:
    import asyncio

    release = asyncio.Event()

    class SlowThenDown(rl.MemoryStore):
        breaker = CircuitBreaker(base=0.25, cap=2.0, jitter=0, clock=clock)
        mode = "slow"

        async def aevaluate(self, plan: Plan, keys: Sequence[str], now: int | None, cost: int,
                            charge: bool) -> Reply:  # fmt: skip
            if self.mode == "slow":
                await release.wait()
                raise rl.StoreError("timed out")
            if self.mode == "down":
                raise rl.StoreError("down")
            return super().evaluate(plan, keys, now, cost, charge)

    store = SlowThenDown()
    limiter = rl.AsyncLimiter("100/minute", store=store, clock=clock)
    straggler = asyncio.ensure_future(limiter.hit("k"))
    await asyncio.sleep(0)
    store.mode = "down"
    await limiter.hit("k")
    assert store.breaker.state == "open"
    clock.advance(250)
    store.mode = "up"
    probe_gate = asyncio.Event()
    original = store.aevaluate

    async def slow_probe(*args: object) -> Reply:
        await probe_gate.wait()
        return await original(*args)  # type: ignore[arg-type]

    store.aevaluate = slow_probe  # type: ignore[method-assign]
    probe = asyncio.ensure_future(limiter.hit("k"))
    await asyncio.sleep(0)
    assert store.breaker.state == "half_open"
    release.set()
    assert (await straggler).reason == "store_error"
    assert store.breaker.state == "half_open"  # the straggler's failure reopened nothing
    probe_gate.set()
    assert (await probe).reason is None and store.breaker.state == "closed"


def test_reset_during_an_outage_asks_the_breaker(clock: Clock) -> None:
    store = StallingStore(clock)
    limiter = rl.Limiter("100/minute", store=store, clock=clock)
    raising = rl.Limiter("100/minute", store=store, clock=clock, on_error="raise")
    store.raise_ = rl.StoreError("down")
    limiter.hit("k")
    for _ in range(10):
        limiter.reset("k")  # no call: no timeout per reset
    with pytest.raises(rl.StoreError, match="circuit breaker open"):
        raising.reset("k")
    assert store.deletes == 0
    clock.advance(250)
    store.raise_ = None
    limiter.reset("k")  # the reset is the probe, and closes the breaker
    assert store.deletes == 1 and store.breaker is not None and store.breaker.state == "closed"


def test_probe_timeout_is_checked() -> None:
    for bad in (0, -1, float("nan"), float("inf"), "1"):
        with pytest.raises(rl.ConfigurationError, match="probe_timeout"):
            CircuitBreaker(probe_timeout=bad)  # type: ignore[arg-type]
    for bad_cap in (float("inf"), float("nan")):
        with pytest.raises(rl.ConfigurationError):
            CircuitBreaker(cap=bad_cap)


# -- the cache of denied keys answers only what the store would answer --------------------------


async def test_cached_denial_answers_only_its_own_cost(lane: Lane, clock: Clock) -> None:
    limiter = lane.limiter(rl.TokenBucket(10, 1), clock=clock, deny_cache=100)
    assert (await limiter.hit("k", 10)).allowed
    one = await limiter.hit("k", 1)
    assert not one.allowed and one.retry_after == 0.1 and one.reason is None
    three = await limiter.hit("k", 3)  # not cost 1's answer: the store's own
    assert three.reason is None and three.retry_after == 0.3
    assert (await limiter.hit("k", 3)).reason == "cached"
    clock.advance(100)
    assert (await limiter.hit("k", 3)).retry_after == 0.2


async def test_cached_denial_ends_exactly_at_retry_after(lane: Lane, clock: Clock) -> None:
    for offset in range(1, 40):  # clock readings whose float seconds do not add up exactly
        clock.set(offset * 37)
        limiter = lane.limiter(rl.TokenBucket(10, 1), clock=clock, deny_cache=100,
                               prefix=f"p{offset}")  # fmt: skip
        await limiter.hit("k", 10)
        first = await limiter.hit("k", 3)
        assert not first.allowed and first.retry_after == 0.3
        clock.advance(299)
        cached = await limiter.hit("k", 3)
        assert cached.reason == "cached" and cached.retry_after == 0.001
        clock.advance(1)
        d = await limiter.hit("k", 3)
        assert d.allowed and d.reason is None, (offset, d)


async def test_an_allowed_hit_forgets_the_cached_denial(lane: Lane, clock: Clock) -> None:
    limiter = lane.limiter(rl.TokenBucket(10, 1), clock=clock, deny_cache=100)
    await limiter.hit("k", 8)
    denied = await limiter.hit("k", 3)
    assert not denied.allowed and denied.retry_after == 0.1
    assert (await limiter.hit("k", 2)).allowed  # spends what cost 3 was waiting for
    after = await limiter.hit("k", 3)
    assert after.reason is None and after.retry_after == 0.3  # not the cached 0.1
    clock.advance(100)
    d = await limiter.hit("k", 3)
    assert not d.allowed and d.retry_after == 0.2


async def test_cached_details_count_down_every_policy(lane: Lane, clock: Clock) -> None:
    limiter = lane.limiter([rl.FixedWindow(1, 10), rl.FixedWindow(5, 60)], clock=clock,
                           deny_cache=100)  # fmt: skip
    await limiter.hit("k")
    stored = await limiter.hit("k")
    clock.advance(1000)
    cached = await limiter.hit("k")
    clock.advance(-1000)
    assert cached.reason == "cached"
    assert [d.retry_after for d in cached.details] == [
        max(d.retry_after - 1, 0) for d in stored.details
    ]
    assert [d.reset_after for d in cached.details] == [d.reset_after - 1 for d in stored.details]


# -- listeners: weak, and async ones awaited ----------------------------------------------------


def test_short_lived_limiters_are_collected_and_hear_no_outage(clock: Clock) -> None:
    import gc
    import weakref

    store = FlakyStore(clock)
    events: list[Event] = []
    dropped = []
    for _ in range(1000):
        limiter = rl.Limiter("10/second", store=store, clock=clock, on_event=events.append)
        dropped.append(weakref.ref(limiter))
    del limiter
    gc.collect()
    assert all(ref() is None for ref in dropped)
    kept = rl.Limiter("10/second", store=store, clock=clock, on_event=events.append)
    store.down = True
    kept.hit("k")
    assert [e.kind for e in events] == ["breaker_open", "store_error"]
    assert store.breaker is not None and len(store.breaker._listeners) == 1


async def test_an_async_listener_is_awaited_on_an_async_limiter(clock: Clock) -> None:
    import asyncio

    seen: list[str] = []

    async def listener(event: Event) -> None:
        await asyncio.sleep(0)
        seen.append(event.kind)

    store = FlakyStore(clock)
    limiter = rl.AsyncLimiter("1/minute", store=store, clock=clock, on_event=listener)
    await limiter.hit("k")
    await limiter.hit("k")
    store.down = True
    await limiter.hit("k")
    for _ in range(5):
        await asyncio.sleep(0)
    assert seen == ["allowed", "denied", "breaker_open", "store_error"]


def test_an_async_listener_is_refused_by_a_sync_limiter() -> None:
    async def listener(event: Event) -> None: ...

    class Callable_:
        async def __call__(self, event: Event) -> None: ...

    for bad in (listener, Callable_()):
        with pytest.raises(rl.ConfigurationError, match="is async"):
            rl.Limiter("1/s", on_event=bad)


# -- wait(): timeouts are real time -------------------------------------------------------------


async def test_wait_times_out_in_real_time_on_a_frozen_clock(clock: Clock) -> None:
    import time

    for face in ("sync", "async"):
        cls = rl.Limiter if face == "sync" else rl.AsyncLimiter
        limiter = cls(rl.TokenBucket(1, 0.05), clock=clock)  # the clock never moves
        await _maybe(limiter.hit("k"))
        started = time.monotonic()
        with pytest.raises(rl.RateLimitExceeded):
            await _maybe(limiter.wait("k", timeout=0.2))
        assert 0.1 < time.monotonic() - started < 2.0, face


async def test_wait_refuses_bad_timeouts() -> None:
    for face in ("sync", "async"):
        cls = rl.Limiter if face == "sync" else rl.AsyncLimiter
        limiter = cls("1/s")
        for bad in (float("nan"), -1, "5", True):
            with pytest.raises(rl.ConfigurationError, match="timeout"):
                await _maybe(limiter.wait("k", timeout=bad))  # type: ignore[arg-type]


async def _maybe(value: object) -> object:
    import inspect

    return await value if inspect.isawaitable(value) else value


# -- clock=: skew between callers and the server's TTLs -----------------------------------------


async def test_a_lagging_clock_waits_until_the_keys_expire_on_the_server_clock(
    real_lane: Lane, make_clock: type[Clock]
) -> None:
    """With ``clock=``, a caller whose clock runs behind the last writer's sees the state in
    its future and is denied, but only until the keys expire: TTLs run on the server's own
    clock (about a period after the last write, whatever the callers' clocks say); then it
    starts afresh. (The README says so under "Time and clocks".)"""
    ahead, behind = make_clock(), make_clock()
    behind.advance(-1_000_000)  # 1,000 s behind
    policy = rl.FixedWindow(1, 2)
    writer = real_lane.limiter(policy, clock=ahead, prefix="skew")
    laggard = real_lane.limiter(policy, clock=behind, prefix="skew")
    assert (await writer.hit("k")).allowed
    d = await laggard.hit("k")
    assert not d.allowed and d.retry_after == 1_002.0  # the window ends in its future
    server = real_lane.server
    assert server is not None
    (key,) = writer.limiter.keys("k")
    with server.client() as admin:
        assert 0 < admin.pttl(key) <= 2_000  # the server's clock: one period, not 1,000 s
        admin.pexpire(key, 1)  # what 2 s of real time does
        for _ in range(200):
            if not admin.exists(key):
                break
            await asyncio.sleep(0.005)
    assert (await laggard.hit("k")).allowed  # the lag no longer counts


async def test_a_lagging_clock_waits_the_whole_difference_on_the_memory_store(
    make_clock: type[Clock],
) -> None:
    """The memory store expires keys on the limiter's own clock: a lagging caller waits the
    whole difference."""
    ahead, behind = make_clock(), make_clock()
    behind.advance(-1_000_000)
    store = rl.MemoryStore()
    writer = rl.Limiter(rl.FixedWindow(1, 2), store=store, clock=ahead)
    laggard = rl.Limiter(rl.FixedWindow(1, 2), store=store, clock=behind)
    writer.hit("k")
    assert laggard.hit("k").retry_after == 1_002.0
    behind.advance(1_001_999)
    assert not laggard.hit("k").allowed
    behind.advance(1)
    assert laggard.hit("k").allowed
