"""Bounded caches: the one helper every in-process cache uses (:class:`BoundedCache`), and
the local cache of denied keys, which answers a flood from one abuser without a store call."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, TypeVar

from ratelimit.decision import Decision
from ratelimit.policies import Policy

__all__ = ["BoundedCache", "DeniedCache"]

K = TypeVar("K")
V = TypeVar("V")


class BoundedCache(OrderedDict[K, V]):
    """A dict of at most ``size`` entries; storing past that drops the least recently stored.

    Reads are plain dict reads (``get``, ``[]``, ``pop``), so a hit costs what a dict's does;
    only :meth:`put` keeps the bound. Storing a key again makes it the most recent, so an
    entry that keeps being stored is the last to go while a flood of new keys passes through.
    A copy (``copy.deepcopy``, ``pickle``) starts empty with the same ``size``.

    Each call is one atomic dict operation under the GIL: a race between two threads can drop
    one entry too many, never raise, and leaves at most ``size`` entries once both are done.
    Raises ValueError for a ``size`` below 1.
    """

    __slots__ = ("size",)

    def __init__(self, size: int) -> None:
        super().__init__()
        if size < 1:
            raise ValueError(f"a bounded cache holds at least one entry, got size={size!r}")
        #: The most entries held.
        self.size = size

    def put(self, key: K, value: V) -> V:
        """Store ``value`` under ``key`` as the most recent entry, dropping the least recently
        stored while there are more than ``size``; returns ``value``."""
        self.pop(key, None)  # re-inserted at the end, with no KeyError from a racing pop
        self[key] = value
        while len(self) > self.size:
            try:
                self.popitem(last=False)
            except KeyError:  # another thread emptied it first
                break
        return value

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.size,))

    def __repr__(self) -> str:
        return f"BoundedCache(size={self.size}, entries={len(self)})"


# One policy's part of a cached denial: allowed, limit, remaining, reset_after and retry_after
# in whole milliseconds, policy.
_Part = tuple[bool, int, int, int, int, Policy]


class DeniedCache:
    """Remembers recent denials, each until its ``retry_after``, least recently used first out.

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
        self._entries: BoundedCache[str, tuple[int, int, int, int, Decision, tuple[_Part, ...]]] = (
            BoundedCache(size)
        )

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
        self._entries.put(key, (until, cost, now_ms, _ms(decision.reset_after), decision, parts))

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
