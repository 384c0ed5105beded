"""``RateLimitMiddleware``: RATELIMIT["DEFAULT"] per client, sync and async, in Django's own
handler and called directly; exemptions; headers merged with a view's own limit."""

from __future__ import annotations

from typing import Any

import http_sfv
import pytest
from django.http import HttpRequest, HttpResponse
from django.test import AsyncClient, AsyncRequestFactory, Client, RequestFactory, override_settings

import ratelimit as rl
from ratelimit.django import RateLimitMiddleware

MIDDLEWARE = ["ratelimit.django.RateLimitMiddleware"]
rf = RequestFactory()
arf = AsyncRequestFactory()


def policies(response: Any) -> list[str]:
    parsed = http_sfv.List()
    parsed.parse(response["RateLimit"].encode())
    return [item.value for item in parsed]


@override_settings(MIDDLEWARE=MIDDLEWARE, RATELIMIT={"DEFAULT": "4/minute", "EXEMPT": ["/health"]})
def test_default_limits_every_view_per_client_in_djangos_handler() -> None:
    client = Client()
    assert client.get("/plain").status_code == 200
    assert client.get("/plain").status_code == 200
    assert client.get("/items/1").status_code == 200  # another view: the same app-wide count
    response = client.get("/plain")
    assert response.status_code == 200
    assert policies(response) == ["s4.60000"]
    denied = client.get("/plain")
    assert denied.status_code == 429
    assert int(denied["Retry-After"]) >= 1
    assert denied["Content-Type"] == "application/problem+json"
    assert client.get("/plain", REMOTE_ADDR="198.51.100.7").status_code == 200  # another client
    health = client.get("/health")  # exempt
    assert health.status_code == 200
    assert "RateLimit" not in health


@override_settings(MIDDLEWARE=MIDDLEWARE, RATELIMIT={"DEFAULT": "3/minute"})
async def test_default_limits_async_requests_in_djangos_async_handler() -> None:
    client = AsyncClient()
    statuses = [(await client.get("/async")).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]


@override_settings(MIDDLEWARE=MIDDLEWARE, RATELIMIT={"DEFAULT": "10/minute"})
def test_view_limit_and_default_both_appear_in_the_headers() -> None:
    response = Client().get("/sync")
    assert policies(response) == ["s3.60000", "s10.60000"]  # the view's first, then the app's


@override_settings(MIDDLEWARE=MIDDLEWARE, RATELIMIT={})
def test_without_default_every_request_passes_untouched() -> None:
    client = Client()
    for _ in range(5):
        response = client.get("/plain")
        assert response.status_code == 200
        assert "RateLimit" not in response


def test_called_directly_sync() -> None:
    calls = []

    def get_response(request: HttpRequest) -> HttpResponse:
        calls.append(request)
        return HttpResponse("ok")

    middleware = RateLimitMiddleware(get_response)
    assert not middleware.is_async
    with override_settings(RATELIMIT={"DEFAULT": "2/minute"}):
        statuses = [middleware(rf.get("/")).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    assert len(calls) == 2  # the denied request never reached the view


async def test_called_directly_async_awaits_on_the_loop() -> None:
    async def get_response(request: HttpRequest) -> HttpResponse:
        return HttpResponse("ok")

    middleware = RateLimitMiddleware(get_response)
    assert middleware.is_async
    from asgiref.sync import iscoroutinefunction

    assert iscoroutinefunction(middleware)  # Django sees an async middleware
    with override_settings(RATELIMIT={"DEFAULT": "2/minute"}):
        statuses = [(await middleware(arf.get("/"))).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]


def test_custom_key_setting_by_dotted_path() -> None:
    middleware = RateLimitMiddleware(lambda request: HttpResponse("ok"))
    with override_settings(
        RATELIMIT={"DEFAULT": "1/minute", "KEY": "tests.django.test_middleware.by_header"}
    ):
        assert middleware(rf.get("/", HTTP_X_TENANT="a")).status_code == 200
        assert middleware(rf.get("/", HTTP_X_TENANT="a")).status_code == 429
        assert middleware(rf.get("/", HTTP_X_TENANT="b")).status_code == 200


def by_header(request: HttpRequest) -> str:
    return "tenant:" + request.headers["X-Tenant"]


def test_bad_settings_fail_the_first_request_and_every_one_after() -> None:
    middleware = RateLimitMiddleware(lambda request: HttpResponse("ok"))
    with override_settings(RATELIMIT={"DEFAULT": "10 a minute"}):
        for _ in range(2):
            with pytest.raises(rl.ConfigurationError, match=r"RATELIMIT\['DEFAULT'\]"):
                middleware(rf.get("/"))
