"""Property tests (hypothesis) of the algorithm rules, and the differential test: the Lua on a
real server and the memory store's Python twin give identical decisions."""

from __future__ import annotations

import math
import random
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ratelimit as rl
from ratelimit.stores.base import Plan
from tests.conftest import Lane
from tests.support import Clock

periods = st.sampled_from([1, 2, 3, 7, 10, 60, 0.25, 1.5])
window_policies = st.builds(
    lambda cls, limit, period: cls(limit, period),
    st.sampled_from([rl.FixedWindow, rl.SlidingWindow]),
    st.integers(1, 12),
    periods,
)
bucket_policies = st.builds(
    lambda rate, period, burst: rl.TokenBucket(rate, period, burst=burst),
    st.integers(1, 7),
    periods,
    st.integers(1, 12),
)
policies = st.one_of(window_policies, bucket_policies)
policy_lists = st.lists(policies, min_size=1, max_size=3, unique_by=lambda p: p.id)
steps = st.lists(
    st.tuples(
        st.sampled_from([0, 0, 1, 3, 50, 333, 1000, 2500, 9000, 61000]),  # ms to advance
        st.integers(0, 12),  # cost, clipped to the capacity
        st.sampled_from(["a", "b"]),
    ),
    min_size=1,
    max_size=40,
)

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _run(policy_list: list[rl.Policy], script: list[tuple[int, int, str]]):  # type: ignore[no-untyped-def]
    clock = Clock()
    limiter = rl.Limiter(policy_list, clock=clock)
    capacity = min(p.limit for p in policy_list)
    for dt, cost, key in script:
        clock.advance(dt)
        yield clock, limiter, min(cost, capacity), key


@SETTINGS
@given(policy_list=policy_lists, script=steps)
def test_retry_after_is_exact_and_nothing_is_charged_on_deny(
    policy_list: list[rl.Policy], script: list[tuple[int, int, str]]
) -> None:
    for clock, limiter, cost, key in _run(policy_list, script):
        before = limiter.peek(key, cost)
        d = limiter.hit(key, cost)
        assert 0 <= d.remaining <= d.limit
        assert all(0 <= x.remaining <= x.limit for x in d.details)
        assert d.allowed == before.allowed
        if d.allowed:
            assert d.retry_after == 0
            continue
        # a denial changes nothing, in any policy
        assert limiter.peek(key, cost) == before
        retry = round(d.retry_after * 1000)
        assert retry >= 1
        assert retry == max(round(x.retry_after * 1000) for x in d.details)
        # the same cost is denied one millisecond early and allowed on time
        now = clock.ms
        clock.ms = now + retry - 1
        assert not limiter.peek(key, cost).allowed
        clock.ms = now + retry
        assert limiter.peek(key, cost).allowed
        clock.ms = now


@SETTINGS
@given(policy_list=policy_lists, script=steps)
def test_reset_after_is_exact(
    policy_list: list[rl.Policy], script: list[tuple[int, int, str]]
) -> None:
    for clock, limiter, cost, key in _run(policy_list, script):
        d = limiter.hit(key, cost)
        now = clock.ms
        for i, detail in enumerate(d.details):
            reset = round(detail.reset_after * 1000)
            if reset == 0:
                assert detail.remaining == detail.limit
                continue
            clock.ms = now + reset - 1
            assert limiter.peek(key, 0).details[i].remaining < detail.limit
            clock.ms = now + reset
            assert limiter.peek(key, 0).details[i].remaining == detail.limit
            clock.ms = now


@SETTINGS
@given(
    limit=st.integers(1, 10),
    period=periods,
    gaps=st.lists(st.integers(0, 3000), min_size=1, max_size=60),
)
def test_fixed_window_never_admits_more_than_limit_per_window(
    limit: int, period: float, gaps: list[int]
) -> None:
    clock = Clock()
    limiter = rl.Limiter(rl.FixedWindow(limit, period), clock=clock)
    window_start: int | None = None
    admitted = 0
    period_ms = round(period * 1000)
    for gap in gaps:
        clock.advance(gap)
        if window_start is not None and clock.ms >= window_start + period_ms:
            window_start, admitted = None, 0
        if limiter.hit("k").allowed:
            if window_start is None:
                window_start = clock.ms
            admitted += 1
        assert admitted <= limit


