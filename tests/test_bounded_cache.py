"""The one helper every bounded cache stores through (``cache.remember``): at most ``size``
entries, the least recently stored out first, reads that stay plain dict reads."""

from __future__ import annotations

import threading

import ratelimit as rl
from ratelimit import keys
from ratelimit.cache import remember
from ratelimit.headers import Renderer


def test_storing_into_a_full_cache_drops_the_least_recently_stored() -> None:
    cache: dict[str, int] = {}
    for name in "abc":
        remember(cache, name, ord(name), 3)
    cache.get("a")  # a read does not refresh
    assert remember(cache, "b", 2, 3) == 2  # storing again does
    remember(cache, "d", 4, 3)
    assert list(cache) == ["c", "b", "d"]


def test_a_flood_drops_the_oldest_sixteenth_at_a_time_and_keeps_the_newest() -> None:
    cache: dict[int, int] = {}
    for i in range(10_000):
        remember(cache, i, i, 160)
        assert len(cache) <= 160
    assert len(cache) > 140
    assert list(cache)[-1] == 9_999
    assert list(cache) == sorted(cache)  # oldest first, in the order stored


def test_threads_storing_at_once_never_raise_and_stay_bounded() -> None:
    cache: dict[int, int] = {}
    errors: list[BaseException] = []

    def store(base: int) -> None:
        try:
            for i in range(20_000):
                remember(cache, base + i % 300, i, 64)
        except BaseException as error:  # pragma: no cover - the failure this test looks for
            errors.append(error)

    threads = [threading.Thread(target=store, args=(n * 1000,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert 1 <= len(cache) <= 64 + len(threads)


def test_every_cache_of_the_library_stays_bounded_under_a_flood() -> None:
    """A flood of distinct identifiers, addresses and policies stays within each cache's size,
    and the entry stored last is still there (the old rules cleared everything or stopped
    storing)."""
    limiter = rl.Limiter("5/second", clock=lambda: 1.0, deny_cache=4)
    ip = keys.client_ip()
    renderer = Renderer("ietf")
    for i in range(10_000):
        limiter.keys(f"user:{i}")
        ip._address(f"10.0.{i // 250}.{i % 250}")
    for i in range(5_000):
        renderer._entry(rl.FixedWindow(i + 1, 60))
    for i in range(20):
        limiter.hit(f"flood{i}", cost=5)
        limiter.hit(f"flood{i}", cost=1)
    denied = limiter._denied._entries  # type: ignore[union-attr]
    assert 0 < len(limiter._keys) <= 4096 and "user:9999" in limiter._keys
    assert 0 < len(ip._cache) <= 4096 and "10.0.39.249" in ip._cache
    assert 0 < len(renderer._entries) <= 4096 and rl.FixedWindow(5000, 60).id in renderer._entries
    assert 0 < len(denied) <= 4 and "flood19" in denied
