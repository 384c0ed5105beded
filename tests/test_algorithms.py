"""Conformance: each algorithm's decisions, step by step, on every store lane.

Tables are ``(t_ms, cost) -> (allowed, remaining, retry_after_ms)``, with time driven by the
limiter's ``clock=``; no test sleeps.
"""

from __future__ import annotations

import pytest

import ratelimit as rl
from tests.conftest import Lane
from tests.support import Clock

Row = tuple[int, int, bool, int, int]  # t_ms, cost, allowed, remaining, retry_after_ms

FIXED: list[Row] = [
    (0, 1, True, 2, 0),  # the window opens at the first hit
    (1_000, 2, True, 0, 0),
    (2_000, 1, False, 0, 8_000),  # until the window that opened at 0 closes
    (9_999, 1, False, 0, 1),
    (10_000, 1, True, 2, 0),  # a new window opens at this hit
    (10_000, 3, False, 2, 10_000),
    (15_000, 2, True, 0, 0),
    (19_999, 1, False, 0, 1),
    (20_000, 3, True, 0, 0),
    (45_000, 0, True, 3, 0),  # cost 0 only looks
]

SLIDING: list[Row] = [
    (0, 2, True, 2, 0),
    (5_000, 2, True, 0, 0),
    # 4 in the window opened at 0; 1 more fits once 4 * (10000 - e) + 1 * 10000 <= 40000
    # in the next window, at e = 2500: t = 12500
    (6_000, 1, False, 0, 6_500),
    (12_499, 1, False, 0, 1),
    (12_500, 1, True, 0, 0),
    # prev=4, cur=1 at e=2500: 2 units need 4 * (10000 - e) <= 20000, e = 5000
    (12_500, 1, False, 0, 2_500),
    (15_000, 1, True, 0, 0),
    (40_000, 4, True, 0, 0),  # two idle windows later the key starts afresh
]

BUCKET: list[Row] = [
    (0, 3, True, 0, 0),
    (0, 1, False, 0, 334),  # 3 tokens/s: one token every 333.33 ms, rounded up
    (333, 1, False, 0, 1),
    (334, 1, True, 0, 0),
    (1_000, 2, True, 0, 0),  # 666 ms refill 1.998 tokens on top of the 0.002 left
    (1_000, 1, False, 0, 334),
]

CASES = {
    "fixed": (rl.FixedWindow(3, 10), FIXED),
    "sliding": (rl.SlidingWindow(4, 10), SLIDING),
    "bucket": (rl.TokenBucket(3, 1, burst=3), BUCKET),
}


@pytest.mark.parametrize("name", CASES)
async def test_table(lane: Lane, clock: Clock, name: str) -> None:
    policy, rows = CASES[name]
    limiter = lane.limiter(policy, clock=clock)
    for t, cost, allowed, remaining, retry in rows:
        clock.set(t)
        d = await limiter.hit("user:1", cost)
        got = (d.allowed, d.remaining, round(d.retry_after * 1000))
        assert got == (allowed, remaining, retry), f"at t={t} cost={cost}: {d}"
        assert d.reason is None
        assert d.policy == policy and d.limit == policy.limit


LARGE_QUOTAS = ["5000000/month", "10000000/month", "100000000/day", "999999999/year"]


@pytest.mark.parametrize("algorithm", ["fixed_window", "sliding_window", "token_bucket"])
@pytest.mark.parametrize("text", LARGE_QUOTAS)
async def test_large_quotas_are_counted_exactly(
    lane: Lane, clock: Clock, text: str, algorithm: str
) -> None:
    """Any limit below 10**9 over any period up to a year is accepted and counted to the
    unit; retry_after is exact to the millisecond even where time counts in coarser ticks."""
    (policy,) = rl.parse(text, algorithm=algorithm)
    limiter = lane.limiter(policy, clock=clock)
    clock.advance(7)  # off any tick boundary
    d = await limiter.hit("k", cost=policy.limit - 1)
    assert d.allowed and d.remaining == 1, d
    d = await limiter.hit("k", cost=2)
    assert not d.allowed and d.remaining == 1, d  # denied, charged nothing
    d = await limiter.hit("k")
    assert d.allowed and d.remaining == 0, d
    denied = await limiter.hit("k")
    retry = round(denied.retry_after * 1000)
    assert not denied.allowed and retry > 0, denied
    clock.advance(retry - 1)
    assert not (await limiter.peek("k")).allowed, (policy.tick_ms, retry)
    clock.advance(1)
    assert (await limiter.hit("k")).allowed, (policy.tick_ms, retry)


