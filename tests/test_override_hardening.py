"""Overrides this version cannot read, or that a store could not keep (issue 11, review).

- An override value this version cannot read (a hand-written one, or one written by another
  version during a rolling deploy) makes that identifier's check a store error decided by
  ``on_error``, never an outage: the store answered, so the breaker stays closed and every
  other identifier is checked as usual. On every lane that runs the Lua, by FCALL and by
  EVALSHA, for hit, peek and acquire.
- ``overrides.set`` refuses, writing nothing, what a store could not keep: more policies than a
  MemoryStore's ``max_keys`` holds for one identifier, a ttl that is not finite or that is
  beyond :data:`ratelimit.overrides.MAX_TTL_MS`.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import pytest

import ratelimit as rl
from ratelimit.overrides import MAX_TTL_MS
from ratelimit.stores import base
from tests.conftest import Clock, Lane

# Override texts this version cannot read: an algorithm code it does not know, a limit of 0, a
# number that is not one, a fraction, a policy cut short (the Lua answers {-1} to all of these),
# and a unit the policy does not count in (the Lua runs and charges it, Python refuses it).
UNREADABLE = ["g 10 1000 0 1", "f 0 1000 0 1", "f x 1000 0 1", "f 10 1000.5 0 1",
              "f 10 1000", "f 5 1000 0 7"]  # fmt: skip


async def _maybe(result: Any) -> Any:
    return await result if hasattr(result, "__await__") else result


async def _write(lane: Lane, key: str, text: str) -> None:
    """Write ``text`` as is at ``key``, as another version (or a hand) would."""
    await _maybe(lane.store._plain(["SET", key, text]))


def _breakers(store: Any) -> list[str]:
    """The states of the store's breaker and of its per-node ones (a cluster's)."""
    return [store.breaker.state, *(b.state for b in getattr(store, "breakers", {}).values())]


@pytest.mark.parametrize("functions", [True, False], ids=["fcall", "evalsha"])
@pytest.mark.parametrize("text", UNREADABLE)
async def test_an_unreadable_override_is_a_store_error_of_its_identifier_not_an_outage(
    script_lane: Lane,
    clock: Clock,
    text: str,
    functions: bool,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(base, "_LOGGED", {})  # logged once per process: forget other tests'
    lane = script_lane
    # a cluster store never calls functions (see RedisStore): its scripts only
    lane.store.functions = functions and not lane.name.startswith("cluster")
    events: list[rl.Event] = []
    limiter = lane.limiter("10/second", clock=clock, on_event=events.append)
    assert (await limiter.hit("warm")).reason is None  # the script is loaded
    await _write(lane, limiter.limiter._override_key("u"), text)
    with caplog.at_level(logging.WARNING, logger="ratelimit"):
        for _ in range(3):
            d = await limiter.hit("u")
            assert d.allowed and d.reason == "store_error", d
            assert (await limiter.peek("u")).reason == "store_error"
            assert _breakers(lane.store) == ["closed"] * len(_breakers(lane.store))
            other = await limiter.hit("v")  # every other identifier as usual
            assert other.reason is None and other.limit == 10
    errors = [e for e in events if e.kind == "store_error"]
    assert len(errors) == 6 and all(e.error is not None and not e.error.outage for e in errors)
    assert not [e for e in events if e.kind == "breaker_open"]
    # logged once for that override, not once per check; never as an outage
    logged = [r.getMessage() for r in caplog.records if r.name == "ratelimit"]
    assert len(logged) == 1 and "override" in logged[0], logged

    deny = lane.limiter("10/second", clock=clock, on_error="deny")
    d = await deny.hit("u")
    assert not d.allowed and d.reason == "store_error" and d.retry_after > 0
    strict = lane.limiter("10/second", clock=clock, on_error="raise")
    with pytest.raises(rl.StoreError, match="override") as raised:
        await strict.hit("u")
    assert raised.value.outage is False
    assert (await strict.hit("v")).reason is None
    assert _breakers(lane.store) == ["closed"] * len(_breakers(lane.store))

    # the identifier's override set again by this version: checked as usual at once
    await _maybe(limiter.limiter.overrides.set("u", "3/second"))
    d = await limiter.hit("u")
    assert d.reason is None and d.limit == 3


@pytest.mark.parametrize("functions", [True, False], ids=["fcall", "evalsha"])
@pytest.mark.parametrize("text", [*UNREADABLE, "c 0 1000 0 1"])
async def test_an_unreadable_override_makes_acquire_a_lease_that_holds_nothing(
    script_lane: Lane, clock: Clock, text: str, functions: bool
) -> None:
    lane = script_lane
    lane.store.functions = functions and not lane.name.startswith("cluster")
    limiter = lane.limiter([rl.Concurrency(2, 60), rl.FixedWindow(10, 60)], clock=clock)
    inner = limiter.limiter
    await _write(lane, inner._override_key("u"), text)
    lease = await _maybe(inner.acquire("u"))
    assert lease.allowed and lease.decision.reason == "store_error", lease.decision
    await _maybe(lease.settle(0))  # nothing held: nothing to settle or release, no error
    await _maybe(lease.release())
    assert _breakers(lane.store) == ["closed"] * len(_breakers(lane.store))
    other = await _maybe(inner.acquire("v"))
    assert other.allowed and other.decision.reason is None
    await _maybe(other.release())
    strict = lane.limiter([rl.Concurrency(2, 60)], clock=clock, on_error="raise")
    with pytest.raises(rl.StoreError, match="override"):
        await _maybe(strict.limiter.acquire("u"))


@pytest.mark.parametrize("face", ["sync", "async"])
async def test_an_override_of_more_policies_than_a_memory_store_holds_is_refused(
    face: str, clock: Clock
) -> None:
    """Each policy's key would evict another's: nothing would be limited."""
    store = rl.MemoryStore(max_keys=2)
    cls: Any = rl.Limiter if face == "sync" else rl.AsyncLimiter
    limiter = cls("5/minute", store=store, clock=clock)
    with pytest.raises(rl.ConfigurationError, match=r"max_keys=2.*3 keys"):
        await _maybe(limiter.overrides.set("u", "5/minute; 100/hour; 1000/day"))
    assert await _maybe(limiter.overrides.get("u")) is None
    await _maybe(limiter.overrides.set("u", "5/minute; 100/hour"))  # as many as it holds
    for _ in range(5):
        assert (await _maybe(limiter.hit("u"))).allowed
    assert not (await _maybe(limiter.hit("u"))).allowed


async def test_a_ttl_no_store_could_keep_is_refused_on_every_store(
    lane: Lane, clock: Clock
) -> None:
    """One rule everywhere: a ttl must be finite and at most MAX_TTL_MS milliseconds, which
    every store keeps (Redis's SET PX, Upstash's JSON) exactly."""
    limiter = lane.limiter("10/minute", clock=clock)
    bad: list[tuple[Any, str]] = [
        (float("inf"), "ttl must be a positive"),
        (float("nan"), "ttl must be a positive"),
        (1e300, "at most"),
        (1e16, "at most"),
        (MAX_TTL_MS // 1000 + 1, "at most"),  # whole seconds: no float rounding
        (timedelta.max, "at most"),
        (False, "ttl must be a positive"),
        (True, "ttl must be a positive"),
    ]
    for ttl, message in bad:
        with pytest.raises(rl.ConfigurationError, match=message):
            await _maybe(limiter.limiter.overrides.set("k", "1/minute", ttl=ttl))
    assert await _maybe(limiter.limiter.overrides.get("k")) is None
    # the longest ttl in whole seconds is kept, by every store
    await _maybe(limiter.limiter.overrides.set("k", "1/minute", ttl=MAX_TTL_MS // 1000))
    assert await _maybe(limiter.limiter.overrides.get("k")) == (rl.SlidingWindow(1, 60),)
    assert (await limiter.hit("k")).limit == 1
