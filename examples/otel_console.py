"""OpenTelemetry metrics from limiters, printed by the SDK's console exporter.

Run it:   pip install "ratelimit-atomic[otel]" opentelemetry-sdk
          python examples/otel_console.py

One :class:`ratelimit.otel.Metrics` listens to two limiters: ``api`` enforces 5 per minute, and
``api-next`` runs a stricter 3 per minute in shadow mode (it reports whom it would deny, and
denies nobody). Three clients send a burst; the exporter then prints:

- ``ratelimit.checks``: checks by ``ratelimit.outcome`` (``allowed``, ``denied``,
  ``shadow_denied``, ...), ``ratelimit.prefix`` and ``ratelimit.policy``; allowed checks carry
  ``ratelimit.near_limit`` (80% of the limit used);
- ``ratelimit.store.duration``: a histogram of store call durations (the calls the limiters
  timed: every call at low traffic, about 100 a second per limiter under load);
- the client names appear nowhere: metrics have one series per limit, not per client.

In production, replace the console exporter with an OTLP one
(``opentelemetry-exporter-otlp``) and set the provider once, globally, at start-up.
"""

from __future__ import annotations

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, PeriodicExportingMetricReader

import ratelimit as rl
from ratelimit.otel import Metrics


def main() -> None:
    # A long interval: this demo exports once, when the provider shuts down.
    reader = PeriodicExportingMetricReader(
        ConsoleMetricExporter(), export_interval_millis=3_600_000
    )
    provider = MeterProvider(metric_readers=[reader])
    metrics = Metrics(provider)
    store = rl.MemoryStore()
    enforced = rl.Limiter(rl.FixedWindow(5, 60), store=store, prefix="api", on_event=metrics)
    shadowed = rl.Limiter(rl.FixedWindow(3, 60), store=store, prefix="api-next", shadow=True,
                          on_event=metrics)  # fmt: skip
    for user in ("alice", "bob", "carol"):
        for _ in range(8 if user == "carol" else 3):
            enforced.hit(f"user:{user}")
            decision = shadowed.hit(f"user:{user}")
            assert decision.allowed  # shadow mode never denies
    provider.shutdown()  # collects and exports once


if __name__ == "__main__":
    main()