async def test_token_bucket_refill_is_exact(lane: Lane, clock: Clock) -> None:
    """30 refills at 3 tokens per second take 10 s: not 9.99 s, not 10.02 s."""
    limiter = lane.limiter(rl.TokenBucket(3, 1, burst=30), clock=clock)
    assert (await limiter.hit("k", 30)).allowed
    clock.advance(9_999)
    d = await limiter.peek("k", 30)
    assert not d.allowed and round(d.retry_after * 1000) == 1
    clock.advance(1)
    d = await limiter.hit("k", 30)
    assert d.allowed and d.remaining == 0 and round(d.reset_after * 1000) == 10_000


async def test_reset_after_counts_to_full_capacity(lane: Lane, clock: Clock) -> None:
    limiter = lane.limiter([rl.FixedWindow(5, 60), rl.SlidingWindow(5, 60)], clock=clock)
    first = await limiter.hit("k", 2)
    fixed, sliding = first.details
    assert round(fixed.reset_after * 1000) == 60_000
    assert round(sliding.reset_after * 1000) == 120_000  # both windows must slide out
    clock.advance(60_000)
    assert (await limiter.peek("k")).details[0].remaining == 5
    sliding_now = (await limiter.peek("k")).details[1]
    assert sliding_now.remaining == 3 and round(sliding_now.reset_after * 1000) == 60_000
    clock.advance(59_999)
    assert (await limiter.peek("k")).details[1].remaining == 4
    clock.advance(1)
    assert (await limiter.peek("k")).details[1].remaining == 5


async def test_windows_belong_to_the_key(lane: Lane, clock: Clock) -> None:
    """Each key's window opens at its own first hit: keys do not reset at the same instant."""
    limiter = lane.limiter(rl.FixedWindow(1, 10), clock=clock)
    assert (await limiter.hit("a")).allowed
    clock.advance(4_000)
    assert (await limiter.hit("b")).allowed
    assert round((await limiter.hit("a")).retry_after * 1000) == 6_000
    assert round((await limiter.hit("b")).retry_after * 1000) == 10_000


async def test_denied_hit_consumes_nothing_in_any_policy(lane: Lane, clock: Clock) -> None:
    limiter = lane.limiter([rl.FixedWindow(5, 60), rl.TokenBucket(1, 1, burst=2)], clock=clock)
    d = await limiter.hit("k")
    assert d.allowed and d.limit == 2 and d.remaining == 1  # the bucket has least headroom
    assert (await limiter.hit("k")).allowed
    denied = await limiter.hit("k")
    assert not denied.allowed
    assert denied.policy == rl.TokenBucket(1, 1, burst=2)
    assert round(denied.retry_after * 1000) == 1_000
    assert [x.allowed for x in denied.details] == [True, False]
    assert denied.details[0].remaining == 3  # the window was not charged for the denial
    for _ in range(5):
        assert not (await limiter.hit("k")).allowed
    assert (await limiter.peek("k")).details[0].remaining == 3
    clock.advance(1_000)
    d = await limiter.hit("k")
    assert d.allowed and d.details[0].remaining == 2 and d.details[1].remaining == 0


async def test_binding_policy_is_the_one_freeing_last(lane: Lane, clock: Clock) -> None:
    limiter = lane.limiter([rl.FixedWindow(1, 10), rl.FixedWindow(1, 100)], clock=clock)
    assert (await limiter.hit("k")).allowed
    d = await limiter.hit("k")
    assert not d.allowed and d.policy == rl.FixedWindow(1, 100)
    assert round(d.retry_after * 1000) == 100_000
    clock.advance(10_000)
    d = await limiter.hit("k")
    assert not d.allowed and [x.allowed for x in d.details] == [True, False]
    assert round(d.retry_after * 1000) == 90_000


