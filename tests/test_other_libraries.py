"""What the stores read of other libraries beyond their public API, each in one guarded helper:
these tests fail loudly when an installed release moves it, instead of a store quietly falling
back (no retry warning, no timeout, a vaguer error message)."""

from __future__ import annotations

import warnings
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio
import upstash_redis
import upstash_redis.asyncio
from redis.backoff import NoBackoff

from ratelimit.stores.redis import _retries
from ratelimit.stores.upstash import _private, _set_timeout

URL = "http://127.0.0.1:1"


def test_redis_py_tells_its_retries_publicly() -> None:
    """redis-py 6+ has ``Retry.get_retries()``; ``_retries`` reads that, not the private
    ``Retry._retries`` it falls back to on redis-py 5."""
    from redis.asyncio.retry import Retry as AsyncRetry
    from redis.retry import Retry

    assert callable(Retry(NoBackoff(), 3).get_retries)
    assert callable(AsyncRetry(NoBackoff(), 3).get_retries)
    assert _retries(redis.Redis(port=1, retry=Retry(NoBackoff(), 3))) == 3
    assert _retries(redis.asyncio.Redis(port=1, retry=AsyncRetry(NoBackoff(), 4))) == 4


def test_redis_py_5_retries_are_read_from_the_private_field() -> None:
    class OldRetry:  # redis-py 5's Retry: no get_retries()
        _retries = 2

    class Client:
        def get_retry(self) -> OldRetry:
            return OldRetry()

    assert _retries(Client()) == 2
    assert _retries(object()) == 0


@pytest.mark.parametrize("module", [upstash_redis, upstash_redis.asyncio], ids=["sync", "async"])
def test_upstash_redis_still_keeps_what_the_store_reads(module: Any) -> None:
    """upstash-redis has no public way to read its URL and retries or to set a timeout: the
    installed release must still keep them where ``_private`` looks."""
    client = module.Redis(url=URL, token="t", rest_retries=2, rest_retry_interval=0.25)
    private = _private(client)
    assert private.url == URL
    assert (private.retries, private.interval) == (2, 0.25)
    assert isinstance(private.http, (httpx.Client, httpx.AsyncClient))
    _set_timeout(client, 0.3)
    assert private.http.timeout == httpx.Timeout(0.3)


def test_a_client_without_them_gets_the_fallbacks_and_a_warning_for_the_timeout() -> None:
    class Bare:
        def execute(self, command: list[Any]) -> Any:
            return None

    assert tuple(_private(Bare())) == ("the REST endpoint", 0, "?", None)
    with pytest.warns(RuntimeWarning, match=r"without the timeout=0.5"):
        _set_timeout(Bare(), 0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _set_timeout(upstash_redis.Redis(url=URL, token="t"), 0.5)
