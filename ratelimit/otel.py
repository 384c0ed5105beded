"""OpenTelemetry metrics for limiters: :class:`Metrics`, an ``on_event`` listener.

::

    from ratelimit.otel import Metrics

    metrics = Metrics()      # the global MeterProvider, or Metrics(meter_provider=provider)
    limiter = rl.Limiter("100/minute", store=store, prefix="api", on_event=metrics)

Instruments (meter ``"ratelimit"``):

- ``ratelimit.checks`` (observable counter, ``{check}``): checks by ``ratelimit.outcome``
  (``allowed``, ``denied``, ``cached``, ``store_error``, ``shadow_denied``), with
  ``ratelimit.prefix`` and ``ratelimit.policy`` (the binding policy's id); an allowed check
  also carries ``ratelimit.near_limit``: True when it left the binding policy with at most a
  fifth of its limit (80% used, Envoy's ``near_limit``).
- ``ratelimit.store.duration`` (histogram, seconds): how long store calls took, failed ones
  included, with ``ratelimit.prefix``: the calls the limiter timed (``Event.duration``: every
  call at low traffic, about 100 a second per limiter under load), so its count is a sample.
- ``ratelimit.breaker.state`` (observable gauge): 1 while the store of the limiters with that
  ``ratelimit.prefix`` is in an outage (its circuit breaker open), 0 once it answers again.

The identifier (user id, IP address) is never an attribute: an :class:`~ratelimit.events.Event`
does not carry it, so a million clients make as many series as one. This module imports
OpenTelemetry when a :class:`Metrics` is built, not before (``pip install ratelimit-atomic[otel]``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import count
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ratelimit.events import Event

__all__ = ["Metrics"]

#: Outcomes of a check, as ``ratelimit.outcome`` values.
OUTCOMES = ("allowed", "denied", "cached", "store_error", "shadow_denied")

# (outcome, prefix, binding policy's id, near limit): one counter per combination seen.
_Series = tuple[str, str, str, bool]


def _value(counter: count[int]) -> int:
    """What ``counter`` has counted (its next value) without advancing it."""
    return int(repr(counter)[6:-1])  # "count(42)"


class Metrics:
    """An ``on_event`` listener that reports limiters' checks to OpenTelemetry.

    ``meter_provider``: where the instruments live (default: OpenTelemetry's global provider,
    read when the Metrics is built).

    A check costs a few dict operations and no OpenTelemetry call: counts are kept here and
    read by the SDK when it collects. Thread-safe without a lock (each count is an
    ``itertools.count``, advanced atomically). One Metrics may serve many limiters; share it
    rather than building one per limiter, since each registers its own instruments. Never
    raises into the limiter. Raises ImportError without ``opentelemetry-api``.
    """

    __slots__ = ("_breakers", "_counts", "_histogram")

    def __init__(self, meter_provider: Any = None) -> None:
        from opentelemetry import metrics
        from opentelemetry.metrics import CallbackOptions, Observation

        import ratelimit

        provider = metrics.get_meter_provider() if meter_provider is None else meter_provider
        meter = provider.get_meter("ratelimit", ratelimit.__version__)
        self._counts: dict[_Series, count[int]] = {}
        self._breakers: dict[str, int] = {}

        def checks(options: CallbackOptions) -> Iterator[Observation]:
            totals: dict[tuple[str, str, str, bool], int] = {}
            for (outcome, prefix, policy, near), counter in list(self._counts.items()):
                series = (outcome, prefix, policy, near and outcome == "allowed")
                totals[series] = totals.get(series, 0) + _value(counter)
            for (outcome, prefix, policy, near), total in totals.items():
                attributes: dict[str, str | bool] = {
                    "ratelimit.outcome": outcome,
                    "ratelimit.prefix": prefix,
                    "ratelimit.policy": policy,
                }
                if outcome == "allowed":
                    attributes["ratelimit.near_limit"] = near
                yield Observation(total, attributes)

        def breakers(options: CallbackOptions) -> Iterable[Observation]:
            return [
                Observation(state, {"ratelimit.prefix": prefix})
                for prefix, state in list(self._breakers.items())
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
        # The hot path: one dict lookup and one atomic count per check. A breaker event or a
        # store error (no decision) and a new series take the slow path.
        decision = event.decision
        try:
            next(
                self._counts[
                    event.kind,
                    event.prefix,
                    event.policy.id,  # type: ignore[union-attr]
                    decision.remaining * 5 <= decision.limit,  # type: ignore[union-attr]
                ]
            )
        except (KeyError, AttributeError):
            self._first(event)
        if event.duration is not None:
            self._histogram.record(event.duration, {"ratelimit.prefix": event.prefix})

    def _first(self, event: Event) -> None:
        """Counts an event the hot path could not: the first of its series, one without a
        decision (a store error), or a breaker change (which counts nothing)."""
        kind = event.kind
        if kind not in OUTCOMES:
            self._breakers[event.prefix] = 1 if kind == "breaker_open" else 0
            return
        decision = event.decision
        near = decision is not None and decision.remaining * 5 <= decision.limit
        policy = "" if event.policy is None else event.policy.id
        series = (kind, event.prefix, policy, near)
        next(self._counts.setdefault(series, count()))

    def __repr__(self) -> str:
        return f"Metrics(series={len(self._counts)})"
