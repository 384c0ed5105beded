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

from datetime import timedelta
from typing import Any

import pytest

import ratelimit as rl
from ratelimit.overrides import MAX_TTL_MS
from tests.conftest import Clock, Lane


async def _maybe(result: Any) -> Any:
    return await result if hasattr(result, "__await__") else result


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