@SETTINGS
@given(
    rate=st.integers(1, 5),
    burst=st.integers(1, 10),
    gaps=st.lists(st.integers(0, 700), min_size=1, max_size=80),
)
def test_token_bucket_admits_at_most_burst_plus_refill(
    rate: int, burst: int, gaps: list[int]
) -> None:
    clock = Clock()
    limiter = rl.Limiter(rl.TokenBucket(rate, 1, burst=burst), clock=clock)
    start = clock.ms
    admitted = 0
    for gap in gaps:
        clock.advance(gap)
        admitted += limiter.hit("k").allowed
        assert admitted * 1000 <= burst * 1000 + rate * (clock.ms - start)


#: what a key synced to the twin's expiry keeps beyond it on the server (see ServerKeys)
MARGIN_MS = 200


class ServerKeys:
    """Reads and sets the TTLs of single keys on a lane's server, beside the store's client:
    the real server's own client (behind the Upstash endpoint too), or the fakeredis client."""

    def __init__(self, lane: Lane) -> None:
        self.lane = lane
        self.client = lane.server.client() if lane.server is not None else None

    async def _run(self, name: str, *args: Any) -> Any:
        if self.client is not None:
            return getattr(self.client, name)(*args)
        result = getattr(self.lane.raw, name)(*args)
        return await result if self.lane.is_async else result

    async def pttl(self, key: str) -> int:
        return int(await self._run("pttl", key))

    async def expire_as(self, key: str, twin: rl.MemoryStore, now: int) -> None:
        """Give ``key`` on the server the expiry it has in ``twin`` at ``now`` (ms), plus
        :data:`MARGIN_MS` for the real time that passes before the next call reads it; deleted
        where the twin holds no live state."""
        entry = twin.entries.get(key)
        if entry is None or entry[1] < now:
            await self._run("delete", key)
        else:
            await self._run("pexpire", key, entry[1] - now + MARGIN_MS)

    def close(self) -> None:
        if self.client is not None:
            self.client.close()


def twin_ttl(twin: rl.MemoryStore, key: str, now: int) -> int:
    """The PTTL that ``key`` has in the twin at ``now`` (ms): -2 when absent or expired."""
    entry = twin.entries.get(key)
    return -2 if entry is None or entry[1] < now else int(entry[1] - now)


async def _compare(lane: Lane, policy_list: list[rl.Policy], seed: int, n: int,
                   overrides: list[list[rl.Policy] | None] | None = None) -> int:  # fmt: skip
    """Drives the Lua on ``lane`` and the twin with the same clock and random keys, costs and
    times (and with ``overrides``, override sets and deletes), demanding the same decisions.

    With overrides, the twin's clock is also the server's clock for expiries: state read by
    policies of other rates and bursts is then read differently when present (its level) and
    when expired (a full bucket), and a server expires keys in real time, slower than the
    fake clock. So before each step the identifier's state keys get on the server the expiry
    they have in the twin, and after it every TTL that step wrote must be the twin's."""
    rng = random.Random(seed)
    clock = Clock()
    lua = lane.limiter(policy_list, clock=clock, prefix=f"diff{seed}")
    twin = rl.Limiter(policy_list, clock=clock, prefix=f"diff{seed}")
    twin_store = twin.store
    assert isinstance(twin_store, rl.MemoryStore)
    server = ServerKeys(lane) if overrides else None
    plans = [Plan(policy_list), *(Plan(o) for o in overrides or () if o)]
    shapes = {state_id for plan in plans for state_id in plan.state_ids}
    capacity = min(p.limit for p in policy_list)
    checked = 0
    last = time.perf_counter()
    for _ in range(n):
        # The fake clock never runs slower than real time: a server expires keys in real
        # time, so a key gone on the server must be expired on the twin's clock too.
        real_ms = math.ceil((time.perf_counter() - last) * 1000)
        last = time.perf_counter()
        clock.advance(max(rng.choice([0, 0, 1, 7, 100, 333, 999, 1000, 4000, 30_000]), real_ms))
        key = rng.choice(["a", "b", "c", "{d}"])
        cost = min(rng.choice([0, 1, 1, 1, 2, 3, 5]), capacity)
        op = rng.choice(
            ["hit", "hit", "hit", "peek", "reset"]
            if rng.random() < 0.05
            else ["hit", "hit", "peek"]
        )
        state_keys: list[str] = []
        if server is not None:  # the twin's expiries on the server (see above)
            head = twin._override_key(key)[: -len("override")]
            state_keys = [head + shape for shape in sorted(shapes)]
            for state_key in state_keys:
                await server.expire_as(state_key, twin_store, clock.ms)
        before = {k: twin_ttl(twin_store, k, clock.ms) for k in state_keys}
        if op == "reset":
            await lua.reset(key)
            twin.reset(key)
            continue
        if overrides and rng.random() < 0.04:  # set or delete an override on both
            limits = rng.choice(overrides)
            for face in (lua.limiter.overrides, twin.overrides):
                done = face.delete(key) if limits is None else face.set(key, limits)
                if done is not None:
                    await done
        else:
            got = await getattr(lua, op)(key, cost)
            want = getattr(twin, op)(key, cost)
            at = f"step {checked} at {clock.ms}: {op}({key!r}, {cost})"
            assert got == want, f"{at}: {got!r} {got.details} != {want!r} {want.details}"
            assert got.details == want.details
            checked += 1
        if server is not None:  # every TTL this step wrote is the twin's (real ms passed)
            for state_key in state_keys:
                ttl = twin_ttl(twin_store, state_key, clock.ms)
                if ttl != before[state_key]:
                    pttl = await server.pttl(state_key)
                    assert ttl - 2000 <= pttl <= ttl + MARGIN_MS, (state_key, pttl, ttl, clock.ms)
    if server is not None:
        server.close()
    return checked


