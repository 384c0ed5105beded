"""A state key lives until its state is full again under every policy that may read it next
(issue 11: "changing an override never corrupts state"), on every lane.

State keys are named by shape (algorithm, period, unit), so a token bucket's level is read by
the limiter's own bucket and by an override's bucket of the same period alike. The TTL is
garbage collection, never the logic: a key that expires before its bucket would really be full
hands its identifier a whole new burst. Three ways that could happen, one test each:

1. an override slower or bigger than the policy that wrote the state, set with no check in
   between (``overrides.set`` makes the state live long enough for the override);
2. an override deleted or expired, back to a slower limiter policy, and
3. more generally, state written while an override applies (a check under it writes it with
   the longer of the override's and the limiter's own time to full).

Time is the limiter's clock. The memory store expires keys on it, so there the decisions
themselves show the defect; a server expires keys in real time, so there each test reads the
state key's PTTL (the key must live until the bucket is full on the policy that reads it).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

import ratelimit as rl
from tests.conftest import Clock, Harness, Lane

MINUTE_MS = 60_000
# what may pass in real time between a write and the PTTL read of it (a loaded machine)
SLACK_MS = 5_000


async def _call(lane: Lane, method: Any, *args: Any, **kwargs: Any) -> Any:
    result = method(*args, **kwargs)
    return await result if lane.is_async else result


async def _set(lane: Lane, h: Harness, identifier: str, limits: Any, **kwargs: Any) -> None:
    await _call(lane, h.limiter.overrides.set, identifier, limits, **kwargs)


async def _delete(lane: Lane, h: Harness, identifier: str) -> None:
    await _call(lane, h.limiter.overrides.delete, identifier)


async def ttl_ms(lane: Lane, h: Harness, identifier: str, clock: Clock, at: int = 0) -> int:
    """The PTTL of the state key of ``identifier``'s policy ``at`` (the limiter's own keys),
    on the lane's store: -2 when absent."""
    key = h.limiter.keys(identifier)[at]
    if lane.is_memory:
        entry = lane.store.entries.get(key)
        return -2 if entry is None or entry[1] < clock.ms else int(entry[1] - clock.ms)
    if lane.server is not None:  # the real server (behind the Upstash endpoint too)
        client = lane.server.client()
        try:
            return int(client.pttl(key))
        finally:
            client.close()
    return int(await _call(lane, lane.raw.pttl, key))  # fakeredis


async def lives_at_least(lane: Lane, h: Harness, identifier: str, clock: Clock,
                         ms: int) -> None:  # fmt: skip
    ttl = await ttl_ms(lane, h, identifier, clock)
    assert ms - SLACK_MS <= ttl, f"the state key expires in {ttl} ms, before {ms} ms"


# ---- 1. an override set slower or bigger than what wrote the state, no check in between -----


async def test_an_override_set_slower_keeps_the_spent_bucket_until_it_refills_at_its_rate(
    lane: Lane, clock: Clock
) -> None:
    h = lane.limiter(rl.TokenBucket(rate=60, period=60, burst=60), clock=clock)
    for _ in range(60):
        assert (await h.hit("u")).allowed
    # an abuser throttled: the same bucket (same period) now refills at 1 token a minute
    await _set(lane, h, "u", rl.TokenBucket(rate=1, period=60, burst=60))
    await lives_at_least(lane, h, "u", clock, 60 * MINUTE_MS)
    clock.advance(61_000)
    d = await h.peek("u")
    assert d.limit == 60 and d.remaining == 1
    assert [(await h.hit("u")).allowed for _ in range(3)] == [True, False, False]


async def test_an_override_set_with_a_bigger_burst_keeps_the_spent_bucket(
    lane: Lane, clock: Clock
) -> None:
    h = lane.limiter(rl.TokenBucket(rate=1, period=1, burst=10), clock=clock)
    for _ in range(10):
        assert (await h.hit("u")).allowed
    await _set(lane, h, "u", rl.TokenBucket(rate=1, period=1, burst=100))
    await lives_at_least(lane, h, "u", clock, 100_000)
    clock.advance(11_000)
    assert (await h.peek("u")).remaining == 11  # refilled 11 tokens, not a new burst of 100


async def test_an_override_replaced_by_a_slower_one_keeps_the_spent_bucket(
    lane: Lane, clock: Clock
) -> None:
    h = lane.limiter(rl.TokenBucket(rate=10, period=1, burst=10), clock=clock)
    await _set(lane, h, "u", rl.TokenBucket(rate=100, period=1, burst=10))
    for _ in range(10):
        assert (await h.hit("u")).allowed
    await _set(lane, h, "u", rl.TokenBucket(rate=1, period=60, burst=10), ttl=3600)
    # a bucket of period 60 s is another shape: the 1-second bucket is not read by it
    assert (await h.peek("u")).remaining == 10
    await _set(lane, h, "u", rl.TokenBucket(rate=1, period=1, burst=10))
    await lives_at_least(lane, h, "u", clock, 10_000)
    clock.advance(2_000)
    assert (await h.peek("u")).remaining == 2


