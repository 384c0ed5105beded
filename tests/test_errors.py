"""Bad input gets a clear error and loses nothing; a store that is down follows on_error."""

from __future__ import annotations

from typing import Any

import pytest

import ratelimit as rl
from tests.conftest import Lane
from tests.support import Clock, free_port


@pytest.mark.parametrize(
    ("cost", "message"),
    [
        (-1, "cost must be a non-negative integer, got -1"),
        (1.5, "cost must be a non-negative integer, got 1.5"),
        ("1", "cost must be a non-negative integer, got '1'"),
        (True, "cost must be a non-negative integer, got True"),
        (None, "cost must be a non-negative integer, got None"),
        (6, r"cost 6 is more than TokenBucket\(rate=1, period=1, burst=5\) can ever allow \(5\)"),
    ],
)
async def test_bad_costs(lane: Lane, clock: Clock, cost: object, message: str) -> None:
    limiter = lane.limiter([rl.FixedWindow(10, 60), rl.TokenBucket(1, 1, burst=5)], clock=clock)
    await limiter.hit("k", 3)
    for method in (limiter.hit, limiter.peek, limiter.wait):
        with pytest.raises(rl.ConfigurationError, match=message):
            await method("k", cost)  # type: ignore[arg-type]
    d = await limiter.peek("k")
    assert [x.remaining for x in d.details] == [7, 2]  # nothing was lost or charged


@pytest.mark.parametrize(
    "policy",
    [rl.FixedWindow(10, 1), rl.SlidingWindow(10, 1), rl.TokenBucket(10, 1, burst=10)],
    ids=lambda p: p.id,
)
async def test_a_cost_one_policy_can_never_hold_is_refused_and_charges_nothing(
    lane: Lane, clock: Clock, policy: rl.Policy
) -> None:
    limiter = lane.limiter(policy, clock=clock)  # one policy: the memory store's fast path
    await limiter.hit("k", 3)
    for method in (limiter.hit, limiter.peek):
        with pytest.raises(rl.ConfigurationError, match="cost 11 is more than"):
            await method("k", 11)
    assert (await limiter.peek("k")).remaining == 7


class Units(int):
    """An int subclass (as an IntEnum member is): its text is not its number."""

    def __repr__(self) -> str:
        return f"Units({int(self)})"


async def test_a_cost_of_an_int_subclass_is_refused_by_its_type(lane: Lane, clock: Clock) -> None:
    limiter = lane.limiter("10/minute", clock=clock)
    for method in (limiter.hit, limiter.peek):
        with pytest.raises(rl.ConfigurationError, match=r"got Units\(1\) \(a Units\)"):
            await method("k", Units(1))
    assert (await limiter.peek("k")).remaining == 10


def test_a_huge_cost_on_a_concurrency_only_limiter_is_a_clear_error() -> None:
    limiter = rl.Limiter([rl.Concurrency(5)])
    with pytest.raises(rl.ConfigurationError, match=r"cost must be at most 2\*\*53, got"):
        limiter.acquire("k", cost=2**53 + 1)
    with pytest.raises(rl.ConfigurationError, match=r"non-negative integer, got Units\(2\)"):
        limiter.acquire("k", cost=Units(2))
    assert limiter.acquire("k", cost=2**53).allowed  # one slot, whatever the cost


@pytest.mark.parametrize("key", [None, 42, b"bytes", ("a",)])
async def test_bad_keys(lane: Lane, clock: Clock, key: object) -> None:
    limiter = lane.limiter("5/minute", clock=clock)
    with pytest.raises(rl.ConfigurationError, match="a rate-limit key must be a str"):
        await limiter.hit(key)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"limits": "10/fortnight"}, "unknown time unit 'fortnight'"),
        ({"limits": []}, "at least one limit"),
        ({"limits": 10}, "limits must be text"),
        ({"limits": [rl.FixedWindow(1, 1), 3]}, "not a limit: 3"),
        ({"limits": ["1/s", rl.SlidingWindow(1, 1)]}, "is given twice"),
        ({"prefix": ""}, "prefix must be non-empty"),
        ({"prefix": "a{b"}, "prefix must be non-empty text without braces"),
        ({"on_error": "ignore"}, "on_error must be 'allow', 'deny' or 'raise', got 'ignore'"),
        ({"clock": 5}, "clock must be a callable"),
        ({"store": object()}, "Limiter needs a sync store"),
    ],
)
def test_bad_limiter_options(kwargs: dict[str, object], message: str) -> None:
    options: dict[str, object] = {"limits": "1/s"} | kwargs
    with pytest.raises(rl.ConfigurationError, match=message):
        rl.Limiter(**options)  # type: ignore[arg-type]


