"""Metrics from a limiter: what it decided, and whether its store answers.

Run it:   python examples/metrics.py
          (with ``pip install prometheus-client`` it also prints the Prometheus exposition)

A limiter calls its ``on_event`` listener once per check and once per change of its store's
circuit breaker. :class:`LimiterMetrics` is such a listener: it counts checks in a
``collections.Counter`` and, when ``prometheus_client`` is installed, in a Prometheus counter,
and it exposes whether each store is up as a gauge.

Labels have low cardinality on purpose: ``kind`` (``allowed``, ``denied``, ``cached``,
``store_error``, ``shadow_denied``), the limiter's ``prefix``, and the binding ``policy``'s id
(such as ``s100.60000``, one per configured limit). The key (a user id, an IP address) is never a
label: one time series per client would make the metric unbounded, and would copy user
identifiers into monitoring. An :class:`~ratelimit.events.Event` does not even carry it.

Wire it to every limiter whose numbers you want::

    metrics = LimiterMetrics()
    limiter = rl.AsyncLimiter("100/minute", store=store, prefix="api", on_event=metrics)
    ...
    metrics.counts[("denied", "api", limiter.policies[0].id)]

Alerts worth having: ``ratelimit_store_up == 0`` (checks follow ``on_error``), and a rising
share of ``kind="store_error"`` (the store is failing without a full outage).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from typing import Any

import ratelimit as rl
from ratelimit.events import Event

try:  # optional: counting and logging work without it
    import prometheus_client
except ImportError:  # pragma: no cover - depends on what is installed
    prometheus_client = None

log = logging.getLogger("ratelimit.metrics")

#: The ``kind`` of an event that reports a check (the others report the store's breaker).
CHECK_KINDS = frozenset({"allowed", "denied", "cached", "store_error", "shadow_denied"})


class LimiterMetrics:
    """An ``on_event`` listener that counts checks and tracks whether stores answer.

    - ``counts``: a Counter of ``(kind, prefix, policy id)``, one entry per combination seen;
      breaker changes count as ``("breaker_open" | "breaker_closed", prefix, "")``.
    - ``store_up``: ``{prefix: bool}``, False from the start of an outage of the limiter's
      store until its end (a prefix not in it has seen no outage).
    - With ``prometheus_client`` installed (and ``prometheus=True``), the same numbers as
      ``ratelimit_checks_total{kind, prefix, policy}`` and ``ratelimit_store_up{prefix}``, in
      ``registry`` (default: the global one; a registry takes each metric name once, so make
      one LimiterMetrics per registry and share it between limiters).

    Cheap enough to run on every check (a dict increment under a lock, plus a labelled
    counter). Thread-safe. Never raises into the limiter: a failing listener is logged and
    ignored by the limiter anyway.
    """

    def __init__(self, *, prometheus: bool = True, registry: Any = None) -> None:
        self.counts: Counter[tuple[str, str, str]] = Counter()
        self.store_up: dict[str, bool] = {}
        self._lock = threading.Lock()
        self._checks: Any = None
        self._up: Any = None
        if prometheus and prometheus_client is not None:
            where = {} if registry is None else {"registry": registry}
            self._checks = prometheus_client.Counter(
                "ratelimit_checks",
                "Rate-limit checks by outcome: allowed, denied, cached (denied without a store "
                "call), store_error (decided by on_error).",
                ["kind", "prefix", "policy"],
                **where,
            )
            self._up = prometheus_client.Gauge(
                "ratelimit_store_up",
                "1 while the limiter's store answers, 0 during an outage (circuit breaker open).",
                ["prefix"],
                **where,
            )

    def __call__(self, event: Event) -> None:
        if event.kind in CHECK_KINDS:
            policy = event.policy.id if event.policy is not None else ""
            with self._lock:
                self.counts[(event.kind, event.prefix, policy)] += 1
            if self._checks is not None:
                self._checks.labels(kind=event.kind, prefix=event.prefix, policy=policy).inc()
            return
        up = event.kind == "breaker_closed"
        with self._lock:
            self.counts[(event.kind, event.prefix, "")] += 1
            self.store_up[event.prefix] = up
        if self._up is not None:
            self._up.labels(prefix=event.prefix).set(1 if up else 0)

    def summary(self) -> str:
        """One line per (kind, prefix, policy), most frequent first: for logs and the demo."""
        with self._lock:
            rows = self.counts.most_common()
        return "\n".join(
            f"{kind:<15} {prefix:<10} {policy or '-':<16} {n}" for (kind, prefix, policy), n in rows
        )

    def log_summary(self, level: int = logging.INFO) -> None:
        """Log :meth:`summary` on logger ``ratelimit.metrics`` (call it from a periodic task
        when there is no metrics system)."""
        log.log(level, "rate-limit checks so far:\n%s", self.summary())


def demo(registry: Any = None) -> LimiterMetrics:
    """A burst from three clients on a 5-per-minute limit, counted."""
    metrics = LimiterMetrics(registry=registry)
    limiter = rl.Limiter("5/minute", prefix="api", deny_cache=100, on_event=metrics)
    for user in ("alice", "bob", "carol"):
        for _ in range(8 if user == "carol" else 3):
            limiter.hit(f"user:{user}")
    return metrics


if __name__ == "__main__":
    own = prometheus_client.CollectorRegistry() if prometheus_client is not None else None
    print(demo(own).summary())
    if own is not None:
        print(prometheus_client.generate_latest(own).decode())
