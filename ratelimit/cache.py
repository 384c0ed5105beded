"""Bounded caches: the one helper every in-process cache stores through (:func:`remember`), and
the local cache of denied keys, which answers a flood from one abuser without a store call."""

from __future__ import annotations

from itertools import islice
from typing import TypeVar

from ratelimit.decision import Decision
from ratelimit.policies import Policy

__all__ = ["DeniedCache", "remember"]

K = TypeVar("K")
V = TypeVar("V")


def remember(cache: dict[K, V], key: K, value: V, size: int) -> V:
    """Store ``value`` under ``key`` in ``cache``, a plain dict kept to at most ``size``
    entries: storing a key makes it the most recent, and storing into a full cache first drops
    the least recently stored sixteenth. Returns ``value``.

    Every bounded cache of the library stores through here, so there is one eviction rule.
    Reads stay plain dict reads (``cache.get``), as cheap as a dict's; dropping a batch keeps a
    flood of new keys at a constant cost per store. Never raises: under threads each step is
    one atomic dict operation, and a race at worst drops a few entries early.
    """
    cache.pop(key, None)  # stored again: moves to the end
    if len(cache) >= size:
        try:
            oldest = list(islice(cache, size // 16 + 1))
        except RuntimeError:  # changed by another thread meanwhile: drop nothing now
            oldest = []
        for old in oldest:
            cache.pop(old, None)
    cache[key] = value
    return value


# One policy's part of a cached denial: allowed, limit, remaining, reset_after and retry_after
# in whole milliseconds, policy.
_Part = tuple[bool, int, int, int, int, Policy]


class DeniedCache:
    """Remembers recent denials, each until its ``retry_after``, the least recently stored first
    out (see :func:`remember`).

    It answers only what the store would answer at that moment: a denial of cost ``c`` at
    ``t`` stays true until ``t + retry_after`` (other hits only push it later), so while it
    holds, a check of the *same* cost is answered from here, with ``reason="cached"`` and
    every ``retry_after`` and ``reset_after`` counted down in whole milliseconds, exactly
    as the store would count them. A different cost is asked of the store (a larger one is
    denied too, but its ``retry_after`` is not known here). An allowed check of a positive
    cost on the key forgets its entry: what it charged makes the cached ``retry_after`` too
    short. A ``reset`` of the key can also end a denial early; the limiter's own ``reset``
    clears the entry, a reset through another process is seen once the entry expires.

    Times are whole milliseconds on the limiter's local clock, taken before the store call
    (so a cached denial ends no later than the store's). Not thread-safe by itself: the GIL
    keeps each dict call atomic and a race only costs one extra store call.
    """

    __slots__ = ("_entries", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        # key -> (until_ms, cost, at_ms, reset_ms, decision, per-policy parts)
        self._entries: dict[str, tuple[int, int, int, int, Decision, tuple[_Part, ...]]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str, cost: int, now_ms: int) -> Decision | None:
        """The cached denial of ``key`` for ``cost`` at ``now_ms``, or None."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        until, denied_cost, at, reset, decision, parts = entry
        if now_ms >= until:
            self._entries.pop(key, None)
            return None
        if cost != denied_cost:
            return None
        elapsed = now_ms - at
        details: tuple[Decision, ...] | None = None
        if parts:
            details = tuple(
                Decision(
                    allowed,
                    limit,
                    remaining,
                    (reset - elapsed if reset > elapsed else 0) / 1000,
                    0.0 if allowed else max(retry - elapsed, 0) / 1000,
                    policy,
                    (),
                    "cached",
                )
                for allowed, limit, remaining, reset, retry, policy in parts
            )
        return Decision(
            False,
            decision.limit,
            decision.remaining,
            (reset - elapsed if reset > elapsed else 0) / 1000,
            (until - now_ms) / 1000,
            decision.policy,
            details,
            "cached",
        )

    def put(self, key: str, cost: int, decision: Decision, now_ms: int) -> None:
        """Remember a denial of ``cost`` decided by the store for a call started at
        ``now_ms``."""
        parts: tuple[_Part, ...] = ()
        details = decision.details
        if len(details) > 1:
            parts = tuple(
                (d.allowed, d.limit, d.remaining, _ms(d.reset_after), _ms(d.retry_after), d.policy)
                for d in details
            )
        until = now_ms + _ms(decision.retry_after)
        entry = (until, cost, now_ms, _ms(decision.reset_after), decision, parts)
        remember(self._entries, key, entry, self.size)

    def allowed(self, key: str, cost: int) -> None:
        """The store allowed ``cost`` for ``key``: forget its denial unless nothing was
        charged (``cost=0``)."""
        if cost:
            self._entries.pop(key, None)

    def discard(self, key: str) -> None:
        """Forget ``key`` (after a reset)."""
        self._entries.pop(key, None)


def _ms(seconds: float) -> int:
    """Seconds that came from the store's whole milliseconds, as those milliseconds."""
    return round(seconds * 1000)