def test_limiter_faces_need_matching_stores() -> None:
    sync_store = rl.RedisStore.from_url("redis://127.0.0.1:1")
    async_store = rl.AsyncRedisStore.from_url("redis://127.0.0.1:1")
    with pytest.raises(rl.ConfigurationError, match="use Limiter for sync stores"):
        rl.AsyncLimiter("1/s", store=sync_store)  # type: ignore[arg-type]
    with pytest.raises(rl.ConfigurationError, match="use AsyncLimiter for async stores"):
        rl.Limiter("1/s", store=async_store)  # type: ignore[arg-type]
    with pytest.raises(rl.ConfigurationError, match="max_keys must be a positive integer"):
        rl.MemoryStore(max_keys=0)


def _dead_store(is_async: bool) -> rl.RedisStore | rl.AsyncRedisStore:
    """A store whose server refuses connections (nothing listens on the port)."""
    url = f"redis://127.0.0.1:{free_port()}"
    if is_async:
        return rl.AsyncRedisStore.from_url(url)
    return rl.RedisStore.from_url(url)


def test_a_retrying_client_gets_a_clear_warning() -> None:
    import redis

    with pytest.warns(RuntimeWarning, match=r"retries failed commands \(10 retries\).*count"):
        rl.RedisStore(redis.Redis(port=1))  # redis-py's default: 10 retries
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rl.RedisStore.from_url("redis://127.0.0.1:1")  # limiter-grade: no retries, no warning


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
async def test_store_down_follows_on_error(is_async: bool) -> None:
    store = _dead_store(is_async)
    cls = rl.AsyncLimiter if is_async else rl.Limiter

    async def run(limiter: rl.Limiter | rl.AsyncLimiter, method: str) -> object:
        result = getattr(limiter, method)("k")
        return await result if is_async else result

    allow = cls("5/minute", store=store, on_error="allow")  # type: ignore[arg-type]
    d = await run(allow, "hit")
    assert isinstance(d, rl.Decision)
    assert d.allowed and d.reason == "store_error" and d.retry_after == 0
    assert (await run(allow, "peek")).reason == "store_error"  # type: ignore[attr-defined]
    assert await run(allow, "reset") is None

    deny = cls("5/minute", store=store, on_error="deny")  # type: ignore[arg-type]
    d = await run(deny, "hit")
    assert isinstance(d, rl.Decision)
    assert not d.allowed and d.reason == "store_error" and d.retry_after > 0

    strict = cls("5/minute", store=store, on_error="raise")  # type: ignore[arg-type]
    for method in ("hit", "peek", "reset"):
        with pytest.raises(rl.StoreError, match="ConnectionError") as caught:
            await run(strict, method)
        import redis.exceptions

        assert isinstance(caught.value.__cause__, redis.exceptions.ConnectionError)
    client = store.client
    closing = client.aclose() if is_async else client.close()
    if closing is not None:
        await closing


# -- every error crosses a process with its decision --------------------------------------------

_POOL_LIMITER = rl.Limiter(rl.FixedWindow(1, 60))


@rl.rate_limit(_POOL_LIMITER, key="pool")
def _limited_job(n: int) -> int:
    return n


