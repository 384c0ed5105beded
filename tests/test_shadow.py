"""Shadow mode (``shadow=True``): the same decisions, state and numbers as enforcement, but a
would-be denial is allowed with ``reason="shadow"``, charges nothing and emits
``"shadow_denied"``; on every store lane, in ``wait``, the decorator and the web integrations."""

from __future__ import annotations

import math
import random
import time
from typing import Any

import http_sfv
import httpx
import pytest
from fastapi import Depends, FastAPI
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.test import Client

import ratelimit as rl
import ratelimit.limiter
from ratelimit.asgi import RateLimitMiddleware
from ratelimit.events import Event
from ratelimit.fastapi import RateLimit
from ratelimit.flask import FlaskRateLimit
from ratelimit.wsgi import WSGIRateLimitMiddleware
from tests.conftest import Lane
from tests.support import Clock
from tests.web.conftest import header_map, http_scope, run_asgi

NUMBERS = ("limit", "remaining", "retry_after", "reset_after", "policy")

POLICY_SETS = [
    [rl.FixedWindow(5, 10)],
    [rl.SlidingWindow(7, 3)],
    [rl.TokenBucket(3, 1, burst=4)],
    [rl.SlidingWindow(10, 60), rl.TokenBucket(2, 1, burst=5)],
]


def assert_shadow_of(shadow: rl.Decision, enforced: rl.Decision, where: str) -> None:
    """``shadow`` is what a shadow limiter answers where enforcement answered ``enforced``."""
    assert shadow.allowed, where
    for name in NUMBERS:
        assert getattr(shadow, name) == getattr(enforced, name), f"{where}: {name}"
    if enforced.allowed:
        assert shadow.reason == enforced.reason, where
        assert shadow.details == enforced.details, where
    else:
        assert shadow.reason == "shadow", where
        assert [(d.allowed, d.remaining, d.retry_after) for d in shadow.details] == [
            (d.allowed, d.remaining, d.retry_after) for d in enforced.details
        ], where


async def _replay(lane: Lane, policies: list[rl.Policy], seed: int, steps: int,
                  deny_cache: int) -> tuple[int, int]:  # fmt: skip
    """Replays one random sequence of keys, costs, operations and times through an enforcing
    limiter and a shadow one on the same store (separate prefixes). Returns (checks, denials)."""
    rng = random.Random(seed)
    clock = Clock()
    shadow_events: list[Event] = []
    enforce_events: list[Event] = []
    enforce = lane.limiter(policies, clock=clock, prefix=f"enf{seed}", deny_cache=deny_cache,
                           on_event=enforce_events.append)  # fmt: skip
    shadow = lane.limiter(policies, clock=clock, prefix=f"shd{seed}", deny_cache=deny_cache,
                          on_event=shadow_events.append, shadow=True)  # fmt: skip
    capacity = min(p.limit for p in policies)
    denials = 0
    last = time.perf_counter()
    for step in range(steps):
        # never slower than real time: a real server expires keys on its own clock
        real_ms = math.ceil((time.perf_counter() - last) * 1000)
        last = time.perf_counter()
        clock.advance(max(rng.choice([0, 0, 0, 1, 50, 333, 1000, 9000]), real_ms))
        key = rng.choice(["a", "b", "{c}"])
        cost = min(rng.choice([0, 1, 1, 1, 2, 3]), capacity)
        op = rng.choice(["hit", "hit", "hit", "peek"] + (["reset"] if rng.random() < 0.03 else []))
        if op == "reset":
            await enforce.reset(key)
            await shadow.reset(key)
            continue
        want = await getattr(enforce, op)(key, cost)
        got = await getattr(shadow, op)(key, cost)
        assert_shadow_of(got, want, f"step {step} at {clock.ms}: {op}({key!r}, {cost})")
        denials += not want.allowed
    # one event per check, "shadow_denied" exactly where enforcement denied (or its cache did)
    kinds = {"denied": "shadow_denied", "cached": "shadow_denied", "allowed": "allowed"}
    assert [kinds[e.kind] for e in enforce_events] == [e.kind for e in shadow_events]
    assert all(e.decision is not None and e.decision.allowed for e in shadow_events)
    return steps, denials


