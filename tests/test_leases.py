"""In-flight limits and costs known afterwards: Concurrency, acquire/Lease, settle.

Conformance on every lane (memory, fakeredis, Redis, Valkey, cluster, Upstash; sync and
async), driven by the injected clock; the Lua/Python differential test of acquire, release,
renew, settle and lease expiry; bad input and the failure policy.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import ratelimit as rl
from tests.conftest import Clock, Harness, Lane
from tests.test_errors import _dead_store

Leased = rl.Lease | rl.AsyncLease


async def acquire(h: Harness, key: str, cost: int = 1) -> Any:
    """The limiter's lease (awaited on the async face)."""
    result = h.limiter.acquire(key, cost)
    return await result if h.is_async else result


async def call(lease: Leased, name: str, *args: Any) -> Any:
    result = getattr(lease, name)(*args)
    return await result if isinstance(lease, rl.AsyncLease) else result


async def test_slots_admit_the_limit_and_free_on_release(lane: Lane, clock: Clock) -> None:
    h = lane.limiter(rl.Concurrency(3, lease=30), clock=clock)
    leases = [await acquire(h, "u") for _ in range(3)]
    assert [lease.allowed for lease in leases] == [True, True, True]
    assert [lease.decision.remaining for lease in leases] == [2, 1, 0]
    assert leases[0].decision.reset_after == 30.0
    clock.advance(1000)
    denied = await acquire(h, "u")
    assert not denied.allowed
    assert denied.decision.limit == 3 and denied.decision.remaining == 0
    assert denied.decision.retry_after == 29.0  # the oldest lease's expiry: an upper bound
    await call(denied, "release")  # a denied lease frees nobody else's slot
    assert not (await acquire(h, "u")).allowed
    assert (await h.peek("u")).remaining == 0  # peek shows what is in flight
    await call(leases[1], "release")
    await call(leases[1], "release")  # idempotent: frees its own slot once
    again = await acquire(h, "u")
    assert again.allowed and again.decision.remaining == 0
    assert not (await acquire(h, "u")).allowed
    assert not (await acquire(h, "other")).decision.remaining < 2  # keys are separate


async def test_a_slot_is_free_at_exactly_acquire_plus_lease(lane: Lane, clock: Clock) -> None:
    h = lane.limiter(rl.Concurrency(1, lease=2), clock=clock)
    assert (await acquire(h, "u")).allowed
    clock.advance(1999)
    late = await acquire(h, "u")
    assert not late.allowed and late.decision.retry_after == 0.001
    clock.advance(1)
    assert (await acquire(h, "u")).allowed


async def test_renew_extends_only_a_live_lease(lane: Lane, clock: Clock) -> None:
    h = lane.limiter(rl.Concurrency(1, lease=2), clock=clock)
    first = await acquire(h, "u")
    clock.advance(1500)
    assert await call(first, "renew") is True
    clock.advance(1500)  # 3 s after acquire, 1.5 s after the renew: still held
    assert not (await acquire(h, "u")).allowed
    clock.advance(500)  # now + lease from the renew
    second = await acquire(h, "u")
    assert second.allowed
    assert await call(first, "renew") is False  # expired: the slot is someone else's now
    assert not (await acquire(h, "u")).allowed
    await call(second, "release")
    assert await call(second, "renew") is False  # released: a documented no-op
    assert (await acquire(h, "u")).allowed


async def test_acquire_is_all_or_nothing_with_rate_policies(lane: Lane, clock: Clock) -> None:
    h = lane.limiter([rl.Concurrency(2, lease=60), rl.FixedWindow(3, 10)], clock=clock)
    a = await acquire(h, "u", 2)
    assert a.allowed and a.decision.details[1].remaining == 1
    denied = await acquire(h, "u", 2)  # the window denies: no slot taken either
    assert not denied.allowed and denied.decision.policy == rl.FixedWindow(3, 10)
    assert denied.decision.details[0].allowed and denied.decision.retry_after == 10.0
    b = await acquire(h, "u", 1)
    assert b.allowed and b.decision.details[0].remaining == 0
    await call(a, "release")
    c = await acquire(h, "u", 0)  # a slot is free, the window is full: cost 0 still fits
    assert c.allowed
    full = await acquire(h, "u", 0)  # the slots deny: the window is charged nothing either
    assert not full.allowed and isinstance(full.decision.policy, rl.Concurrency)
    assert (await h.peek("u", 0)).details[1].remaining == 0


