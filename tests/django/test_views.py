"""``ratelimit.django.limit`` on function views, async views, class-based views and view
methods: counts, the 429 (status, Retry-After, headers parsed back, problem+json), keys,
costs, the custom deny view and the errors a user can make."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from typing import Any

import http_sfv
import pytest
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.test import AsyncClient, AsyncRequestFactory, Client, RequestFactory, override_settings
from django.utils.decorators import method_decorator
from django.views import View

import ratelimit as rl
from ratelimit.django import RateLimited, limit
from tests.support import Clock

rf = RequestFactory()
arf = AsyncRequestFactory()


def items(value: str) -> list[tuple[str, dict[str, Any]]]:
    parsed = http_sfv.List()
    parsed.parse(value.encode())
    return [(item.value, dict(item.params)) for item in parsed]


def assert_429(response: Any, policy: str = "s3.60000") -> None:
    assert response.status_code == 429
    assert int(response["Retry-After"]) >= 1
    assert response["Content-Type"] == "application/problem+json"
    body = json.loads(response.content)
    assert body["status"] == 429
    assert body["retry_after"] == int(response["Retry-After"])
    assert body["violated-policies"] == [policy]
    assert items(response["RateLimit"])[0][1]["r"] == 0


# --- through Django's handler (tests/django/urls.py) --------------------------------------------


def test_sync_view_allows_its_limit_then_answers_429() -> None:
    client = Client()
    seen = []
    for _ in range(3):
        response = client.get("/sync")
        assert response.status_code == 200
        seen.append(items(response["RateLimit"])[0][1]["r"])
        assert items(response["RateLimit-Policy"]) == [("s3.60000", {"q": 3, "w": 60})]
    assert seen == [2, 1, 0]
    assert_429(client.get("/sync"))


async def test_async_view_allows_its_limit_then_answers_429() -> None:
    client = AsyncClient()
    for expected in (2, 1, 0):
        response = await client.get("/async")
        assert response.status_code == 200
        assert items(response["RateLimit"])[0][1]["r"] == expected
    assert_429(await client.get("/async"))


def test_each_view_counts_on_its_own() -> None:
    client = Client()
    for _ in range(3):
        assert client.get("/sync").status_code == 200
    assert client.get("/sync").status_code == 429
    assert client.get("/items/1").status_code == 200  # another view, its own count


def test_class_based_view_counts_every_method_together() -> None:
    client = Client()
    assert client.get("/items/1").status_code == 200
    assert client.post("/items/2").status_code == 200
    assert_429(client.get("/items/3"), "s2.60000")


async def test_async_class_based_view() -> None:
    client = AsyncClient()
    assert (await client.get("/async-items/1")).status_code == 200
    assert (await client.get("/async-items/2")).status_code == 200
    assert_429(await client.get("/async-items/3"), "s2.60000")


def test_clients_are_told_apart_by_ip() -> None:
    client = Client()
    for _ in range(3):
        assert client.get("/sync", REMOTE_ADDR="203.0.113.1").status_code == 200
    assert client.get("/sync", REMOTE_ADDR="203.0.113.1").status_code == 429
    assert client.get("/sync", REMOTE_ADDR="203.0.113.2").status_code == 200


def test_forwarded_for_counts_only_behind_a_trusted_proxy() -> None:
    client = Client()
    spoofed = {"REMOTE_ADDR": "203.0.113.9", "HTTP_X_FORWARDED_FOR": "198.51.100.1"}
    for n in range(4):  # not a trusted proxy: the header is ignored, one client
        spoofed["HTTP_X_FORWARDED_FOR"] = f"198.51.100.{n}"
        status = client.get("/sync", **spoofed).status_code
    assert status == 429
    with override_settings(RATELIMIT={"TRUSTED_PROXIES": ["10.0.0.0/8"]}):
        for n in range(5):  # five clients behind the proxy, each its own count
            proxied = {"REMOTE_ADDR": "10.0.0.1", "HTTP_X_FORWARDED_FOR": f"198.51.100.{n}"}
            assert client.get("/sync", **proxied).status_code == 200


# --- direct calls -------------------------------------------------------------------------------


def test_custom_key_and_cost() -> None:
    @limit("10/minute", key=lambda r: "user:" + r.GET["u"], cost=lambda r: int(r.GET["n"]))
    def view(request: HttpRequest) -> HttpResponse:
        return HttpResponse("ok")

    assert view(rf.get("/", {"u": "a", "n": "7"})).status_code == 200
    assert view(rf.get("/", {"u": "a", "n": "4"})).status_code == 429  # 7 + 4 > 10
    assert view(rf.get("/", {"u": "a", "n": "3"})).status_code == 200
    assert view(rf.get("/", {"u": "b", "n": "10"})).status_code == 200


def test_name_makes_views_share_a_count() -> None:
    @limit("2/minute", name="auth")
    def one(request: HttpRequest) -> HttpResponse:
        return HttpResponse("1")

    @limit("2/minute", name="auth")
    def two(request: HttpRequest) -> HttpResponse:
        return HttpResponse("2")

    assert one(rf.get("/")).status_code == 200
    assert two(rf.get("/")).status_code == 200
    assert one(rf.get("/")).status_code == 429


async def test_async_key_function_in_an_async_view() -> None:
    async def key(request: HttpRequest) -> str:
        await asyncio.sleep(0)
        return "k:" + request.headers["X-User"]

    @limit("1/minute", key=key)
    async def view(request: HttpRequest) -> HttpResponse:
        return HttpResponse("ok")

    assert (await view(arf.get("/", headers={"X-User": "a"}))).status_code == 200
    assert (await view(arf.get("/", headers={"X-User": "a"}))).status_code == 429
    assert (await view(arf.get("/", headers={"X-User": "b"}))).status_code == 200


class RecordingLimiter(rl.AsyncLimiter):
    """An AsyncLimiter that records where its hits ran."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ran_in: list[tuple[int, asyncio.AbstractEventLoop]] = []

    async def hit(self, key: str, cost: int = 1) -> rl.Decision:
        self.ran_in.append((threading.get_ident(), asyncio.get_running_loop()))
        return await super().hit(key, cost)


