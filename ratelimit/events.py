"""What a limiter reports to an ``on_event`` listener, for metrics and logs."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Literal, TypeAlias

if TYPE_CHECKING:
    from ratelimit.breaker import CircuitBreaker
    from ratelimit.decision import Decision
    from ratelimit.policies import Policy

__all__ = ["Event", "EventKind"]

EventKind = Literal[
    "allowed",
    "denied",
    "cached",
    "store_error",
    "shadow_denied",
    "breaker_open",
    "breaker_closed",
]


class Event:
    """One thing a limiter did, given to its ``on_event`` listener, with labels of low
    cardinality only: the key is never part of an event (it would make a metric's label set
    unbounded and leak user identifiers into monitoring).

    Built by the limiter; each argument is kept as the attribute of the same name.

    :param kind: ``"allowed"``; ``"denied"`` (by the store); ``"cached"`` (denied from the
        local cache of denied keys, no store call); ``"store_error"`` (the store failed or its
        breaker was open, and ``on_error`` decided); ``"shadow_denied"`` (a limiter with
        ``shadow=True`` would have denied, from the store or its cache, and allowed);
        ``"breaker_open"`` / ``"breaker_closed"`` (an outage of the store started / ended).
    :param prefix: the limiter's key prefix.
    :param policy: the binding policy (``policy.id`` is a short, stable label); None for
        breaker events.
    :param error: the store's error, for ``store_error`` and ``breaker_open``.
    :param decision: the :class:`~ratelimit.Decision` the check returned; None for breaker
        events and for ``store_error``.
    :param duration: seconds the store call took (``time.perf_counter``, a failed call
        included), for the calls the limiter timed: every one at low traffic, one each
        ``ratelimit.limiter.TIME_EVERY`` (10 ms) under load. None for the others and when no
        store call was made (a cached denial, an open breaker, breaker events).
    :param breaker: the :class:`~ratelimit.CircuitBreaker` whose outage started or ended, for
        breaker events (on a cluster, the breaker of one master); None for the others.
    """

    __slots__ = ("breaker", "decision", "duration", "error", "kind", "policy", "prefix")

    def __init__(
        self,
        kind: EventKind,
        prefix: str,
        policy: Policy | None = None,
        error: BaseException | None = None,
        decision: Decision | None = None,
        duration: float | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self.kind = kind
        self.prefix = prefix
        self.policy = policy
        self.error = error
        self.decision = decision
        self.duration = duration
        self.breaker = breaker

    def __repr__(self) -> str:
        return f"Event({self.kind!r}, prefix={self.prefix!r}, policy={self.policy!r})"


#: A listener's count of an event from its parts, in :class:`Event`'s order (kind, prefix,
#: policy, error, decision, duration), with no Event built. Internal: a listener object
#: offers one from a method named :data:`PARTS` (``ratelimit.otel.Metrics`` does), and a
#: limiter then calls it instead of the listener, saving an Event per check. Breaker events,
#: which carry their breaker, still go to the listener as Events.
EventParts: TypeAlias = Callable[
    ["EventKind", str, "Policy | None", "BaseException | None", "Decision | None",
     "float | None"],
    object,
]  # fmt: skip
#: The method of a listener object that returns its :data:`EventParts` callable, or None when
#: the listener must be given Events (a subclass with its own ``__call__``).
PARTS = "_ratelimit_event_parts"