async def test_hit_is_refused_and_the_cost_check_ignores_slots(lane: Lane, clock: Clock) -> None:
    h = lane.limiter([rl.Concurrency(2), rl.TokenBucket(5, 1)], clock=clock)
    with pytest.raises(rl.ConfigurationError, match="Concurrency policy: use acquire"):
        await h.hit("u")
    with pytest.raises(rl.ConfigurationError, match="cost 6 is more than TokenBucket"):
        await acquire(h, "u", 6)
    assert (await acquire(h, "u", 5)).allowed  # more than the 2 slots: one slot per lease
    alone = lane.limiter(rl.Concurrency(1), clock=clock, prefix="alone")
    assert (await acquire(alone, "u", 10**6)).allowed  # nothing to charge a cost to


@pytest.mark.parametrize(
    ("policy", "cost", "actual", "after"),
    [
        (rl.FixedWindow(10, 10), 5, 2, 8),  # gives back 3
        (rl.FixedWindow(10, 10), 2, 5, 5),  # charges 3 more
        (rl.SlidingWindow(10, 10), 5, 0, 10),
        (rl.SlidingWindow(10, 10), 2, 12, 0),  # over the limit: remaining clamps at 0
        (rl.TokenBucket(1, 10, burst=10), 5, 1, 9),
        (rl.TokenBucket(1, 10, burst=10), 5, 14, 0),  # a debt the next requests wait for
    ],
    ids=lambda v: v.id if isinstance(v, rl.Policy) else str(v),
)
async def test_settle_leaves_the_policy_as_if_it_cost_actual(
    lane: Lane, clock: Clock, policy: rl.Policy, cost: int, actual: int, after: int
) -> None:
    h = lane.limiter([rl.Concurrency(5), policy], clock=clock)
    lease = await acquire(h, "u", cost)
    assert lease.allowed
    clock.advance(1)
    await call(lease, "settle", actual)
    assert (await h.peek("u", 0)).details[1].remaining == after
    await call(lease, "settle", actual)  # idempotent: nothing more given or charged
    assert (await h.peek("u", 0)).details[1].remaining == after
    if actual > 10:
        want = await h.peek("u", 1)
        assert not want.allowed and want.retry_after > 0


async def test_settle_debt_keeps_retry_after_exact(lane: Lane, clock: Clock) -> None:
    h = lane.limiter(rl.TokenBucket(1, 1, burst=2), clock=clock)
    lease = await acquire(h, "u", 1)
    await call(lease, "settle", 4)  # level 2 - 4 = -2 tokens
    d = await h.peek("u", 1)
    assert not d.allowed and d.remaining == 0 and d.retry_after == 3.0
    clock.advance(2999)
    assert not (await h.peek("u", 1)).allowed
    clock.advance(1)
    assert (await h.peek("u", 1)).allowed


async def test_settle_gives_nothing_back_into_a_passed_window(lane: Lane, clock: Clock) -> None:
    h = lane.limiter(rl.FixedWindow(10, 10), clock=clock)
    lease = await acquire(h, "u", 4)
    clock.advance(10_000)  # the charged window has passed
    assert (await acquire(h, "u", 3)).allowed
    await call(lease, "settle", 0)
    assert (await h.peek("u", 0)).remaining == 7
    await call(lease, "settle", 6)  # the excess goes into the current window
    assert (await h.peek("u", 0)).remaining == 5


