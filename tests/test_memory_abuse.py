"""The memory store under abuse: a flood of distinct keys, keys that are huge, an abuser who
keeps hammering one key while the flood goes by.

What eviction means (also in ``MemoryStore``'s docstring and the README): the store holds at most
``max_keys`` keys (one per identifier and policy). When a new key would exceed that, the least
recently used key is dropped, and with it what that identifier had spent: its next hit starts
again with a full allowance. An identifier that keeps hitting stays recently used and keeps its
state, so a flood of fresh identifiers cannot reset an abuser who is still active; it can only
make the store forget identifiers that went quiet for the whole flood.
"""

from __future__ import annotations

import resource
import time

import pytest

import ratelimit as rl
from tests.support import Clock

MILLION = 1_000_000
MAX_KEYS = 10_000
TIME_BUDGET = 30.0
"""Seconds a million hits may take here: a guard against anything worse than linear (a
scan per hit), not a benchmark. About 12 s on a loaded 2-core CI machine."""
RSS_BUDGET_MB = 64
"""How much the process may grow while a million keys go by a store bounded to 10,000."""


def _rss_mb() -> float:
    """Peak resident set of this process so far, in MB (Linux reports KB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.slow
def test_a_million_distinct_keys_stay_within_max_keys() -> None:
    store = rl.MemoryStore(max_keys=MAX_KEYS)
    limiter = rl.Limiter("5/minute", store=store)
    hit = limiter.hit
    # Warm up to the bound first, so the peak RSS below measures the flood, not the fill.
    for i in range(MAX_KEYS):
        hit(f"warm:{i}")
    rss_before = _rss_mb()
    sizes = []
    start = time.perf_counter()
    for block in range(20):
        base = block * (MILLION // 20)
        for i in range(base, base + MILLION // 20):
            d = hit(f"ip:{i}")
            # Every key is new: its first hit is allowed with a full allowance minus one.
            assert d.remaining == 4 or not d.allowed, d
        sizes.append(len(store))
    took = time.perf_counter() - start
    grew = _rss_mb() - rss_before
    print(
        f"\n[memory] {MILLION:,} distinct keys: {took:.1f}s ({took / MILLION * 1e6:.1f} us/hit), "
        f"store holds {len(store):,} keys, peak RSS grew {grew:.1f} MB"
    )
    assert max(sizes) <= MAX_KEYS, sizes
    assert len(store) == MAX_KEYS
    assert grew < RSS_BUDGET_MB, f"the process grew {grew:.0f} MB under a bounded store"
    assert took < TIME_BUDGET, f"{MILLION:,} hits took {took:.1f}s"


def test_eviction_forgets_the_least_recently_used(clock: Clock) -> None:
    """The documented meaning of eviction, step by step, on an injected clock."""
    store = rl.MemoryStore(max_keys=1_000)
    limiter = rl.Limiter(rl.FixedWindow(3, 60), store=store, clock=clock)
    for _ in range(3):
        assert limiter.hit("quiet").allowed
        assert limiter.hit("abuser").allowed
    assert not limiter.hit("quiet").allowed and not limiter.hit("abuser").allowed
    for i in range(5_000):  # five times the bound, all within the window
        assert limiter.hit(f"flood:{i}").allowed
        if i % 100 == 0:
            clock.advance(1)
            d = limiter.hit("abuser")  # still hammering: stays recently used
            assert not d.allowed and d.reason is None, d
        assert len(store) <= 1_000
    # "quiet" went unused for the whole flood: it was evicted and starts with a full allowance.
    d = limiter.hit("quiet")
    assert d.allowed and d.remaining == 2, d
    # The abuser kept its state: still denied, until its own window ends.
    d = limiter.hit("abuser")
    assert not d.allowed and d.retry_after > 0, d


def test_every_policy_of_an_identifier_counts_against_max_keys(clock: Clock) -> None:
    """``max_keys`` counts store keys, one per identifier and policy; eviction drops single
    keys, so an identifier may lose one policy's state and keep the others'."""
    store = rl.MemoryStore(max_keys=1_000)
    limiter = rl.Limiter("10/second; 100/minute; 1000/day", store=store, clock=clock)
    for i in range(3_000):
        assert limiter.hit(f"user:{i}").allowed
    assert len(store) == 1_000
    for i in range(2_667, 3_000):  # the most recent 333 identifiers are intact
        d = limiter.peek(f"user:{i}")
        assert [p.remaining for p in d.details] == [9, 99, 999], d
    d = limiter.peek("user:2666")  # its two older keys went first: those policies start afresh
    assert [p.remaining for p in d.details] == [10, 100, 999], d


def test_huge_keys_are_stored_short_and_not_retained() -> None:
    """An identifier an attacker controls may be long (a header, a path): the store keeps a
    fixed-size digest of it, and the limiter keeps no copy of the raw text, so memory per
    identifier does not depend on what the attacker sends."""
    import tracemalloc

    store = rl.MemoryStore(max_keys=1_000)
    limiter = rl.Limiter("5/minute", store=store)
    for key in ("x" * 10_000, "{" * 500, "é" * 5_000):
        stored = limiter.keys(key)[0]
        assert len(stored) < 100, stored
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(2_000):
            d = limiter.hit(f"{i:06d}" + "x" * 65_536)
            assert d.allowed and d.remaining == 4
        retained = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(store) == 1_000
    # 2,000 keys of 64 KiB are 131 MB of text; a bounded store of digests holds well under 1 MB
    # of it. Anything near 64 KiB per key means the raw keys are kept somewhere.
    assert retained < 8_000_000, f"{retained / 1e6:.1f} MB retained after 2,000 huge keys"


async def test_async_limiter_shares_the_bound() -> None:
    """The memory store serves AsyncLimiter too, with the same bound."""
    store = rl.MemoryStore(max_keys=500)
    limiter = rl.AsyncLimiter("2/minute", store=store)
    for i in range(5_000):
        assert (await limiter.hit(f"ip:{i}")).allowed
    assert len(store) == 500


@pytest.mark.parametrize("limiter_class", [rl.Limiter, rl.AsyncLimiter])
def test_a_memory_store_too_small_for_one_identifiers_keys_is_refused(
    limiter_class: type[rl.Limiter] | type[rl.AsyncLimiter],
) -> None:
    """Issue 14, item 11: with fewer ``max_keys`` than policies, each policy's write evicted
    another's key, so no hit was ever denied. Such a limiter is refused when it is built."""
    store = rl.MemoryStore(max_keys=1)
    with pytest.raises(rl.ConfigurationError, match=r"max_keys=1\).*2 keys"):
        limiter_class("5/minute; 100/day", store=store)
    with pytest.raises(rl.ConfigurationError, match=r"max_keys=2\).*3 keys"):
        limiter_class("5/second; 5/minute; 100/day", store=rl.MemoryStore(max_keys=2))
    limiter_class("5/minute", store=store)  # one policy fits


def test_a_memory_store_as_large_as_the_policies_keeps_limiting(clock: Clock) -> None:
    """With exactly as many keys as policies, one identifier's keys stay together and the
    limit holds; another identifier evicts them (least recently used) as a whole."""
    store = rl.MemoryStore(max_keys=2)
    limiter = rl.Limiter("5/minute; 100/day", store=store, clock=clock)
    assert [limiter.hit("a").allowed for _ in range(7)] == [True] * 5 + [False] * 2
    assert len(store) == 2
    assert limiter.hit("b").allowed
    d = limiter.peek("b")
    assert [p.remaining for p in d.details] == [4, 99], d
    d = limiter.peek("a")  # forgotten whole, not half
    assert [p.remaining for p in d.details] == [5, 100], d