async def test_peek_consumes_nothing(lane: Lane, clock: Clock) -> None:
    limiter = lane.limiter("3/minute", clock=clock)
    for _ in range(5):
        d = await limiter.peek("k")
        assert d.allowed and d.remaining == 3
    await limiter.hit("k", 2)
    d = await limiter.peek("k", 2)
    assert not d.allowed and d.remaining == 1 and d.retry_after > 0
    assert (await limiter.hit("k", 0)).remaining == 1  # cost 0 only looks
    assert (await limiter.hit("k")).allowed


async def test_reset_forgets_every_policy(lane: Lane, clock: Clock) -> None:
    limiter = lane.limiter("1/minute; 2/hour", clock=clock)
    assert (await limiter.hit("k")).allowed
    assert not (await limiter.hit("k")).allowed
    await limiter.reset("k")
    d = await limiter.hit("k")
    assert d.allowed and [x.remaining for x in d.details] == [0, 1]
    await limiter.reset("never-seen")  # resetting an unknown key is fine


async def test_keys_and_prefixes_are_separate(lane: Lane, clock: Clock) -> None:
    one = lane.limiter("1/minute", clock=clock, prefix="one")
    two = lane.limiter("1/minute", clock=clock, prefix="two")
    assert (await one.hit("k")).allowed
    assert (await two.hit("k")).allowed
    assert (await one.hit("other")).allowed
    assert not (await one.hit("k")).allowed


ODD = ["{x}", "a}b{c", "}", "{", "", "#", "#x", "ключ", "🔑 key", "\x00\x01", "a\nb", "x" * 10_000,
       "x" * 10_001, "\ud800 lone surrogate", ":", "a:b:c"]  # fmt: skip


async def test_odd_identifiers_neither_collide_nor_fail(lane: Lane, clock: Clock) -> None:
    limiter = lane.limiter("1/minute", clock=clock)
    for key in ODD:
        assert (await limiter.hit(key)).allowed, key
    for key in ODD:
        assert not (await limiter.hit(key)).allowed, key
    await limiter.reset("{x}")
    assert (await limiter.hit("{x}")).allowed
    assert not (await limiter.hit("a}b{c")).allowed


def test_identifier_escaping_keeps_one_hash_tag() -> None:
    limiter = rl.Limiter("1/s; 5/m", prefix="api")
    assert limiter.keys("user:42") == ["api:{user:42}:s1000", "api:{user:42}:s60000"]
    seen = set()
    for key in ODD:
        keys = limiter.keys(key)
        tag = keys[0].split("{", 1)[1].split("}", 1)[0]
        assert all(k.count("{") == 1 and k.count("}") == 1 for k in keys), keys
        assert tag and len(tag) <= 200
        assert all(f"{{{tag}}}" in k for k in keys)
        seen.add(tag)
    assert len(seen) == len(ODD)  # no two identifiers share state
    assert limiter.keys("#x") != limiter.keys("x")


async def test_wait_sleeps_until_allowed(lane: Lane, clock: Clock) -> None:
    limiter = lane.limiter(rl.TokenBucket(2, 1, burst=2), clock=clock)
    slept: list[float] = []

    def fake_sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.advance(round(seconds * 1000))

    async def fake_async_sleep(seconds: float) -> None:
        fake_sleep(seconds)

    limiter.limiter._sleep = fake_async_sleep if lane.is_async else fake_sleep
    await limiter.hit("k", 2)
    d = await limiter.wait("k", 2, timeout=5)
    assert d.allowed and slept == [1.0]
    with pytest.raises(rl.RateLimitExceeded) as caught:
        await limiter.wait("k", 2, timeout=0.5)
    assert not caught.value.decision.allowed and caught.value.retry_after == 1.0
    assert slept == [1.0]  # gave up at once: the wait could not fit in the timeout
