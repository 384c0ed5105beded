"""OpenTelemetry metrics for limiters: :class:`Metrics`, an ``on_event`` listener.

Its instruments (meter ``"ratelimit"``): ``ratelimit.checks`` (observable counter, by
``ratelimit.outcome``, ``ratelimit.prefix``, ``ratelimit.policy``, and ``ratelimit.near_limit``
for allowed checks), ``ratelimit.store.duration`` (histogram, seconds, a sample: the calls the
limiter timed) and ``ratelimit.breaker.state`` (observable gauge, 1 during an outage). The key
is never an attribute. This module imports OpenTelemetry when a :class:`Metrics` is built
(``pip install ratelimit-atomic[otel]``). See the Production controls page of the docs.
"""

from __future__ import annotations

import weakref
from collections import deque
from collections.abc import Iterable, Iterator
from itertools import repeat
from operator import length_hint
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ratelimit.breaker import CircuitBreaker
    from ratelimit.decision import Decision
    from ratelimit.events import Event, EventKind, EventParts
    from ratelimit.policies import Policy

    _Count = repeat[None]

__all__ = ["Metrics"]

#: Outcomes of a check, as ``ratelimit.outcome`` values.
OUTCOMES = ("allowed", "denied", "cached", "store_error", "shadow_denied")
#: Store durations a :class:`Metrics` keeps between two collections (the newest).
DURATIONS = 10_000
#: Policies a :class:`Metrics` labels one by one per prefix: the limiter's own, and those of
#: overrides (whose limits may differ for each identifier); the checks of any further policy
#: are counted under the policy label :data:`OTHER`, so series stay bounded however many
#: identifiers have their own limits.
POLICIES = 100
#: The ``ratelimit.policy`` label of the policies beyond :data:`POLICIES` of a prefix.
OTHER = "other"


# A count is an ``itertools.repeat(None, _FULL)``: ``next`` takes one None from it, atomically
# (one C call under the GIL, as ``itertools.count``) and, unlike a count, allocates no int.
_FULL = 2**62


def _count() -> _Count:
    """A new count, at 0."""
    return repeat(None, _FULL)


def _value(counter: _Count) -> int:
    """What ``counter`` has counted, without advancing it."""
    return _FULL - length_hint(counter)


class _Series:
    """The counts of one (prefix, policy): allowed checks far from and near the limit, and the
    other outcomes, each created at its first check. ``threshold``: the most units an allowed
    check may leave and count as near the limit (a fifth of the policy's limit, rounded down:
    ``remaining <= limit // 5`` is ``remaining * 5 <= limit``, without a multiplication)."""

    __slots__ = ("far", "near", "others", "threshold")

    def __init__(self, limit: int) -> None:
        self.far = _count()
        self.near = _count()
        self.others: dict[str, _Count] = {}
        self.threshold = limit // 5


