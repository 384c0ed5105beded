"""The serverless examples (`examples/serverless/`), configured from the environment as they
would be when deployed, against the local Upstash REST endpoint in front of a real Redis."""

from __future__ import annotations

import asyncio
import importlib.util
import itertools
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

import ratelimit as rl
from tests.servers import Server
from tests.upstash_endpoint import UpstashEndpoint

pytestmark = pytest.mark.redis_server

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "serverless"
LAMBDA = EXAMPLES / "aws_lambda" / "handler.py"
VERCEL = EXAMPLES / "vercel" / "api" / "index.py"
TOKEN = "serverless-example-token"
_names = itertools.count()


def load(path: Path) -> ModuleType:
    """Import the example afresh, as a cold start does."""
    spec = importlib.util.spec_from_file_location(f"_example_{next(_names)}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def endpoint(servers: Any) -> Iterator[UpstashEndpoint]:
    server: Server = servers.get("any")
    server.reset()
    with UpstashEndpoint(server.url, TOKEN) as endpoint:
        yield endpoint


@pytest.fixture
def environment(endpoint: UpstashEndpoint, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UPSTASH_REDIS_REST_URL", endpoint.url)
    monkeypatch.setenv("UPSTASH_REDIS_REST_TOKEN", TOKEN)
    monkeypatch.setenv("RATELIMIT_LIMITS", "3/minute")
    monkeypatch.setenv("RATELIMIT_PREFIX", "example")


# -- AWS Lambda --------------------------------------------------------------------------------


@pytest.fixture
def aws(environment: None) -> Iterator[ModuleType]:
    module = load(LAMBDA)
    yield module
    module.limiter.store.client.close()


def http_api_event(ip: str) -> dict[str, Any]:
    """API Gateway HTTP API (payload 2.0) / function URL."""
    return {"version": "2.0", "rawPath": "/", "requestContext": {"http": {"sourceIp": ip}}}


def rest_api_event(ip: str) -> dict[str, Any]:
    """API Gateway REST API (payload 1.0)."""
    return {"path": "/", "requestContext": {"identity": {"sourceIp": ip}}}


def test_lambda_handler_limits_each_caller(aws: ModuleType, endpoint: UpstashEndpoint) -> None:
    handler = aws.handler
    first = handler(http_api_event("203.0.113.7"), None)
    assert first["statusCode"] == 200
    assert first["headers"]["RateLimit-Remaining"] == "2"
    endpoint.reset_counters()
    assert [handler(http_api_event("203.0.113.7"), None)["statusCode"] for _ in range(2)] == [
        200,
        200,
    ]
    denied = handler(http_api_event("203.0.113.7"), None)
    assert denied["statusCode"] == 429
    assert denied["headers"]["Content-Type"] == "application/problem+json"
    retry = int(denied["headers"]["Retry-After"])
    assert 1 <= retry <= 120 and json.loads(denied["body"])["retry_after"] == retry
    other = handler(rest_api_event("198.51.100.9"), None)  # another caller, other API shape
    assert other["statusCode"] == 200 and other["headers"]["RateLimit-Remaining"] == "2"
    # one HTTP request, one command, per invocation (the denied one included)
    assert endpoint.requests == 4 and endpoint.commands == Counter({"EVALSHA": 4})


def test_lambda_handler_follows_on_error_when_upstash_is_down(
    environment: None, endpoint: UpstashEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real time is the subject: an unreachable database must not stall the invocation."""
    monkeypatch.setenv("RATELIMIT_ON_ERROR", "deny")
    module = load(LAMBDA)
    try:
        endpoint.stop()
        started = time.perf_counter()
        response = module.handler(http_api_event("203.0.113.7"), None)
        assert time.perf_counter() - started < 0.5
        # a store failure is the service's fault, not the caller's: 503, as every integration
        assert response["statusCode"] == 503 and int(response["headers"]["Retry-After"]) >= 1
    finally:
        module.limiter.store.client.close()


@pytest.mark.parametrize(
    "event",
    [None, [], "GET /", 42, {"requestContext": "x"}, {"requestContext": {"http": ["x"]}},
     {"requestContext": {"identity": {"sourceIp": 7}}}],
)  # fmt: skip
def test_lambda_handler_answers_any_event_without_crashing(aws: ModuleType, event: Any) -> None:
    response = aws.handler(event, None)
    assert response["statusCode"] in (200, 400)
    assert json.loads(response["body"])
    if not isinstance(event, dict):
        assert response["statusCode"] == 400


def test_lambda_handler_keys_ipv6_callers_by_their_slash_64(aws: ModuleType) -> None:
    # ten addresses of one /64 are one caller, however each is spelled
    addresses = [f"2001:db8:3::{n:x}" for n in range(1, 11)]
    addresses[:2] = ["2001:DB8:3::1", "2001:db8:3:0::1"]
    statuses = [aws.handler(http_api_event(ip), None)["statusCode"] for ip in addresses]
    assert statuses == [200, 200, 200] + [429] * 7
    assert aws.client_key(http_api_event("2001:db8:3::99")) == "ip:2001:db8:3::/64"
    assert aws.client_key(rest_api_event("::ffff:203.0.113.7")) == "ip:203.0.113.7"


def test_lambda_cold_start_fails_loudly_without_credentials(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("UPSTASH_REDIS_REST_URL", raising=False)
    monkeypatch.setenv("UPSTASH_REDIS_REST_TOKEN", TOKEN)
    with pytest.raises(rl.ConfigurationError, match="UPSTASH_REDIS_REST_URL"):
        load(LAMBDA)


# -- Vercel, ASGI ------------------------------------------------------------------------------


@pytest.fixture
async def vercel(environment: None, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[ModuleType]:
    monkeypatch.setenv("VERCEL", "1")  # as on Vercel: its edge writes x-real-ip
    module = load(VERCEL)
    yield module
    await module.aclose()


def asgi_client(module: ModuleType, peer: str = "192.0.2.1") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=module.app, client=(peer, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://example.vercel.app")


async def test_asgi_app_limits_each_caller(vercel: ModuleType, endpoint: UpstashEndpoint) -> None:
    async with asgi_client(vercel) as client:
        first = await client.get("/")
        assert first.status_code == 200 and first.headers["ratelimit-remaining"] == "2"
        endpoint.reset_counters()
        assert [(await client.get("/items/1")).status_code for _ in range(2)] == [200, 200]
        denied = await client.get("/")
        assert denied.status_code == 429
        assert denied.headers["content-type"] == "application/problem+json"
        assert 1 <= int(denied.headers["retry-after"]) <= 120  # sliding window
        assert denied.json()["status"] == 429
        # Vercel's edge names the caller in x-real-ip
        other = await client.get("/", headers={"x-real-ip": "203.0.113.50"})
        assert other.status_code == 200 and other.headers["ratelimit-remaining"] == "2"
        for path in ("/health", "/health/"):  # exempt: no check, no request to Upstash
            health = await client.get(path)
            assert health.status_code == 200 and "ratelimit-limit" not in health.headers
    assert endpoint.requests == 4 and endpoint.commands == Counter({"EVALSHA": 4})


async def test_asgi_app_keys_ipv6_callers_by_their_slash_64(vercel: ModuleType) -> None:
    async with asgi_client(vercel) as client:
        addresses = ["2001:DB8:3::1", "2001:db8:3:0::1", "2001:db8:3::2", "2001:db8:3::ff"]
        statuses = [(await client.get("/", headers={"x-real-ip": ip})).status_code
                    for ip in addresses]  # fmt: skip
    assert statuses == [200, 200, 200, 429]


def test_asgi_app_off_vercel_ignores_a_forged_x_real_ip(environment: None) -> None:
    module = load(VERCEL)

    async def requests() -> list[int]:
        async with asgi_client(module) as client:
            return [(await client.get("/", headers={"x-real-ip": f"198.51.100.{n}"})).status_code
                    for n in range(4)]  # fmt: skip

    try:
        assert asyncio.run(requests()) == [200, 200, 200, 429]
    finally:
        module.limiter.store.client.close()


async def test_asgi_app_lifespan_closes_the_http_client(vercel: ModuleType) -> None:
    messages = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await vercel.app({"type": "lifespan"}, receive, send)
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert vercel.limiter.store.client._http._client.is_closed


def test_asgi_app_keeps_one_http_client_across_event_loops(environment: None) -> None:
    """Some runtimes serve each request on a new event loop: the example must neither reuse
    a loop-bound client on the next loop nor build (and leave open) one client per loop."""
    module = load(VERCEL)
    clients: list[Any] = []

    async def one_request() -> int:
        async with asgi_client(module) as client:
            status = (await client.get("/")).status_code
        clients.append(module.limiter.store.client._http._client)
        return status

    try:
        assert [asyncio.run(one_request()) for _ in range(3)] == [200, 200, 200]
        assert clients[0] is clients[1] is clients[2] and not clients[0].is_closed
    finally:
        module.limiter.store.client.close()