async def test_a_settle_too_large_to_count_exactly_is_refused_and_changes_nothing(
    lane: Lane, clock: Clock
) -> None:
    # 10**18 units of a 1 s bucket: beyond 2**53 in the script's numbers, and a TTL Redis
    # refuses ("invalid expire time"), which once opened the breaker for every identifier
    h = lane.limiter(rl.TokenBucket(10, 1, burst=10), clock=clock)
    lease = await acquire(h, "tenant:1", 1)
    with pytest.raises(rl.ConfigurationError, match="settle cost 1000000000000000000 is too"):
        await call(lease, "settle", 10**18)
    assert (await h.peek("tenant:1", 0)).remaining == 9  # nothing sent, nothing changed
    breaker = h.limiter.breaker
    assert breaker is None or breaker.state == "closed"
    assert (await h.hit("tenant:2")).reason is None  # the store still decides for others
    await call(lease, "settle", 2**52 // 1000 - 1)  # the largest it can count: taken
    assert (await h.peek("tenant:1", 0)).remaining == 0


async def test_a_settle_that_gives_units_back_ends_the_cached_denial(
    lane: Lane, clock: Clock
) -> None:
    h = lane.limiter(rl.FixedWindow(10, 60), clock=clock, deny_cache=100)
    lease = await acquire(h, "job", 10)
    assert not (await h.hit("job", 5)).allowed  # denied by the store, then cached
    assert (await h.hit("job", 5)).reason == "cached"
    await call(lease, "settle", 2)  # 8 units given back
    d = await h.hit("job", 5)
    assert d.allowed and d.reason is None and d.remaining == 3


async def test_settle_after_release_and_on_a_denied_lease(lane: Lane, clock: Clock) -> None:
    h = lane.limiter([rl.Concurrency(1), rl.FixedWindow(10, 60)], clock=clock)
    lease = await acquire(h, "u", 5)
    await call(lease, "release")
    await call(lease, "settle", 1)  # release frees the slot, settle corrects the charge
    assert (await h.peek("u", 0)).details[1].remaining == 9
    held = await acquire(h, "u", 1)
    denied = await acquire(h, "u", 3)
    assert not denied.allowed
    await call(denied, "settle", 0)  # a denied lease charged nothing: nothing to give back
    assert (await h.peek("u", 0)).details[1].remaining == 8
    await call(held, "release")


async def test_with_blocks_release_and_raise_when_denied(lane: Lane, clock: Clock) -> None:
    h = lane.limiter(rl.Concurrency(1), clock=clock)
    if h.is_async:
        alimiter = h.limiter
        assert isinstance(alimiter, rl.AsyncLimiter)
        async with alimiter.acquire("u") as decision:
            assert decision.allowed
            with pytest.raises(rl.RateLimitExceeded) as caught:
                async with alimiter.acquire("u"):
                    pass
            assert caught.value.decision.remaining == 0
        with pytest.raises(KeyError):
            async with alimiter.acquire("u"):
                raise KeyError("boom")  # released on exception too
        lease = await alimiter.acquire("u")
        async with lease:
            pass
    else:
        limiter = h.limiter
        assert isinstance(limiter, rl.Limiter)
        with limiter.acquire("u") as decision:
            assert decision.allowed
            with pytest.raises(rl.RateLimitExceeded), limiter.acquire("u"):
                pass
        with pytest.raises(KeyError), limiter.acquire("u"):
            raise KeyError("boom")
        with limiter.acquire("u"):
            pass
    assert (await acquire(h, "u")).allowed


async def test_every_key_gets_a_ttl(real_lane: Lane) -> None:
    h = real_lane.limiter([rl.Concurrency(2, lease=5), rl.SlidingWindow(10, 60)])
    lease = await acquire(h, "ttl")
    await call(lease, "renew")
    await call(lease, "settle", 3)
    client = real_lane.server.client()  # type: ignore[union-attr]
    try:
        for key in h.limiter.keys("ttl"):
            ttl = client.pttl(key)
            assert 0 < ttl <= (5_000 if ":{ttl}:c" in key else 120_000), (key, ttl)
        await call(lease, "release")
        assert not client.exists(h.limiter.keys("ttl")[0])  # the last slot freed: key gone
    finally:
        client.close()


def test_bad_input_is_named() -> None:
    for make, text in [
        (lambda: rl.Concurrency(0), "limit must be a positive integer, got 0"),
        (lambda: rl.Concurrency(10**9), "limit 1000000000 is too large"),
        (lambda: rl.Concurrency(1, lease=0), "lease must be at least 1 millisecond, got 0"),
        (lambda: rl.Concurrency(1, lease=-1.5), "lease must be at least 1 millisecond"),
        (lambda: rl.Concurrency(1, lease="60"), "lease must be seconds"),  # type: ignore[arg-type]
    ]:
        with pytest.raises(rl.ConfigurationError, match=text):
            make()
    assert rl.Concurrency(5, lease=0.5).lease == 0.5
    assert rl.Concurrency(5).id == "c5.60000"
    limiter = rl.Limiter([rl.Concurrency(1), rl.FixedWindow(5, 60)])
    lease = limiter.acquire("u", 2)
    for bad in (-1, 1.5, True, "2"):
        with pytest.raises(rl.ConfigurationError, match="settle needs a non-negative integer"):
            lease.settle(bad)  # type: ignore[arg-type]
    assert limiter.peek("u", 0).details[1].remaining == 3  # nothing changed by the bad calls


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
async def test_store_errors_follow_on_error(is_async: bool, caplog: Any) -> None:
    store = _dead_store(is_async)
    cls: Any = rl.AsyncLimiter if is_async else rl.Limiter
    policies = [rl.Concurrency(1), rl.FixedWindow(5, 60)]

    async def get(result: Any) -> Any:
        return await result if is_async else result

    allow = cls(policies, store=store, on_error="allow")
    lease = await get(allow.acquire("u"))
    assert lease.allowed and lease.decision.reason == "store_error" and not lease.holds
    await get(lease.settle(0))  # holds nothing: sends nothing
    assert await get(lease.renew()) is False
    await get(lease.release())
    deny = cls(policies, store=store, on_error="deny")
    assert not (await get(deny.acquire("u"))).allowed
    strict = cls(policies, store=store, on_error="raise")
    with pytest.raises(rl.StoreError):
        await get(strict.acquire("u"))
    client = store.client
    closing = client.aclose() if is_async else client.close()
    if closing is not None:
        await closing


async def test_a_failed_release_is_logged_once_and_never_raised(
    lane: Lane, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    if lane.is_memory:
        return  # the memory store cannot fail
    h = lane.limiter([rl.Concurrency(5), rl.FixedWindow(50, 60)], clock=clock, on_error="raise")
    leases = [await acquire(h, "k") for _ in range(3)]  # one key: one breaker on a cluster
    store = h.limiter.store
    broken = "arelease" if h.is_async else "release"

    def fail(*args: Any) -> Any:
        raise rl.StoreError("the store went away")

    async def afail(*args: Any) -> Any:
        fail()

    setattr(store, broken, afail if h.is_async else fail)
    try:
        with caplog.at_level(logging.WARNING, logger="ratelimit"):
            for lease in leases:
                await call(lease, "release")  # never raised, even with on_error="raise"
        failures = [r for r in caplog.records if "failed" in r.getMessage()]
        assert len(failures) == 1, [r.getMessage() for r in caplog.records]
    finally:
        delattr(store, broken)


# Leases under an override: a lease acts on exactly the policies and state keys it was
# acquired under (the override's when one applied), never on the limiter's own.


async def set_override(h: Harness, identifier: str, limits: Any) -> None:
    result = h.limiter.overrides.set(identifier, limits)
    if h.is_async:
        await result


async def test_settle_under_an_override_of_another_shape_corrects_the_overrides_state(
    lane: Lane, clock: Clock
) -> None:
    h = lane.limiter([rl.Concurrency(5), rl.FixedWindow(10, 10)], clock=clock)
    await set_override(h, "u", [rl.TokenBucket(1, 1, burst=20), rl.SlidingWindow(30, 60)])
    lease = await acquire(h, "u", 6)
    assert lease.allowed
    assert [d.remaining for d in lease.decision.details] == [14, 24]
    clock.advance(1)
    await call(lease, "settle", 2)
    d = await h.peek("u", 0)
    assert [x.policy for x in d.details] == [
        rl.TokenBucket(1, 1, burst=20),
        rl.SlidingWindow(30, 60),
    ]
    assert [x.remaining for x in d.details] == [18, 28]  # 4 given back to each
    await call(lease, "settle", 9)  # a higher cost charges the excess there too
    d = await h.peek("u", 0)
    assert [x.remaining for x in d.details] == [11, 21]
    assert await call(lease, "renew") is True  # the override holds no slot: nothing to renew
    await call(lease, "release")
    deleted = h.limiter.overrides.delete("u")
    if h.is_async:
        await deleted
    # the limiter's own policies were never touched
    assert [x.remaining for x in (await h.peek("u", 0)).details] == [5, 10]


@pytest.mark.parametrize(
    "own",
    [[rl.FixedWindow(100, 60)], [rl.Concurrency(1, lease=10), rl.FixedWindow(100, 60)]],
    ids=["limiter-without-slots", "limiter-with-another-lease"],
)
async def test_release_under_an_override_frees_the_overrides_slot(
    lane: Lane, clock: Clock, own: list[rl.Policy]
) -> None:
    h = lane.limiter(own, clock=clock)
    await set_override(h, "u", [rl.Concurrency(2, lease=30), rl.FixedWindow(100, 60)])
    first, second = await acquire(h, "u"), await acquire(h, "u")
    assert first.allowed and second.allowed
    full = await acquire(h, "u")
    assert not full.allowed and full.decision.policy == rl.Concurrency(2, lease=30)
    await call(first, "release")
    again = await acquire(h, "u")
    assert again.allowed and again.decision.details[0].remaining == 0
    await call(second, "release")
    await call(again, "release")
    assert (await h.peek("u", 0)).details[0].remaining == 2  # every slot free again


async def test_renew_under_an_override_extends_the_overrides_slot(lane: Lane, clock: Clock) -> None:
    h = lane.limiter(rl.Concurrency(5, lease=10), clock=clock)
    await set_override(h, "u", rl.Concurrency(1, lease=2))
    first = await acquire(h, "u")
    clock.advance(1500)
    assert await call(first, "renew") is True
    clock.advance(1500)  # 3 s after the acquire, 1.5 s after the renew: still held
    assert not (await acquire(h, "u")).allowed
    clock.advance(500)  # now + lease from the renew
    assert (await acquire(h, "u")).allowed
    assert await call(first, "renew") is False  # expired: not taken back


async def test_an_acquire_of_cost_0_under_an_override_takes_the_overrides_slot(
    lane: Lane, clock: Clock
) -> None:
    h = lane.limiter([rl.FixedWindow(100, 60)], clock=clock)
    await set_override(h, "u", [rl.Concurrency(1, lease=30), rl.FixedWindow(100, 60)])
    held = await acquire(h, "u", 0)
    assert held.allowed and held.decision.details[0].remaining == 0
    assert held.decision.details[1].remaining == 100  # charges nothing
    assert not (await acquire(h, "u", 0)).allowed
    await call(held, "release")
    assert (await acquire(h, "u", 0)).allowed


# The differential test: the Lua and the Python twin, the same clock, random leases.

LEASE_POLICIES = [
    [rl.Concurrency(3, lease=2)],
    [rl.Concurrency(2, lease=5), rl.FixedWindow(6, 10)],
    [rl.SlidingWindow(7, 3), rl.Concurrency(4, lease=1)],
    [rl.Concurrency(2, lease=3), rl.TokenBucket(3, 1, burst=4), rl.Concurrency(5, lease=7)],
    [rl.Concurrency(3, lease=60), rl.SlidingWindow(100_000_000, 86400)],  # ticks of 10 ms
    [rl.FixedWindow(5, 4), rl.TokenBucket(2, 1, burst=5)],  # no slots: acquire + settle
]


async def _compare_leases(lane: Lane, policy_list: list[rl.Policy], seed: int, n: int,
                          override: list[rl.Policy] | None = None) -> int:  # fmt: skip
    rng = random.Random(seed)
    clock = Clock()
    prefix = f"ldiff{seed}" if override is None else f"ldiffo{seed}"
    lua = lane.limiter(policy_list, clock=clock, prefix=prefix)
    twin = rl.Limiter(policy_list, clock=clock, prefix=prefix)
    if override is not None:  # "b" gets its own policies on both sides
        await set_override(lua, "b", override)
        twin.overrides.set("b", override)
    rates = [p.limit for p in policy_list if not isinstance(p, rl.Concurrency)]
    capacity = min(rates, default=10)
    held: list[tuple[Leased, rl.Lease]] = []
    checked = 0
    last = time.perf_counter()
    for step in range(n):
        real_ms = int((time.perf_counter() - last) * 1000) + 1
        last = time.perf_counter()
        clock.advance(max(rng.choice([0, 0, 1, 10, 100, 333, 999, 1000, 2000, 4000]), real_ms))
        op = rng.choice(["acquire"] * 4 + ["release", "renew", "settle", "peek"])
        if op == "acquire" or not held:
            key = rng.choice(["a", "b", "{c}"])
            cost = min(rng.choice([0, 1, 1, 2, 3]), capacity)
            got = await acquire(lua, key, cost)
            want = twin.acquire(key, cost)
            assert got.decision == want.decision, f"step {step}: acquire {key} {cost}"
            assert got.decision.details == want.decision.details
            if got.allowed:
                held.append((got, want))
        elif op == "peek":
            key = rng.choice(["a", "b", "{c}"])
            got_d, want_d = await lua.peek(key, 0), twin.peek(key, 0)
            assert got_d == want_d and got_d.details == want_d.details, f"step {step}: peek"
        else:
            got_lease, want_lease = held[rng.randrange(len(held))]
            if op == "release":
                await call(got_lease, "release")
                want_lease.release()
                held = [pair for pair in held if pair[1] is not want_lease]
            elif op == "renew":
                renewed = await call(got_lease, "renew")
                assert renewed == want_lease.renew(), f"step {step}: renew"
            else:
                actual = rng.choice([0, 1, 2, 4, 7])
                await call(got_lease, "settle", actual)
                want_lease.settle(actual)
        checked += 1
    return checked


@pytest.mark.parametrize("policy_list", LEASE_POLICIES, ids=lambda ps: "+".join(p.id for p in ps))
async def test_lua_and_python_twin_agree_on_leases(
    script_lane: Lane, policy_list: list[rl.Policy]
) -> None:
    checked = 0
    for seed in range(2):
        checked += await _compare_leases(script_lane, policy_list, seed, 250)
    assert checked == 500


# an identifier's override of another shape: the leases taken under it act on its policies
LEASE_OVERRIDES = [
    ([rl.Concurrency(2, lease=5), rl.FixedWindow(6, 10)],
     [rl.Concurrency(1, lease=3), rl.TokenBucket(3, 1, burst=4)]),
    ([rl.FixedWindow(5, 4)], [rl.Concurrency(2, lease=2), rl.SlidingWindow(7, 3)]),
    ([rl.Concurrency(3, lease=2)], [rl.FixedWindow(4, 2)]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("policy_list", "override"),
    LEASE_OVERRIDES,
    ids=lambda ps: "+".join(p.id for p in ps),
)
async def test_lua_and_python_twin_agree_on_leases_under_an_override(
    script_lane: Lane, policy_list: list[rl.Policy], override: list[rl.Policy]
) -> None:
    checked = 0
    for seed in range(2):
        checked += await _compare_leases(script_lane, policy_list, seed, 250, override)
    assert checked == 500


# Real processes on a real server: never more than `limit` in flight; a killed holder's
# slots come back after the lease with no call from anyone.


@pytest.mark.redis_server
@pytest.mark.parametrize("kind", ["redis", "valkey"])
def test_eight_processes_never_exceed_the_limit_in_flight(servers: Any, kind: str) -> None:
    import multiprocessing

    from tests._lease_workers import hold_and_count

    server = servers.get(kind)
    server.reset()
    ctx = multiprocessing.get_context("spawn")
    in_flight, peak, admitted = ctx.Value("i", 0), ctx.Value("i", 0), ctx.Value("i", 0)
    limit = 5
    args = (server.host, server.port, limit, 4, 40, in_flight, peak, admitted)
    processes = [ctx.Process(target=hold_and_count, args=args) for _ in range(8)]
    for p in processes:
        p.start()
    for p in processes:
        p.join(timeout=180)
        assert p.exitcode == 0
    assert in_flight.value == 0
    assert 1 <= peak.value <= limit, peak.value
    assert admitted.value >= 50, admitted.value  # the workers do get slots
    client = server.client()
    try:  # every lease was released: nothing is left in flight
        assert client.zcard("leaseload:{one-key}:c30000") == 0
    finally:
        client.close()


@pytest.mark.redis_server
def test_a_killed_holder_gives_its_slots_back_after_the_lease(servers: Any) -> None:
    import multiprocessing
    import os
    import signal

    from tests._lease_workers import hold_until_killed

    server = servers.get("redis")
    server.reset()
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Queue()
    lease_s = 1.0
    holder = ctx.Process(
        target=hold_until_killed, args=(server.host, server.port, 3, lease_s, ready)
    )
    holder.start()
    try:
        took_all, acquired_at = ready.get(timeout=60)
        assert took_all
        os.kill(holder.pid, signal.SIGKILL)  # type: ignore[arg-type]
        holder.join(timeout=10)
        assert holder.exitcode == -signal.SIGKILL
    finally:
        if holder.is_alive():
            holder.kill()
    client = server.client()
    try:
        limiter = rl.Limiter(rl.Concurrency(3, lease=lease_s), store=rl.RedisStore(client),
                             prefix="leasekill")  # fmt: skip
        first = limiter.acquire("one-key")
        assert not first.allowed and 0 < first.decision.retry_after <= lease_s
        deadline = time.monotonic() + 5  # bounded: the slots are back after about 1 s
        while time.monotonic() < deadline:
            lease = limiter.acquire("one-key")
            if lease.allowed:
                break
            time.sleep(min(lease.decision.retry_after, 0.05))
        freed_at = time.time()
        assert lease.allowed
        assert freed_at >= acquired_at + lease_s - 0.05  # not before the lease ran out
        assert [limiter.acquire("one-key").allowed for _ in range(3)] == [True, True, False]
    finally:
        client.close()


# settle against the rule "as if the lease had cost `actual`" (hypothesis, memory store; the
# differential test above holds the Lua to the same answers).


_rate_policies = st.one_of(
    st.builds(
        lambda cls, limit, period: cls(limit, period),
        st.sampled_from([rl.FixedWindow, rl.SlidingWindow]),
        st.integers(1, 12),
        st.sampled_from([1, 2, 3, 10, 0.25]),
    ),
    st.builds(
        lambda rate, period, burst: rl.TokenBucket(rate, period, burst=burst),
        st.integers(1, 5),
        st.sampled_from([1, 2, 10]),
        st.integers(1, 12),
    ),
)
_history = st.lists(st.tuples(st.sampled_from([0, 1, 50, 400, 1500]), st.integers(0, 4)),
                    max_size=6)  # fmt: skip


def _world(policy: rl.Policy, history: list[tuple[int, int]]) -> tuple[rl.Limiter, Clock]:
    clock = Clock()
    limiter = rl.Limiter([rl.Concurrency(50), policy], clock=clock)
    for dt, cost in history:
        clock.advance(dt)
        limiter.acquire("k", min(cost, policy.limit))
    return limiter, clock


def _view(limiter: rl.Limiter, limit: int) -> list[tuple[bool, int, float]]:
    return [
        (d.allowed, d.remaining, d.retry_after)
        for d in (limiter.peek("k", c).details[1] for c in range(limit + 1))
    ]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policy=_rate_policies, history=_history, cost=st.integers(0, 12),
       actual=st.integers(0, 12), delay=st.integers(0, 12_000))  # fmt: skip
def test_settle_is_as_if_the_lease_had_cost_actual(
    policy: rl.Policy, history: list[tuple[int, int]], cost: int, actual: int, delay: int
) -> None:
    cost, actual = min(cost, policy.limit), min(actual, policy.limit)
    settled, clock_a = _world(policy, history)
    direct, clock_b = _world(policy, history)
    lease = settled.acquire("k", cost)
    want = direct.acquire("k", actual)
    assume(lease.allowed and want.allowed)
    charged = lease.decision.details[1]
    if not isinstance(policy, rl.TokenBucket):
        # settle while the charged window counts: a fixed window's own, or a sliding
        # window's own and the one after it (reset_after covers both)
        assume(cost > 0 and delay < charged.reset_after * 1000)
    clock_a.advance(delay)
    clock_b.advance(delay)
    lease.settle(actual)
    lease.settle(actual)  # idempotent
    got, expected = _view(settled, policy.limit), _view(direct, policy.limit)
    if isinstance(policy, rl.TokenBucket) and actual > cost:
        # the excess is charged without a check: never less than as if, a bucket whose
        # refill was capped at its burst meanwhile pays the whole excess
        assert all(g[1] <= e[1] and g[2] >= e[2] for g, e in zip(got, expected, strict=True))
    else:
        assert got == expected
    assert all(remaining <= policy.limit for _, remaining, _ in got)  # never above the burst


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(limit=st.integers(2, 12), cost=st.integers(1, 12), actual=st.integers(0, 12),
       later=st.integers(0, 4))  # fmt: skip
def test_settle_never_gives_back_into_a_passed_window(
    limit: int, cost: int, actual: int, later: int
) -> None:
    policy = rl.FixedWindow(limit, 10)
    cost, actual, later = min(cost, limit), min(actual, limit), min(later, limit)
    settled, clock_a = _world(policy, [])
    untouched, clock_b = _world(policy, [])
    lease = settled.acquire("k", cost)
    untouched.acquire("k", cost)
    for limiter, clock in ((settled, clock_a), (untouched, clock_b)):
        clock.advance(10_000)  # the charged window has passed
        limiter.acquire("k", later)
    lease.settle(actual)
    got, before = _view(settled, limit), _view(untouched, limit)
    if actual <= cost:
        assert got == before  # nothing given back into the new window
    else:  # the excess goes into the current window
        assert got[0][1] == max(before[0][1] - (actual - cost), 0)


def test_ietf_headers_name_a_concurrency_policy_with_its_quota_unit(clock: Clock) -> None:
    import http_sfv

    from ratelimit.headers import Renderer

    limiter = rl.Limiter([rl.Concurrency(2, lease=30), rl.FixedWindow(100, 60)], clock=clock)
    limiter.acquire("k")
    clock.advance(250)
    lease = limiter.acquire("k")
    fields = dict(Renderer("ietf").fields(lease.decision))
    policy, state = http_sfv.List(), http_sfv.List()
    policy.parse(fields["RateLimit-Policy"].encode("ascii"))
    state.parse(fields["RateLimit"].encode("ascii"))
    assert [item.value for item in policy] == ["c2.30000", "f100.60000"]
    assert dict(policy[0].params) == {"q": 2, "qu": "concurrent-requests"}
    assert dict(policy[1].params) == {"q": 100, "w": 60}
    assert dict(state[0].params) == {"r": 0, "t": 30}  # no free slot; the latest lease's end
    clock.advance(1000)
    denied = limiter.acquire("k")
    status, headers, _ = Renderer("ietf").deny(denied.decision)
    # the oldest lease ends 28.75 s from now (an upper bound): rounded up
    assert status == 429 and dict(headers)["Retry-After"] == "29"


def test_typing_file_passes_mypy_strict() -> None:
    import subprocess
    import sys
    from pathlib import Path

    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "tests/typing/check_leases.py"],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


async def test_a_concurrency_denial_is_never_answered_from_the_cache(
    script_lane: Lane, clock: Clock
) -> None:
    h = script_lane.limiter(rl.Concurrency(1, lease=60), clock=clock, deny_cache=100)
    held = await acquire(h, "u")
    denied = await acquire(h, "u")
    assert not denied.allowed and denied.decision.reason is None
    await call(held, "release")  # a release can end the denial at any moment
    again = await acquire(h, "u")
    assert again.allowed and again.decision.reason is None


async def test_a_shadow_limiter_never_denies_and_a_would_be_denial_holds_nothing(
    lane: Lane, clock: Clock
) -> None:
    h = lane.limiter([rl.Concurrency(1), rl.FixedWindow(10, 60)], clock=clock, shadow=True)
    held = await acquire(h, "u", 2)
    assert held.allowed and held.holds and held.decision.reason is None
    shadowed = await acquire(h, "u", 3)  # the slot is taken: enforcement would deny
    assert shadowed.allowed and shadowed.decision.reason == "shadow" and not shadowed.holds
    assert shadowed.decision.remaining == 0 and shadowed.decision.retry_after == 60.0
    await call(shadowed, "release")  # holds nothing: frees nobody's slot
    peeked = await h.peek("u", 0)
    assert peeked.details[0].remaining == 0 and peeked.details[1].remaining == 8
    await call(held, "release")
    assert (await h.peek("u", 0)).details[0].remaining == 1


async def test_a_hit_under_an_override_with_slots_takes_none_and_frees_none(
    lane: Lane, clock: Clock
) -> None:
    """A limiter that hits (no Concurrency of its own) under an override that holds one: the
    hit is checked against the slots in flight, takes none, and leaves the leases that
    acquire took in place; the same on every store (the script used to refuse the hit as a
    store error, and the memory store to overwrite the leases)."""
    h = lane.limiter("100/minute", clock=clock)
    await set_override(h, "u", [rl.Concurrency(2, lease=30), rl.FixedWindow(10, 60)])
    for _ in range(3):
        d = await h.hit("u")
        assert d.allowed and d.reason is None
        assert d.details[0].remaining == 2  # no slot taken by a hit
    first = await acquire(h, "u")
    assert first.allowed
    d = await h.hit("u")  # one of two slots in flight: allowed, and the lease stays counted
    assert d.allowed and d.reason is None and d.details[0].remaining == 1
    second = await acquire(h, "u")
    assert second.allowed
    denied = await h.hit("u")  # both slots in flight: the override's limit holds
    assert not denied.allowed and denied.reason is None
    assert denied.policy == rl.Concurrency(2, lease=30)
    assert not (await acquire(h, "u")).allowed  # both leases are still counted
    await call(first, "release")
    await call(second, "release")
    after = await h.hit("u")
    assert after.allowed and after.details[0].remaining == 2
    assert after.details[1].remaining == 10 - 3 - 1 - 1 - 1 - 1  # 5 hits and 2 leases


class GatedStore(rl.MemoryStore):
    """A memory store whose releases wait at a gate: a release in flight, to be cancelled."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.arrived = asyncio.Event()
        self.releases = 0

    async def arelease(self, keys: Any, lease: str) -> int:
        self.releases += 1
        self.arrived.set()
        await self.gate.wait()
        return await super().arelease(keys, lease)


async def test_a_release_cancelled_in_flight_still_frees_the_slot(clock: Clock) -> None:
    store = GatedStore()
    limiter = rl.AsyncLimiter(rl.Concurrency(1), store=store, clock=clock)
    lease = await limiter.acquire("k")
    release = asyncio.ensure_future(lease.release())
    await store.arrived.wait()  # the release is on its way to the store
    release.cancel()  # a client gone, a timeout, a cancel scope around the cleanup
    with pytest.raises(asyncio.CancelledError):
        await release
    assert (await limiter.peek("k")).remaining == 0  # not freed yet: the store never answered
    store.gate.set()
    for _ in range(100):  # the release sent again in the background: a few turns of the loop
        if (await limiter.peek("k")).remaining == 1:
            break
        await asyncio.sleep(0)
    assert (await limiter.peek("k")).remaining == 1  # freed now, not when the lease runs out
    assert store.releases == 2
    await lease.release()  # released already: sends nothing more
    assert store.releases == 2