async def test_async_limiter_is_awaited_on_the_views_event_loop() -> None:
    limiter = RecordingLimiter("2/minute")

    @limit(limiter)
    async def view(request: HttpRequest) -> HttpResponse:
        return HttpResponse("ok")

    statuses = [(await view(arf.get("/"))).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    here = (threading.get_ident(), asyncio.get_running_loop())
    assert limiter.ran_in == [here] * 3  # no thread hop: never wrapped in sync_to_async


def test_a_given_limiter_is_used_as_it_is() -> None:
    clock = Clock()
    limiter = rl.Limiter("2/minute", clock=clock)

    @limit(limiter, key=lambda r: "k")
    def view(request: HttpRequest) -> HttpResponse:
        return HttpResponse("ok")

    assert [view(rf.get("/")).status_code for _ in range(3)] == [200, 200, 429]
    denied = view(rf.get("/"))
    retry = limiter.peek(f"{view.__module__}.{view.__qualname__}|k").retry_after
    assert int(denied["Retry-After"]) == max(1, -(-retry // 1))
    clock.now += 120
    assert view(rf.get("/")).status_code == 200


def test_method_decorators_on_a_class_based_view() -> None:
    class Direct(View):
        @limit("1/minute")
        def get(self, request: HttpRequest) -> HttpResponse:
            return HttpResponse("get")

        def post(self, request: HttpRequest) -> HttpResponse:  # not limited
            return HttpResponse("post")

    @method_decorator(limit("1/minute"), name="get")
    class Decorated(View):
        def get(self, request: HttpRequest) -> HttpResponse:
            return HttpResponse("get")

    for cls in (Direct, Decorated):
        view = cls.as_view()
        assert view(rf.get("/")).status_code == 200
        assert view(rf.get("/")).status_code == 429
    assert Direct.as_view()(rf.post("/")).status_code == 200


def test_custom_deny_view_gets_retry_after_and_headers() -> None:
    seen: list[RateLimited] = []

    def deny(request: HttpRequest, exception: RateLimited) -> HttpResponse:
        seen.append(exception)
        return HttpResponse("slow down", status=429, content_type="text/plain")

    @limit("1/minute")
    def view(request: HttpRequest) -> HttpResponse:
        return HttpResponse("ok")

    with override_settings(RATELIMIT={"VIEW": deny}):
        view(rf.get("/"))
        response = view(rf.get("/"))
    assert response.content == b"slow down"
    assert response["Content-Type"] == "text/plain"
    assert int(response["Retry-After"]) >= 1
    assert "RateLimit" in response
    assert not seen[0].decision.allowed
    assert seen[0].response.status_code == 429  # ours, for reference


async def test_custom_deny_view_by_dotted_path_in_an_async_view() -> None:
    @limit("1/minute")
    async def view(request: HttpRequest) -> HttpResponse:
        return HttpResponse("ok")

    with override_settings(RATELIMIT={"VIEW": "tests.django.test_views.teapot"}):
        await view(arf.get("/"))
        response = await view(arf.get("/"))
    assert response.status_code == 418
    assert int(response["Retry-After"]) >= 1


def teapot(request: HttpRequest, exception: RateLimited) -> HttpResponse:
    return JsonResponse({"retry": exception.decision.retry_after}, status=418)


def test_store_failure_with_on_error_deny_is_503_not_429() -> None:
    @limit("5/minute")
    def view(request: HttpRequest) -> HttpResponse:
        return HttpResponse("ok")

    # Port 1 on loopback: nothing listens, the connection is refused at once.
    with override_settings(RATELIMIT={"STORE": "redis://127.0.0.1:1/0", "ON_ERROR": "deny"}):
        response = view(rf.get("/"))
    assert response.status_code == 503
    assert int(response["Retry-After"]) >= 1
    assert "RateLimit" not in response
    with override_settings(RATELIMIT={"STORE": "redis://127.0.0.1:1/0"}):  # allow
        response = view(rf.get("/"))
    assert response.status_code == 200
    assert "RateLimit" not in response


def test_headers_modes_from_settings() -> None:
    @limit("5/minute")
    def view(request: HttpRequest) -> HttpResponse:
        return HttpResponse("ok")

    with override_settings(RATELIMIT={"HEADERS": ["draft-6", "legacy"]}):
        response = view(rf.get("/"))
    assert response["RateLimit-Limit"] == "5"
    assert response["X-RateLimit-Remaining"] == "4"
    assert "RateLimit" not in response
    with override_settings(RATELIMIT={"HEADERS": None}):
        response = view(rf.get("/"))
    assert "RateLimit" not in response and "RateLimit-Limit" not in response


def test_enabled_false_turns_limits_off() -> None:
    @limit("1/minute")
    def view(request: HttpRequest) -> HttpResponse:
        return HttpResponse("ok")

    with override_settings(RATELIMIT={"ENABLED": False}):
        assert [view(rf.get("/")).status_code for _ in range(3)] == [200] * 3


# --- mistakes -----------------------------------------------------------------------------------


def test_key_returning_a_non_string_is_a_clear_error_at_the_first_request() -> None:
    @limit("5/minute", key=lambda request: 42)
    def view(request: HttpRequest) -> HttpResponse:
        return HttpResponse("ok")

    with pytest.raises(rl.ConfigurationError, match=r"returned 42; it must return a str"):
        view(rf.get("/"))


async def test_async_key_returning_a_non_string_is_a_clear_error() -> None:
    async def key(request: HttpRequest) -> Any:
        return None

    @limit("5/minute", key=key)
    async def view(request: HttpRequest) -> HttpResponse:
        return HttpResponse("ok")

    with pytest.raises(rl.ConfigurationError, match=r"returned None; it must return a str"):
        await view(arf.get("/"))


def test_async_key_in_a_sync_view_is_a_clear_error() -> None:
    async def key(request: HttpRequest) -> str:
        return "k"

    @limit("5/minute", key=key)
    def view(request: HttpRequest) -> HttpResponse:
        return HttpResponse("ok")

    with pytest.raises(rl.ConfigurationError, match=r"is async; a sync view needs a sync key"):
        view(rf.get("/"))


@pytest.mark.parametrize(
    ("limits", "match"),
    [
        ("5 per fortnight", "unknown time unit 'fortnight'"),
        ("five/minute", "cannot read limit 'five/minute'"),
        (42, "limits must be text"),
    ],
)
def test_bad_limit_is_an_error_at_decoration(limits: Any, match: str) -> None:
    with pytest.raises(rl.ConfigurationError, match=match):
        limit(limits)


def test_limiter_of_the_wrong_kind_is_an_error_at_decoration() -> None:
    with pytest.raises(rl.ConfigurationError, match="is sync: give it a Limiter"):

        @limit(rl.AsyncLimiter("1/minute"))
        def view(request: HttpRequest) -> HttpResponse:
            return HttpResponse("ok")

    with pytest.raises(rl.ConfigurationError, match="is async: give it an AsyncLimiter"):

        @limit(rl.Limiter("1/minute"))
        async def aview(request: HttpRequest) -> HttpResponse:
            return HttpResponse("ok")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"key": "ip"}, "key must be a callable"), ({"cost": -1}, "cost must be"),
     ({"name": ""}, "name must be non-empty")],
)  # fmt: skip
def test_bad_options_are_errors_at_decoration(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(rl.ConfigurationError, match=match):
        limit("1/minute", **kwargs)


def test_untrusted_proxy_warning_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    @limit("100/minute")
    def view(request: HttpRequest) -> HttpResponse:
        return HttpResponse("ok")

    caplog.set_level(logging.WARNING, logger="ratelimit")
    view(rf.get("/", REMOTE_ADDR="93.184.216.34", HTTP_X_FORWARDED_FOR="198.51.100.1"))
    assert not caplog.records  # a public peer: not a proxy of ours, nothing to say
    for n in range(3):
        view(rf.get("/", REMOTE_ADDR="10.1.2.3", HTTP_X_FORWARDED_FOR=f"198.51.100.{n}"))
    warnings = [r for r in caplog.records if "ratelimit.W002" in r.getMessage()]
    assert len(warnings) == 1
    assert "TRUSTED_PROXIES" in warnings[0].getMessage()
    with override_settings(RATELIMIT={"TRUSTED_PROXIES": ["10.0.0.0/8"]}):
        view(rf.get("/", REMOTE_ADDR="10.1.2.3", HTTP_X_FORWARDED_FOR="198.51.100.1"))
    assert len([r for r in caplog.records if "W002" in r.getMessage()]) == 1


def test_builtin_keys_read_every_kind_of_django_request() -> None:
    from django.http import HttpRequest as Bare
    from rest_framework.request import Request

    from ratelimit import keys

    wsgi = rf.get("/", REMOTE_ADDR="198.51.100.30", HTTP_X_API_KEY="k1")
    asgi = arf.get("/", headers={"X-API-Key": "k1"})
    bare = Bare()
    bare.META = {"REMOTE_ADDR": "198.51.100.30", "HTTP_X_API_KEY": "k1"}
    for request in (wsgi, Request(wsgi), bare):
        assert keys.client_ip()(request) == "ip:198.51.100.30"
        assert keys.header("X-API-Key")(request) == "hdr:x-api-key:k1"
    assert keys.header("X-API-Key")(asgi) == "hdr:x-api-key:k1"
    assert keys.client_ip()(asgi) == "ip:" + asgi.META["REMOTE_ADDR"]
