"""The local cache of denied keys: answers a flood from one abuser without a store call."""

from __future__ import annotations

from collections import OrderedDict

from ratelimit.decision import Decision

__all__ = ["DeniedCache"]


class DeniedCache:
    """Remembers recent denials, each until its ``retry_after``, least recently used first out.

    A denial of cost ``c`` at ``t`` stays true until ``t + retry_after`` whatever else happens
    (other hits only push it later), and so does the denial of any larger cost: while it holds,
    the limiter answers from here, with ``reason="cached"`` and ``retry_after`` counted down,
    without calling the store. The one thing that can end a denial early is a ``reset`` of the
    key; the limiter's own ``reset`` clears the entry, a reset through another process is seen
    once the entry expires. Not thread-safe by itself: the GIL keeps each dict call atomic and a
    race only costs one extra store call. Times are seconds on the limiter's local clock.
    """

    __slots__ = ("_entries", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[str, tuple[float, int, float, Decision]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str, cost: int, now: float) -> Decision | None:
        """The cached denial of ``key`` for ``cost`` at ``now``, or None."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        until, denied_cost, at, decision = entry
        if now >= until:
            self._entries.pop(key, None)
            return None
        if cost < denied_cost:
            return None
        elapsed = now - at
        return Decision(
            False,
            decision.limit,
            decision.remaining,
            max(decision.reset_after - elapsed, 0.0),
            until - now,
            decision.policy,
            decision.details,
            "cached",
        )

    def put(self, key: str, cost: int, decision: Decision, now: float) -> None:
        """Remember a denial decided by the store at ``now``."""
        entries = self._entries
        entries[key] = (now + decision.retry_after, cost, now, decision)
        entries.move_to_end(key)
        while len(entries) > self.size:
            entries.popitem(last=False)

    def discard(self, key: str) -> None:
        """Forget ``key`` (after a reset, or when the store allowed it)."""
        self._entries.pop(key, None)