def _errors() -> list[BaseException]:
    limiter = rl.Limiter("1/s; 5/minute")
    limiter.hit("k")
    decision = limiter.hit("k")
    errors: list[BaseException] = [
        rl.RateLimitExceeded(decision),
        rl.RateLimitExceeded(decision, "custom message"),
        rl.ConfigurationError("bad limit '10/fortnight'"),
        rl.StoreError("RedisStore failed: ConnectionError"),
    ]
    from ratelimit.fastapi import RateLimited as FastAPIRateLimited

    errors.append(FastAPIRateLimited(decision, 429, "slow down", {"Retry-After": "1"}))
    from flask import Response

    from ratelimit.flask import RateLimited as FlaskRateLimited

    errors.append(FlaskRateLimited(decision, Response("slow down", 429)))
    return errors


@pytest.mark.parametrize("copier", ["pickle", "deepcopy"])
def test_every_error_survives_pickle_and_deepcopy_with_its_decision(copier: str) -> None:
    import copy
    import pickle

    for error in _errors():
        again = pickle.loads(pickle.dumps(error)) if copier == "pickle" else copy.deepcopy(error)
        assert type(again) is type(error) and str(again) == str(error)
        assert again.args == error.args
        decision = getattr(error, "decision", None)
        if decision is not None:
            assert again.decision == decision  # type: ignore[attr-defined]
            assert again.retry_after == error.retry_after  # type: ignore[attr-defined]


def test_a_rate_limited_function_raises_through_a_process_pool() -> None:
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=1) as pool:
        assert pool.submit(_limited_job, 1).result(timeout=60) == 1
        with pytest.raises(rl.RateLimitExceeded) as caught:
            pool.submit(_limited_job, 2).result(timeout=60)
    decision = caught.value.decision
    assert not decision.allowed and decision.limit == 1 and 0 < decision.retry_after <= 60
    assert decision.policy == rl.FixedWindow(1, 60)


# -- Upstash: what a pasted environment variable and a wrong client look like -------------------


@pytest.mark.redis_server
@pytest.mark.parametrize("face", ["sync", "async"])
async def test_an_upstash_url_and_token_pasted_with_a_newline_work(
    face: str, servers: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.upstash_lane import TOKEN, session_endpoint

    _, endpoint = session_endpoint(servers)
    monkeypatch.setenv("UPSTASH_REDIS_REST_URL", endpoint.url + "\n")
    monkeypatch.setenv("UPSTASH_REDIS_REST_TOKEN", f" {TOKEN}\r\n")
    is_async = face == "async"
    store_cls: Any = rl.AsyncUpstashStore if is_async else rl.UpstashStore
    for store in (store_cls.from_env(), store_cls.from_url(endpoint.url + "\n", TOKEN + "\n")):
        limiter_cls: Any = rl.AsyncLimiter if is_async else rl.Limiter
        limiter = limiter_cls(rl.FixedWindow(5, 60), store=store, on_error="raise",
                              prefix=f"pasted-{face}")  # fmt: skip
        d = limiter.hit("k")
        d = await d if is_async else d
        assert d.allowed and d.reason is None
        closed = store.client.close()
        if is_async:
            await closed


@pytest.mark.parametrize(
    ("url", "token", "message"),
    [
        ("127.0.0.1:8080", "t", "must be http"),
        ("http://a b.example", "t", "must be http"),
        ("https://db.example\x00", "t", "must be http"),
        ("https://db.example", "", "token must be non-empty"),
        ("https://db.example", "to ken", "token must be non-empty"),
        (None, "t", "as text"),
    ],
)
@pytest.mark.parametrize("cls", [rl.UpstashStore, rl.AsyncUpstashStore])
def test_a_bad_upstash_url_or_token_is_refused_when_the_store_is_built(
    cls: Any, url: object, token: str, message: str
) -> None:
    with pytest.raises(rl.ConfigurationError, match=message):
        cls.from_url(url, token)


@pytest.mark.parametrize("cls", [rl.UpstashStore, rl.AsyncUpstashStore])
def test_a_client_without_execute_is_refused_when_the_store_is_built(cls: Any) -> None:
    class NotAClient:
        pass

    for client in (NotAClient(), None, "https://db.example"):
        with pytest.raises(rl.ConfigurationError, match=r"needs an upstash_redis client"):
            cls(client)
