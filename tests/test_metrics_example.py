"""``examples/metrics.py``: an ``on_event`` listener that feeds counters with labels of low
cardinality (never the key), with and without ``prometheus_client``."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import fakeredis
import pytest

import ratelimit as rl
from examples import metrics as example
from ratelimit.breaker import CircuitBreaker
from tests.support import Clock

ROOT = Path(__file__).resolve().parent.parent
KEYS = ("user:alice@example.com", "ip:203.0.113.7")


class _Series:
    """One labelled series of the stand-in for prometheus_client."""

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1) -> None:
        self.value += amount

    def set(self, value: float) -> None:
        self.value = value


class _Metric:
    def __init__(self, name: str, doc: str, labelnames: list[str], **kwargs: Any) -> None:
        self.name = name
        self.labelnames = tuple(labelnames)
        self.series: dict[tuple[str, ...], _Series] = {}

    def labels(self, **labels: str) -> _Series:
        assert tuple(labels) == self.labelnames, labels
        return self.series.setdefault(tuple(labels.values()), _Series())


@pytest.fixture(params=["real", "stand-in"])
def prometheus(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """prometheus_client with a private registry when installed; a minimal stand-in with the
    same calls otherwise (and always, so both paths run everywhere)."""
    real = example.prometheus_client
    if request.param == "real" and real is not None:
        registry = real.CollectorRegistry()
        yield SimpleNamespace(module=real, registry=registry, real=True)
        return
    stand_in = SimpleNamespace(Counter=_Metric, Gauge=_Metric)
    monkeypatch.setattr(example, "prometheus_client", stand_in)
    yield SimpleNamespace(module=stand_in, registry=None, real=False)


def _series(prom: Any, metrics: example.LimiterMetrics, name: str) -> dict[tuple[str, ...], float]:
    """Every series of metric ``name`` as {label values: value}."""
    if prom.real:
        out: dict[tuple[str, ...], float] = {}
        for family in prom.registry.collect():
            for sample in family.samples:
                if sample.name == name:
                    out[tuple(sample.labels.values())] = sample.value
        return out
    metric = metrics._checks if name == "ratelimit_checks_total" else metrics._up
    return {labels: s.value for labels, s in metric.series.items()}


def test_checks_are_counted_by_kind_prefix_and_policy(clock: Clock, prometheus: Any) -> None:
    metrics = example.LimiterMetrics(registry=prometheus.registry)
    limiter = rl.Limiter("3/minute", prefix="api", clock=clock, deny_cache=10, on_event=metrics)
    policy = limiter.policies[0].id
    for key in KEYS:
        for _ in range(6):  # 3 allowed, 1 denied by the store, then answered from the cache
            limiter.hit(key)
    assert metrics.counts == {
        ("allowed", "api", policy): 6,
        ("denied", "api", policy): 2,
        ("cached", "api", policy): 4,
    }
    assert _series(prometheus, metrics, "ratelimit_checks_total") == {
        ("allowed", "api", policy): 6.0,
        ("denied", "api", policy): 2.0,
        ("cached", "api", policy): 4.0,
    }
    assert "denied" in metrics.summary() and policy in metrics.summary()


def test_outages_flip_store_up_and_count_store_errors(clock: Clock, prometheus: Any) -> None:
    metrics = example.LimiterMetrics(registry=prometheus.registry)
    server = fakeredis.FakeServer()
    client = fakeredis.FakeRedis(server=server)
    breaker = CircuitBreaker(base=1, cap=1, jitter=0, clock=clock)
    limiter = rl.Limiter(
        "100/minute",
        store=rl.RedisStore(client, breaker=breaker),
        prefix="web",
        clock=clock,
        on_event=metrics,
    )
    policy = limiter.policies[0].id
    try:
        assert limiter.hit(KEYS[0]).reason is None
        server.connected = False
        for _ in range(5):
            assert limiter.hit(KEYS[0]).reason == "store_error"
        assert metrics.store_up == {"web": False}
        assert _series(prometheus, metrics, "ratelimit_store_up") == {("web",): 0.0}
        server.connected = True
        clock.advance(1000)
        assert limiter.hit(KEYS[1]).reason is None
    finally:
        client.close()
    assert metrics.store_up == {"web": True}
    assert _series(prometheus, metrics, "ratelimit_store_up") == {("web",): 1.0}
    assert metrics.counts == {
        ("allowed", "web", policy): 2,
        ("store_error", "web", policy): 5,  # the failed call, then four breaker decisions
        ("breaker_open", "web", ""): 1,
        ("breaker_closed", "web", ""): 1,
    }


def test_no_label_ever_holds_the_key(clock: Clock, prometheus: Any) -> None:
    """The cardinality rule, checked over every label value produced by many keys."""
    metrics = example.LimiterMetrics(registry=prometheus.registry)
    limiter = rl.Limiter(
        rl.parse("2/second; 10/minute"), prefix="api", clock=clock, deny_cache=10, on_event=metrics
    )
    keys = [f"user:{i}" for i in range(200)] + list(KEYS)
    for key in keys:
        for _ in range(3):
            limiter.hit(key)
    values = {v for labels in metrics.counts for v in labels}
    values |= {
        v for labels in _series(prometheus, metrics, "ratelimit_checks_total") for v in labels
    }
    assert not [v for v in values if any(k in v or v in k for k in keys if v)], values
    assert len(metrics.counts) <= 4 * len(limiter.policies)  # bounded by kinds x policies


async def test_without_prometheus_client_it_still_counts(
    clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(example, "prometheus_client", None)
    metrics = example.LimiterMetrics()
    limiter = rl.AsyncLimiter("1/minute", prefix="jobs", clock=clock, on_event=metrics)
    policy = limiter.policies[0].id
    assert (await limiter.hit("job:1")).allowed
    assert not (await limiter.hit("job:1")).allowed
    assert metrics.counts == {("allowed", "jobs", policy): 1, ("denied", "jobs", policy): 1}
    assert metrics._checks is None and metrics._up is None


def test_the_example_runs_as_a_script() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "metrics.py")],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    ).stdout
    lines = out.splitlines()
    assert lines[0].split() == ["allowed", "api", "s5.60000", "11"], out
    assert any(line.split()[:1] == ["cached"] for line in lines), out
    assert "user:" not in out