# ---- 2. an override deleted or expired: back to a slower limiter policy ----------------------


@pytest.mark.parametrize("end", ["delete", "expire"])
async def test_a_boost_that_ends_leaves_the_bucket_to_refill_at_the_limiters_rate(
    lane: Lane, clock: Clock, end: str
) -> None:
    h = lane.limiter(rl.TokenBucket(rate=1, period=60, burst=60), clock=clock)
    ttl = None if end == "delete" else timedelta(seconds=30)
    await _set(lane, h, "u", rl.TokenBucket(rate=60, period=60, burst=60), ttl=ttl)
    for _ in range(60):
        assert (await h.hit("u")).allowed
    # spent under the boost, the bucket is full in 60 s at its rate, in an hour at the
    # limiter's: the key must last the hour
    await lives_at_least(lane, h, "u", clock, 60 * MINUTE_MS)
    if end == "delete":
        await _delete(lane, h, "u")
    clock.advance(61_000)  # the memory store's override (ttl 30 s) is gone on this clock
    if end == "expire" and not lane.is_memory:
        await _delete(lane, h, "u")  # a server expires it in real time: end it here
    d = await h.peek("u")
    assert d.limit == 60 and d.remaining == 1
    assert [(await h.hit("u")).allowed for _ in range(2)] == [True, False]


# ---- 3. state written while an override applies lives long enough for the limiter's own ---


async def test_state_written_under_an_override_lives_until_full_under_the_limiters_burst(
    lane: Lane, clock: Clock
) -> None:
    h = lane.limiter(rl.TokenBucket(rate=1, period=1, burst=100), clock=clock)
    await _set(lane, h, "u", rl.TokenBucket(rate=1, period=1, burst=10))
    for _ in range(10):
        assert (await h.hit("u")).allowed
    d = await h.peek("u")
    # the decision is the override's: full again in 10 s under its burst of 10
    assert d.limit == 10 and d.remaining == 0 and d.reset_after == 10.0
    await lives_at_least(lane, h, "u", clock, 100_000)  # ... and in 100 s under the limiter's
    await _delete(lane, h, "u")
    clock.advance(11_000)
    assert (await h.peek("u")).remaining == 11


async def test_an_override_without_state_sets_nothing(lane: Lane, clock: Clock) -> None:
    h = lane.limiter(rl.TokenBucket(rate=1, period=1, burst=10), clock=clock)
    await _set(lane, h, "u", rl.TokenBucket(rate=1, period=1, burst=100))
    await _delete(lane, h, "u")
    assert await ttl_ms(lane, h, "u", clock) == -2


# ---- windows: their TTL never depends on the limit -------------------------------------------


@pytest.mark.parametrize("cls", [rl.FixedWindow, rl.SlidingWindow], ids=lambda c: c.__name__)
async def test_a_windows_ttl_is_the_same_under_any_limit(
    lane: Lane, clock: Clock, cls: type[rl.FixedWindow] | type[rl.SlidingWindow]
) -> None:
    """A window's state is empty once its window(s) have passed, whatever the limit: an
    override of another limit (up or down) neither needs nor gets a longer TTL, and the key
    expires exactly when the state would count nothing under either limit."""
    windows = 1 if cls is rl.FixedWindow else 2  # a sliding window remembers the one before
    h = lane.limiter(cls(100, 60), clock=clock)
    for _ in range(5):
        await h.hit("u")
    before = await ttl_ms(lane, h, "u", clock)
    assert windows * MINUTE_MS - SLACK_MS <= before <= windows * MINUTE_MS
    await _set(lane, h, "u", cls(2, 60))  # throttled down: the window ends when it did
    after = await ttl_ms(lane, h, "u", clock)
    assert before - SLACK_MS <= after <= windows * MINUTE_MS
    await _set(lane, h, "u", cls(10_000, 60))  # raised
    assert (await h.hit("u")).allowed
    assert await ttl_ms(lane, h, "u", clock) <= windows * MINUTE_MS
    if lane.is_memory:  # one ms before the key expires, the count is still there
        clock.advance(windows * MINUTE_MS - 1)
        await _delete(lane, h, "u")
        assert (await h.peek("u", 0)).remaining < 100
        clock.advance(1)
        assert (await h.peek("u", 0)).remaining == 100