class Metrics:
    """An ``on_event`` listener that reports limiters' checks to OpenTelemetry
    (``rl.Limiter(..., on_event=Metrics())``).

    A check costs two dict lookups and one count, and no OpenTelemetry call: counts and store
    durations (at most the :data:`DURATIONS` newest between two collections) are kept here and
    handed to the SDK when it collects. Thread-safe without a lock; never blocks. One Metrics
    may serve many limiters: share it rather than build one per limiter, since each registers
    its own instruments.

    :param meter_provider: where the instruments live; default OpenTelemetry's global
        provider, read when the Metrics is built.
    :raises ImportError: without ``opentelemetry-api``.
    """

    __slots__ = ("_breakers", "_durations", "_histogram", "_series", "_watched")

    def __init__(self, meter_provider: Any = None) -> None:
        from opentelemetry import metrics
        from opentelemetry.metrics import CallbackOptions, Observation

        import ratelimit

        provider = metrics.get_meter_provider() if meter_provider is None else meter_provider
        meter = provider.get_meter("ratelimit", ratelimit.__version__)
        # prefix -> binding policy's id -> its counts
        self._series: dict[str, dict[str, _Series]] = {}
        # (prefix, id of a breaker) -> that breaker, weakly: the breakers whose events were
        # heard, read when the SDK collects (a prefix is in an outage while any is not closed)
        self._watched: dict[tuple[str, int], weakref.ref[CircuitBreaker]] = {}
        # prefix -> 1/0: the last breaker event that named no breaker (an Event built by hand)
        self._breakers: dict[str, int] = {}
        # (prefix, seconds) of the store calls timed since the last collection
        self._durations: deque[tuple[str, float]] = deque(maxlen=DURATIONS)

        def checks(options: CallbackOptions) -> Iterator[Observation]:
            self._record_durations()
            for total, attributes in self._observations():
                yield Observation(total, attributes)

        def breakers(options: CallbackOptions) -> Iterable[Observation]:
            self._record_durations()
            return [
                Observation(state, {"ratelimit.prefix": prefix})
                for prefix, state in self._breaker_states().items()
            ]

        meter.create_observable_counter(
            "ratelimit.checks",
            callbacks=[checks],
            unit="{check}",
            description="Rate-limit checks by outcome: allowed, denied, cached (denied without "
            "a store call), store_error (decided by on_error), shadow_denied (a shadow limiter "
            "would have denied).",
        )
        self._histogram = meter.create_histogram(
            "ratelimit.store.duration",
            unit="s",
            description="Duration of rate-limit store calls (a sample: the calls limiters timed).",
        )
        meter.create_observable_gauge(
            "ratelimit.breaker.state",
            callbacks=[breakers],
            description="1 while the limiter's store is in an outage (circuit breaker open), "
            "else 0.",
        )

    def __call__(self, event: Event) -> None:
        """Count ``event``. Never raises. A limiter given this Metrics calls :meth:`_count`
        with the event's parts instead, and builds no Event (unless a subclass defines its own
        ``__call__``, which then sees every event); breaker events come here."""
        breaker = event.breaker
        if breaker is not None:
            self._watch(event.prefix, breaker)
            return
        self._count(event.kind, event.prefix, event.policy, event.error, event.decision,
                    event.duration)  # fmt: skip

    def _watch(self, prefix: str, breaker: CircuitBreaker) -> None:
        """Keeps (weakly) ``breaker``, whose outage started or ended, for the gauge of
        ``prefix``: its state is read when the SDK collects, so that one store's recovery
        never hides another's outage under the same prefix (a cluster's masters, two stores)."""
        key = (prefix, id(breaker))
        known = self._watched.get(key)
        if known is None or known() is not breaker:  # new, or an id reused after a collection
            self._watched[key] = weakref.ref(breaker)

    def _breaker_states(self) -> dict[str, int]:
        """``ratelimit.breaker.state`` by prefix: 1 while any breaker heard of under it is not
        closed; for a prefix with none, the last breaker event that named no breaker."""
        states = dict(self._breakers)
        watched: dict[str, int] = {}
        for (prefix, ident), ref in list(self._watched.items()):
            breaker = ref()
            if breaker is None:  # collected with its store: forget it (unless just replaced)
                if self._watched.get((prefix, ident)) is ref:
                    self._watched.pop((prefix, ident), None)
                continue
            if breaker.state != "closed":
                watched[prefix] = 1
            else:
                watched.setdefault(prefix, 0)
        states.update(watched)
        return states

    def _ratelimit_event_parts(self) -> EventParts | None:
        """For a limiter: :meth:`_count`, or None when a subclass's own ``__call__`` must be
        given Events (see ``ratelimit.events.PARTS``)."""
        return self._count if type(self).__call__ is Metrics.__call__ else None

    def _count(self, kind: EventKind, prefix: str, policy: Policy | None,
               error: BaseException | None, decision: Decision | None,
               duration: float | None) -> None:  # fmt: skip
        """Count one event from its parts, in :class:`~ratelimit.events.Event`'s order."""
        # The hot path: two dict lookups on text (prefix, then policy id), one comparison and
        # one atomic count per check, no allocation. A breaker event, an event without a
        # policy and the first check of a series or outcome take the slow path. Nothing after
        # the count may raise (the check would be counted twice).
        try:
            series = self._series[prefix][policy.id]  # type: ignore[union-attr]
            if kind == "allowed":
                next(
                    series.near
                    if decision.remaining <= series.threshold  # type: ignore[union-attr]
                    else series.far
                )
            else:
                next(series.others[kind])
        except (KeyError, AttributeError):
            self._first(kind, prefix, policy, decision)
        if duration is not None:
            self._durations.append((prefix, duration))

    def _record_durations(self) -> None:
        """Records the waiting store durations into the histogram (when the SDK collects, from
        the callbacks of the observable instruments, before it reads the histogram). Each is
        taken once, even by two collections at the same time."""
        durations = self._durations
        histogram = self._histogram
        attributes: dict[str, dict[str, str]] = {}
        while durations:
            try:
                prefix, seconds = durations.popleft()
            except IndexError:  # another collection took the last one
                break
            labels = attributes.get(prefix)
            if labels is None:
                labels = attributes[prefix] = {"ratelimit.prefix": prefix}
            histogram.record(seconds, labels)

    def _observations(self) -> Iterator[tuple[int, dict[str, str | bool]]]:
        """``ratelimit.checks``: (count, attributes) of every series counted so far."""
        for prefix, policies in list(self._series.items()):
            for policy, series in list(policies.items()):
                counts: list[tuple[str, bool | None, _Count]] = [
                    ("allowed", False, series.far),
                    ("allowed", True, series.near),
                    *((outcome, None, c) for outcome, c in list(series.others.items())),
                ]
                for outcome, near, counter in counts:
                    total = _value(counter)
                    if not total:  # never counted (a count never goes back to 0)
                        continue
                    attributes: dict[str, str | bool] = {
                        "ratelimit.outcome": outcome,
                        "ratelimit.prefix": prefix,
                        "ratelimit.policy": policy,
                    }
                    if near is not None:
                        attributes["ratelimit.near_limit"] = near
                    yield total, attributes

    def _first(self, kind: str, prefix: str, policy: Policy | None,
               decision: Decision | None) -> None:  # fmt: skip
        """Counts an event the hot path could not: the first of its series or outcome, one
        without a policy or decision, one of a policy beyond :data:`POLICIES` (every time),
        or a breaker change (which counts nothing). Every step is one ``setdefault``, atomic,
        so threads racing here count on the same counters (a race may label one policy more
        than :data:`POLICIES`, never a series per identifier)."""
        if kind not in OUTCOMES:
            self._breakers[prefix] = 1 if kind == "breaker_open" else 0
            return
        policies = self._series.get(prefix)
        if policies is None:
            policies = self._series.setdefault(prefix, {})
        name = "" if policy is None else policy.id
        series = policies.get(name)
        if series is None:
            if len(policies) >= POLICIES:  # never labelled: counted as "other", on this path
                name = OTHER
                series = policies.get(name)
            if series is None:
                series = policies.setdefault(name, _Series(0 if policy is None else policy.limit))
        if kind == "allowed":
            # the policy's own threshold (the "other" series holds several policies)
            near = (decision is not None and policy is not None
                    and decision.remaining <= policy.limit // 5)  # fmt: skip
            next(series.near if near else series.far)
        else:
            next(series.others.setdefault(kind, _count()))

    def __repr__(self) -> str:
        return f"Metrics(series={sum(1 for _ in self._observations())})"
