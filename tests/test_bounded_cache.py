"""The one bounded cache behind every in-process cache: at most ``size`` entries, the least
recently stored out first, reads as cheap as a dict's."""

from __future__ import annotations

import copy
import pickle
import threading

import pytest

import ratelimit as rl
from ratelimit import keys
from ratelimit.cache import BoundedCache
from ratelimit.headers import Renderer


def test_storing_past_the_size_drops_the_least_recently_stored() -> None:
    cache: BoundedCache[str, int] = BoundedCache(3)
    for name in "abc":
        cache.put(name, ord(name))
    cache.get("a")  # a read does not refresh
    assert cache.put("b", 2) == 2  # storing again does
    cache.put("d", 4)
    assert list(cache) == ["c", "b", "d"]
    assert cache["b"] == 2
    assert len(cache) == 3


def test_a_copy_starts_empty_with_the_same_size() -> None:
    cache: BoundedCache[str, int] = BoundedCache(2)
    cache.put("a", 1)
    for again in (copy.deepcopy(cache), pickle.loads(pickle.dumps(cache))):
        assert isinstance(again, BoundedCache)
        assert (again.size, len(again)) == (2, 0)


def test_a_size_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="size=0"):
        BoundedCache(0)


def test_threads_storing_at_once_never_raise_and_stay_bounded() -> None:
    cache: BoundedCache[int, int] = BoundedCache(8)

    def store(base: int) -> None:
        for i in range(5_000):
            cache.put(base + i % 50, i)

    threads = [threading.Thread(target=store, args=(n * 1000,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert 1 <= len(cache) <= 8


def test_every_cache_of_the_library_stays_bounded_under_a_flood() -> None:
    """A flood of distinct identifiers, addresses and policies stays within each cache's size;
    the entry stored last is still there."""
    limiter = rl.Limiter("5/second", clock=lambda: 1.0, deny_cache=4)
    ip = keys.client_ip()
    renderer = Renderer("ietf")
    for i in range(10_000):
        limiter.keys(f"user:{i}")
        ip._address(f"10.0.{i // 250}.{i % 250}")
    for i in range(5_000):
        renderer._entry(rl.FixedWindow(i + 1, 60))
    for i in range(20):
        limiter.hit("flood", cost=5)
        limiter.hit(f"flood{i}", cost=5)
        limiter.hit(f"flood{i}", cost=1)
    caches = [limiter._keys, ip._cache, renderer._entries, limiter._denied._entries]  # type: ignore[union-attr]
    assert all(isinstance(c, BoundedCache) and 0 < len(c) <= c.size for c in caches)
    assert "user:9999" in limiter._keys
    assert "flood19" in limiter._denied._entries  # type: ignore[union-attr]
