"""What a limiter reports to an ``on_event`` listener, for metrics and logs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from ratelimit.policies import Policy

__all__ = ["Event", "EventKind"]

EventKind = Literal["allowed", "denied", "cached", "store_error", "breaker_open", "breaker_closed"]


class Event:
    """One thing a limiter did, with labels of low cardinality only.

    - ``kind``: ``"allowed"``, ``"denied"`` (by the store), ``"cached"`` (denied from the local
      cache of denied keys, no store call), ``"store_error"`` (the store failed or the breaker
      was open; ``on_error`` decided), ``"breaker_open"`` / ``"breaker_closed"`` (an outage of
      the store started / ended).
    - ``prefix``: the limiter's key prefix. ``policy``: the binding policy (None for breaker
      events); ``policy.id`` is a short, stable label.
    - ``error``: the store's error for ``store_error`` and ``breaker_open``.

    The key itself is never part of an event: it would make a metric's label set unbounded
    and leak user identifiers into monitoring.
    """

    __slots__ = ("error", "kind", "policy", "prefix")

    def __init__(
        self,
        kind: EventKind,
        prefix: str,
        policy: Policy | None = None,
        error: BaseException | None = None,
    ) -> None:
        self.kind = kind
        self.prefix = prefix
        self.policy = policy
        self.error = error

    def __repr__(self) -> str:
        return f"Event({self.kind!r}, prefix={self.prefix!r}, policy={self.policy!r})"
