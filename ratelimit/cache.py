"""The local cache of denied keys: answers a flood from one abuser without a store call."""

from __future__ import annotations

from collections import OrderedDict

from ratelimit.decision import Decision
from ratelimit.policies import Policy

__all__ = ["DeniedCache"]

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
        self._entries: OrderedDict[str, tuple[int, int, int, int, Decision, tuple[_Part, ...]]] = (
            OrderedDict()
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
        entries = self._entries
        until = now_ms + _ms(decision.retry_after)
        entries[key] = (until, cost, now_ms, _ms(decision.reset_after), decision, parts)
        entries.move_to_end(key)
        while len(entries) > self.size:
            entries.popitem(last=False)

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
