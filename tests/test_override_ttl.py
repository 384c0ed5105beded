"""A state key lives until its state is full again under every policy that may read it next
(issue 11: "changing an override never corrupts state"), on every lane.

State keys are named by shape (algorithm, period, unit), so a token bucket's level is read by
the limiter's own bucket and by an override's bucket of the same period alike. The TTL is
garbage collection, never the logic: a key that expires before its bucket would really be full
hands its identifier a whole new burst. Four ways that could happen, tests for each:

1. an override slower or bigger than the policy that wrote the state, set with no check in
   between (``overrides.set`` makes the state live long enough for the override);
2. an override deleted or expired, back to a slower limiter policy, and
3. more generally, state written while an override applies (a check under it writes it with
   the longer of the override's and the limiter's own time to full);
4. a lease acquired under an override and settled (its settle writes the state as a check's
   charge does: the limiter's own plan and keys go with it, and only then).

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


# ---- 4. a lease settled under an override: the settle writes the TTL, as a check's charge ----


async def _acquire(lane: Lane, h: Harness, identifier: str, cost: int) -> Any:
    return await _call(lane, h.limiter.acquire, identifier, cost)


@pytest.mark.parametrize(("cost", "actual"), [(1, 60), (60, 30)], ids=["up", "down"])
async def test_a_lease_settled_under_a_boost_leaves_the_bucket_to_refill_at_the_limiters_rate(
    lane: Lane, clock: Clock, cost: int, actual: int
) -> None:
    """A settle under an override writes the bucket's TTL as a check's charge does: until full
    under the override and under the limiter's own policy of that shape. Settled up, the
    bucket is empty (full in 1 s under the boost, in 60 s at the limiter's rate); settled down,
    it holds 30 tokens (full in 0.5 s under the boost, in 30 s at the limiter's rate): either
    way a key written with the boost's TTL alone would hand out a new burst once it ends."""
    h = lane.limiter(rl.TokenBucket(rate=1, period=1, burst=60), clock=clock)
    await _set(lane, h, "u", rl.TokenBucket(rate=60, period=1, burst=60))
    lease = await _acquire(lane, h, "u", cost)
    assert lease.allowed
    await _call(lane, lease.settle, actual)
    await lives_at_least(lane, h, "u", clock, actual * 1_000)
    await _delete(lane, h, "u")
    clock.advance(2_000)
    assert (await h.peek("u")).remaining == 60 - actual + 2  # refilled 2 tokens, not 60


async def test_a_settle_without_an_override_sends_what_it_always_sent(
    script_lane: Lane, clock: Clock
) -> None:
    """The limiter's own plan and keys go with a settle only when the lease was acquired
    under an override: a settle without one is the same single call as before."""
    lane = script_lane
    h = lane.limiter([rl.Concurrency(5), rl.TokenBucket(rate=1, period=1, burst=60)],
                     clock=clock)  # fmt: skip
    await _set(lane, h, "boosted", rl.TokenBucket(rate=60, period=1, burst=60))
    plain = await _acquire(lane, h, "u", 1)
    boosted = await _acquire(lane, h, "boosted", 1)
    sent: list[list[Any]] = []
    store = lane.store
    send = store._send

    def spied(command: list[Any]) -> Any:
        sent.append(command)
        return send(command)

    store._send = spied
    try:
        await _call(lane, plain.settle, 3)
        await _call(lane, boosted.settle, 3)
    finally:
        del store._send
    # (a server without the script is sent its text after: not a call of ours)
    called = [command for command in sent if command[0] in ("FCALL", "EVALSHA")]
    (call, entry, *rest), (_, entry_o, *rest_o) = called
    assert call in ("FCALL", "EVALSHA") and entry_o == entry  # one call each, the same entry
    assert rest == [1, h.limiter.keys("u")[1], clock.ms, plain._acquired, "1", 3,
                    "t 60 1000 1 1"]  # fmt: skip
    own = h.limiter.keys("boosted")  # its Concurrency and bucket keys: the boost's is the same
    assert rest_o == [3, own[1], *own, clock.ms, boosted._acquired, "1", 3, "t 60 1000 60 1",
                      "c 5 60000 0 1 t 60 1000 1 1"]  # fmt: skip


#: (the limiter's policies, an override of the same shapes) for the differential settle test:
#: a boost of a bucket beside a window, and of a bucket of a large quota (ticks of 10 ms: a
#: token every 31.5 s, every 0.3 s boosted).
SETTLE_BOOSTS = [
    ([rl.TokenBucket(rate=1, period=1, burst=60), rl.SlidingWindow(10, 60)],
     [rl.TokenBucket(rate=60, period=1, burst=60), rl.SlidingWindow(100, 60)]),
    ([rl.TokenBucket(1_000_000, 365 * 86400), rl.FixedWindow(10, 60)],
     [rl.TokenBucket(100_000_000, 365 * 86400, burst=1_000_000), rl.FixedWindow(90, 60)]),
]  # fmt: skip


@pytest.mark.parametrize(("own", "boost"), SETTLE_BOOSTS, ids=["bucket+window", "large"])
async def test_the_lua_and_the_twin_write_the_same_ttls_when_settling_under_a_boost(
    script_lane: Lane, clock: Clock, own: list[rl.Policy], boost: list[rl.Policy]
) -> None:
    lane = script_lane
    lua = lane.limiter(own, clock=clock)
    twin = rl.Limiter(own, clock=clock)
    for cost, actual in [(1, 9), (9, 4), (4, 0)]:
        identifier = f"u{cost}"
        await _set(lane, lua, identifier, boost)
        twin.overrides.set(identifier, boost)
        got = await _acquire(lane, lua, identifier, cost)
        want = twin.acquire(identifier, cost)
        assert got.decision == want.decision and got.allowed
        clock.advance(1_500)
        await _call(lane, got.settle, actual)
        want.settle(actual)
        for at in range(len(own)):
            ttl = await ttl_ms(lane, lua, identifier, clock, at)
            key = twin.keys(identifier)[at]
            expected = int(twin.store.entries[key][1] - clock.ms)  # type: ignore[attr-defined]
            assert expected - SLACK_MS <= ttl <= expected, (key, ttl, expected)