@pytest.mark.parametrize("policies", POLICY_SETS, ids=lambda ps: "+".join(p.id for p in ps))
async def test_shadow_is_enforcement_that_never_denies(
    lane: Lane, policies: list[rl.Policy]
) -> None:
    denials = 0
    for seed in range(2):
        denials += (await _replay(lane, policies, seed, 150, deny_cache=0))[1]
    denials += (await _replay(lane, policies, 7, 150, deny_cache=100))[1]
    assert denials >= 10  # the sequences do reach the limits


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    policy=st.sampled_from([p for ps in POLICY_SETS for p in ps]),
    script=st.lists(
        st.tuples(
            st.sampled_from([0, 0, 1, 250, 1000, 5000]),
            st.integers(0, 4),
            st.sampled_from(["x", "y"]),
        ),
        min_size=1,
        max_size=60,
    ),
    cache=st.sampled_from([0, 50]),
)
def test_shadow_matches_enforcement_for_any_sequence(
    policy: rl.Policy, script: list[tuple[int, int, str]], cache: int
) -> None:
    clock = Clock()
    store = rl.MemoryStore()
    enforce = rl.Limiter(policy, store=store, clock=clock, prefix="e", deny_cache=cache)
    shadow = rl.Limiter(policy, store=store, clock=clock, prefix="s", deny_cache=cache,
                        shadow=True)  # fmt: skip
    for dt, cost, key in script:
        clock.advance(dt)
        cost = min(cost, policy.limit)
        assert_shadow_of(shadow.hit(key, cost), enforce.hit(key, cost), f"{key} {cost}")


def test_a_shadow_denial_charges_nothing_and_reports_enforcements_numbers(clock: Clock) -> None:
    events: list[Event] = []
    limiter = rl.Limiter(rl.FixedWindow(2, 60), clock=clock, shadow=True, on_event=events.append)
    assert limiter.shadow
    assert [limiter.hit("k").remaining for _ in range(2)] == [1, 0]
    clock.advance(10_000)
    d = limiter.hit("k")
    assert (d.allowed, d.reason, d.remaining, d.limit) == (True, "shadow", 0, 2)
    assert d.retry_after == pytest.approx(50.0) and d.reset_after == pytest.approx(50.0)
    assert [x.allowed for x in d.details] == [False]  # the verdict enforcement would give
    assert limiter.peek("k").remaining == 0  # nothing charged, nothing owed
    clock.advance(50_000)
    assert limiter.hit("k").reason is None  # allowed for real again, on time
    # the peek in between would have been denied too
    assert [e.kind for e in events] == ["allowed", "allowed", "shadow_denied", "shadow_denied",
                                        "allowed"]  # fmt: skip
    assert events[2].decision is d


def test_cached_denials_in_shadow_are_shadow_too(
    clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ratelimit.limiter, "TIME_EVERY", 0.0)  # time every store call
    events: list[Event] = []
    limiter = rl.Limiter("1/minute", clock=clock, shadow=True, deny_cache=10,
                         on_event=events.append)  # fmt: skip
    limiter.hit("k")
    first = limiter.hit("k")  # from the store; the real denial is cached
    clock.advance(1000)
    second = limiter.hit("k")  # from the cache: no store call, still only a shadow
    assert (first.allowed, first.reason) == (second.allowed, second.reason) == (True, "shadow")
    assert second.retry_after == pytest.approx(first.retry_after - 1)
    assert [e.kind for e in events] == ["allowed", "shadow_denied", "shadow_denied"]
    assert events[1].duration is not None and events[2].duration is None  # no store call


def test_wait_never_sleeps_and_the_decorator_never_raises(clock: Clock) -> None:
    limiter = rl.Limiter("1/minute", clock=clock, shadow=True)

    def no_sleep(seconds: float) -> None:
        raise AssertionError(f"slept {seconds}")

    limiter._sleep = no_sleep
    assert limiter.wait("k").reason is None
    assert limiter.wait("k", timeout=0.0).reason == "shadow"

    calls = []

    @rl.rate_limit(limiter, key="fixed")
    def work(n: int) -> int:
        calls.append(n)
        return n

    @rl.rate_limit(limiter, key="waiting", wait=True, timeout=0.0)
    def patient(n: int) -> int:
        return n

    assert [work(i) for i in range(5)] == [0, 1, 2, 3, 4]
    assert [patient(i) for i in range(3)] == [0, 1, 2]


async def test_async_wait_and_decorator_in_shadow(clock: Clock) -> None:
    limiter = rl.AsyncLimiter("1/minute", clock=clock, shadow=True)

    async def no_sleep(seconds: float) -> None:
        raise AssertionError(f"slept {seconds}")

    limiter._sleep = no_sleep  # type: ignore[assignment]
    await limiter.wait("k")
    assert (await limiter.wait("k", timeout=0.0)).reason == "shadow"

    @rl.rate_limit(limiter, key="fixed")
    async def work(n: int) -> int:
        return n

    assert [await work(i) for i in range(4)] == [0, 1, 2, 3]


