"""The WSGI middleware: raw WSGI calls for start_response and close(), Werkzeug's test client
for whole requests."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import http_sfv
import pytest
from werkzeug.test import Client, EnvironBuilder
from werkzeug.wrappers import Response

import ratelimit as rl
from ratelimit import keys
from ratelimit.stores.base import Store
from ratelimit.wsgi import Rule, WSGIRateLimitMiddleware
from tests.support import Clock

StartResponse = Callable[..., Any]


def hello(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


def environ(path: str = "/", method: str = "GET", peer: str = "203.0.113.7",
            **headers: str) -> dict[str, Any]:  # fmt: skip
    builder = EnvironBuilder(path=path, method=method, headers=headers,
                             environ_base={"REMOTE_ADDR": peer})  # fmt: skip
    return builder.get_environ()


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, list[tuple[str, str]], Any]] = []

    def __call__(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        self.calls.append((status, headers, exc_info))
        return lambda data: None

    @property
    def headers(self) -> dict[str, str]:
        return dict(self.calls[-1][1])


def sf(value: str) -> list[Any]:
    parsed = http_sfv.List()
    parsed.parse(value.encode())
    return list(parsed)


def test_allowed_then_denied(clock: Clock) -> None:
    limiter = rl.Limiter(rl.FixedWindow(2, 60), clock=clock)
    client = Client(WSGIRateLimitMiddleware(hello, limiter))
    for remaining in (1, 0):
        response = client.get("/")
        assert response.status_code == 200
        assert response.text == "hello"
        assert sf(response.headers["RateLimit"])[0].params["r"] == remaining
        assert response.headers["Content-Type"] == "text/plain"
    clock.now += 0.5
    denied = client.get("/")
    assert denied.status == "429 Too Many Requests"
    assert denied.headers["Retry-After"] == "60"  # 59.5 rounded up
    assert denied.headers["Content-Type"] == "application/problem+json"
    assert denied.json is not None and denied.json["retry_after"] == 60
    clock.now += 59.5
    assert client.get("/").status_code == 200


def test_the_applications_iterable_is_returned_so_close_reaches_the_server() -> None:
    closed: list[bool] = []

    class Body:
        def __iter__(self) -> Iterator[bytes]:
            yield b"streamed "
            yield b"body"

        def close(self) -> None:
            closed.append(True)

    body = Body()

    def app(environ: dict[str, Any], start_response: StartResponse) -> Body:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return body

    start_response = Recorder()
    result = WSGIRateLimitMiddleware(app, "10/minute")(environ(), start_response)
    assert result is body  # not wrapped: close() and wsgi.file_wrapper reach the server
    assert b"".join(result) == b"streamed body"
    result.close()  # type: ignore[attr-defined]
    assert closed == [True]
    assert "RateLimit" in start_response.headers


def test_start_response_called_late_and_again_with_exc_info() -> None:
    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            raise ValueError("boom")
        except ValueError:
            import sys

            start_response("500 Internal Server Error", [("X-Error", "1")], sys.exc_info())
        yield b"error page"

    start_response = Recorder()
    result = WSGIRateLimitMiddleware(app, "10/minute", headers="draft-6")(environ(), start_response)
    assert start_response.calls == []  # a generator: nothing happened yet
    assert list(result) == [b"error page"]
    first, second = start_response.calls
    for _status, headers, _ in (first, second):
        assert [name for name, _ in headers].count("RateLimit-Remaining") == 1
    assert second[0].startswith("500") and second[2] is not None
    assert dict(second[1])["X-Error"] == "1"


def test_rules_exempt_keys_and_costs(clock: Clock) -> None:
    login = rl.Limiter(rl.FixedWindow(1, 60), clock=clock)
    default = rl.Limiter(rl.FixedWindow(100, 60), clock=clock)
    middleware = WSGIRateLimitMiddleware(
        hello,
        default,
        rules=[Rule("/login", login, methods=["POST"]), Rule("/items/{id}", "1/minute")],
        exempt=["/health"],
        key=lambda environ: "user:" + environ.get("HTTP_X_USER", "-"),
        cost=lambda environ: 2 if environ["REQUEST_METHOD"] == "PUT" else 1,
    )
    client = Client(middleware)
    assert client.post("/login", headers={"X-User": "a"}).status_code == 200
    assert client.post("/login", headers={"X-User": "a"}).status_code == 429
    assert client.post("/login", headers={"X-User": "b"}).status_code == 200
    assert client.get("/login", headers={"X-User": "a"}).status_code == 200
    assert client.get("/items/1").status_code == 200
    assert client.get("/items/2").status_code == 429
    for _ in range(5):
        response = client.get("/health")
        assert response.status_code == 200
        assert "RateLimit" not in response.headers
    client.put("/", headers={"X-User": "c"})
    assert default.peek("user:c").remaining == 98


def test_built_in_keys_read_the_environ(clock: Clock) -> None:
    limiter = rl.Limiter(rl.FixedWindow(1, 60), clock=clock)
    key = keys.client_ip(trusted_proxies=["10.0.0.0/8"])
    middleware = WSGIRateLimitMiddleware(hello, limiter, key=key)
    request = environ(peer="10.0.0.1", X_Forwarded_For="198.51.100.7")
    assert request["HTTP_X_FORWARDED_FOR"] == "198.51.100.7"
    middleware(request, Recorder())
    assert limiter.peek("ip:198.51.100.7").remaining == 0


def test_exempt_callable_and_no_limit_passes_the_app_through() -> None:
    middleware = WSGIRateLimitMiddleware(
        hello, "1/minute", exempt=lambda environ: environ.get("HTTP_X_INTERNAL") == "1"
    )
    client = Client(middleware)
    for _ in range(3):
        assert client.get("/", headers={"X-Internal": "1"}).status_code == 200
    assert client.get("/").status_code == 200
    assert client.get("/").status_code == 429


def test_custom_deny(clock: Clock) -> None:
    def deny(environ: dict[str, Any], decision: rl.Decision) -> Response:
        return Response(f"wait {decision.retry_after:.0f}s", status=429)

    limiter = rl.Limiter(rl.FixedWindow(1, 60), clock=clock)
    client = Client(WSGIRateLimitMiddleware(hello, limiter, deny=deny))
    client.get("/")
    denied = client.get("/")
    assert (denied.status_code, denied.text) == (429, "wait 60s")
    assert denied.headers["Retry-After"] == "60"
    assert "RateLimit" in denied.headers


class BrokenStore(rl.MemoryStore):
    def evaluate(self, *args: Any, **kwargs: Any) -> list[int]:
        raise rl.StoreError("down")


def test_store_errors() -> None:
    allow = Client(WSGIRateLimitMiddleware(hello, rl.Limiter("1/minute", store=BrokenStore())))
    for _ in range(3):
        response = allow.get("/")
        assert response.status_code == 200
        assert "RateLimit" not in response.headers
    deny_limiter = rl.Limiter("1/minute", store=BrokenStore(), on_error="deny")
    denied = Client(WSGIRateLimitMiddleware(hello, deny_limiter)).get("/")
    assert denied.status == "503 Service Unavailable"
    assert json.loads(denied.data)["status"] == 503
    raise_limiter = rl.Limiter("1/minute", store=BrokenStore(), on_error="raise")
    with pytest.raises(rl.StoreError):
        WSGIRateLimitMiddleware(hello, raise_limiter)(environ(), Recorder())


def test_headers_none_and_options() -> None:
    client = Client(WSGIRateLimitMiddleware(hello, "5/minute", headers=None))
    assert not [h for h in client.get("/").headers if "ratelimit" in h[0].lower()]
    with pytest.raises(rl.ConfigurationError, match="AsyncLimiter"):
        WSGIRateLimitMiddleware(hello, rl.AsyncLimiter("1/second"))
    with pytest.raises(rl.ConfigurationError):
        WSGIRateLimitMiddleware(hello, "1/second", deny="nope")  # type: ignore[arg-type]
    with pytest.raises(rl.ConfigurationError):
        WSGIRateLimitMiddleware(hello, 3)  # type: ignore[arg-type]

    class NetworkStore(Store):
        pass

    # any sync store is fine under WSGI: blocking is what WSGI does
    WSGIRateLimitMiddleware(hello, rl.Limiter("1/second", store=NetworkStore()))


def test_key_must_return_text() -> None:
    middleware = WSGIRateLimitMiddleware(hello, "1/second", key=lambda environ: 42)  # type: ignore[arg-type, return-value]
    with pytest.raises(rl.ConfigurationError, match="must return a str"):
        middleware(environ(), Recorder())