DIFF_POLICIES = [
    [rl.FixedWindow(5, 10)],
    [rl.SlidingWindow(7, 3)],
    [rl.TokenBucket(3, 1, burst=4)],
    [rl.SlidingWindow(10, 60), rl.TokenBucket(2, 1, burst=5)],
    [rl.FixedWindow(4, 2), rl.SlidingWindow(9, 7)],
    # large quotas, counted in ticks of 10 ms and 10 s (see DESIGN.md, "Large quotas")
    [rl.SlidingWindow(100_000_000, 86400), rl.TokenBucket(5_000_000, 30 * 86400)],
    [rl.TokenBucket(999_999_999, 365 * 86400), rl.FixedWindow(5, 10)],
]


@pytest.mark.parametrize("policy_list", DIFF_POLICIES, ids=lambda ps: "+".join(p.id for p in ps))
async def test_lua_and_python_twin_agree(script_lane: Lane, policy_list: list[rl.Policy]) -> None:
    checked = 0
    for seed in range(3):
        checked += await _compare(script_lane, policy_list, seed, 400)
    assert checked > 1000


#: Overrides for the differential test: the same shapes with other numbers (state kept), other
#: periods and algorithms (fresh state), limits below the costs drawn (never holdable), none.
#: Buckets that fill far slower (burst 30 at 1 a second) and far faster (a boost: 50 a second)
#: than the limiters' own: state keys live until full under both (tests/test_override_ttl.py),
#: and every TTL written is compared with the twin's (see _compare).
DIFF_OVERRIDES: list[list[rl.Policy] | None] = [
    [rl.FixedWindow(2, 10)],
    [rl.TokenBucket(1, 1, burst=30), rl.FixedWindow(50, 2)],
    [rl.TokenBucket(50, 1, burst=3), rl.SlidingWindow(40, 60)],
    [rl.FixedWindow(50, 10), rl.SlidingWindow(1, 3)],
    [rl.SlidingWindow(3, 3), rl.TokenBucket(1, 1, burst=2)],
    [rl.TokenBucket(9, 1, burst=20), rl.SlidingWindow(40, 60)],
    [rl.SlidingWindow(100_000_000, 86400)],
    None,
]


@pytest.mark.parametrize(
    "policy_list", DIFF_POLICIES[:5], ids=lambda ps: "+".join(p.id for p in ps)
)
async def test_lua_and_python_twin_agree_with_overrides(
    script_lane: Lane, policy_list: list[rl.Policy]
) -> None:
    checked = 0
    for seed in range(3):
        checked += await _compare(script_lane, policy_list, seed, 400, DIFF_OVERRIDES)
    assert checked > 1000