def test_shadow_is_per_limiter(clock: Clock) -> None:
    store = rl.MemoryStore()
    new = rl.Limiter("1/minute", store=store, prefix="new", clock=clock, shadow=True)
    old = rl.Limiter("1/minute", store=store, prefix="old", clock=clock)
    for limiter in (new, old):
        limiter.hit("k")
    assert new.hit("k").allowed and not old.hit("k").allowed


@pytest.mark.parametrize("bad", ["yes", 1, None])
def test_shadow_must_be_a_bool(bad: Any) -> None:
    with pytest.raises(rl.ConfigurationError, match=repr(bad)):
        rl.Limiter("1/minute", shadow=bad)


@pytest.mark.parametrize("on_error", ["deny", "raise"])
def test_shadow_never_denies_on_store_errors_either(on_error: Any) -> None:
    with pytest.raises(rl.ConfigurationError, match=on_error):
        rl.AsyncLimiter("1/minute", shadow=True, on_error=on_error)


# --- web integrations: never 429 for a shadow decision, the real numbers in the headers --------


def ratelimit_remaining(value: str) -> list[int]:
    parsed = http_sfv.List()
    parsed.parse(value.encode())
    return [item.params["r"] for item in parsed]


async def test_asgi_answers_shadow_decisions_with_the_app(clock: Clock) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    limiter = rl.AsyncLimiter("2/minute", clock=clock, shadow=True)
    middleware = RateLimitMiddleware(app, limiter=limiter, headers=("ietf", "draft-6"))
    seen = []
    for _ in range(4):
        start = (await run_asgi(middleware, http_scope()))[0]
        headers = header_map(start)
        assert start["status"] == 200 and "retry-after" not in headers
        seen.append((ratelimit_remaining(headers["ratelimit"]), headers["ratelimit-remaining"]))
    assert seen == [([1], "1"), ([0], "0"), ([0], "0"), ([0], "0")]


def test_wsgi_and_flask_answer_shadow_decisions_with_the_app(clock: Clock) -> None:
    def hello(environ: Any, start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"hello"]

    limiter = rl.Limiter("2/minute", clock=clock, shadow=True)
    wsgi = Client(WSGIRateLimitMiddleware(hello, limiter, headers="draft-6"))
    responses = [wsgi.get("/") for _ in range(4)]
    assert [r.status_code for r in responses] == [200] * 4
    assert [r.headers["RateLimit-Remaining"] for r in responses] == ["1", "0", "0", "0"]

    app = Flask(__name__)
    ext = FlaskRateLimit(app)
    flask_limiter = rl.Limiter("2/minute", clock=clock, shadow=True)

    @app.route("/login", methods=["POST"])
    @ext.limit(flask_limiter)
    def login() -> str:
        return "in"

    client = app.test_client()
    answers = [client.post("/login") for _ in range(4)]
    assert [(r.status_code, r.text) for r in answers] == [(200, "in")] * 4
    assert [ratelimit_remaining(r.headers["RateLimit"]) for r in answers] == [[1], [0], [0], [0]]
    assert all("Retry-After" not in r.headers for r in answers)


async def test_fastapi_answers_shadow_decisions_with_the_route(clock: Clock) -> None:
    app = FastAPI()
    limiter = rl.AsyncLimiter("2/minute", clock=clock, shadow=True)

    @app.get("/search", dependencies=[Depends(RateLimit(limiter))])
    async def search() -> dict[str, str]:
        return {"found": "yes"}

    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        answers = [await client.get("/search") for _ in range(4)]
    assert [(r.status_code, r.json()) for r in answers] == [(200, {"found": "yes"})] * 4
    assert [ratelimit_remaining(r.headers["RateLimit"]) for r in answers] == [[1], [0], [0], [0]]


def test_the_prometheus_example_counts_shadow_denials_as_checks(clock: Clock) -> None:
    from examples import metrics as example

    metrics = example.LimiterMetrics(prometheus=False)
    limiter = rl.Limiter("1/minute", prefix="api", clock=clock, shadow=True, on_event=metrics)
    limiter.hit("k")
    limiter.hit("k")
    policy = limiter.policies[0].id
    assert metrics.counts == {("allowed", "api", policy): 1, ("shadow_denied", "api", policy): 1}
    assert metrics.store_up == {}  # not taken for a breaker change
