"""Bad input end to end, on a real Redis: malformed ``X-Forwarded-For`` and ``Forwarded``,
huge headers, unicode and very long paths, odd methods. Whatever a client sends, the app
answers below 500, no exception escapes the integration, and every key written to Redis has a
TTL.

The ASGI app (FastAPI, with the pure ASGI middleware reading ``Forwarded`` and route
dependencies reading ``X-Forwarded-For`` and an API-key header) is driven in-process through
``httpx.ASGITransport`` with ``raise_app_exceptions=True``, so an exception anywhere in the
stack fails the test instead of turning into a 500 that might be missed; the peer is 127.0.0.1,
a trusted proxy. The Flask example runs through Werkzeug's test client with the same inputs.
(The parsing of each header is tabled in ``tests/test_keys.py``; this is the whole path.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

import ratelimit as rl
from ratelimit import keys
from tests.servers import Server

pytestmark = pytest.mark.redis_server

TRUSTED = ["127.0.0.1/32"]
LONG = 64 * 1024

FORWARDED_FOR = [
    "",
    ",,,",
    " , ,",
    "not an address",
    "1.2.3.4.5",
    "999.1.1.1",
    "::::",
    "[::1",
    "[::1]:",
    "1.1.1.1:99999",
    "2001:db8::1%eth0",
    "unknown",
    "_hidden",
    '"1.1.1.1"',
    "1.1.1.1, " * 5_000,
    "9" * LONG,
    "ünïcödé, 例え.テスト",
    "{hash}tag",
    "\t1.1.1.1\t",
]
FORWARDED = [
    'for="',
    "for=;;;",
    "for",
    "=",
    ";,;,",
    'for="[2001:db8::1"',
    "for=1.1.1.1;for=2.2.2.2",
    'for="\\"',
    'for="\\',
    "for=" + "a" * LONG,
    'for="1.1.1.1", ' * 3_000,
    "for=ü",
    'for="_hidden";by=unknown;host="x,y"',
]
PATHS = [
    "/ünïcödé/路径",
    "/" + "a" * 10_000,
    "/" + "é/" * 2_000,
    # Below Python's 4,300-digit limit of int(): Werkzeug's int converter raises past it (a
    # 500 from Flask's router, before any rate limiting), FastAPI answers 422.
    "/items/" + "9" * 4_000,
    "/items/%00",
    "/%ff%fe%fd",
    "/items/../../etc/passwd",
    "//double//slashes",
    "/a%2Fb",
    "/{braces}/[brackets]",
]
METHODS = ["PROPFIND", "TRACE", "FOO", "OPTIONS", "HEAD", "PATCH", "DELETE", "M" * 200]


@pytest.fixture
def server(servers: Any) -> Server:
    """The suite's shared Redis, emptied (this module writes to it, never breaks it)."""
    srv: Server = servers.get("any")
    srv.reset()
    return srv


def build_asgi_app(url: str) -> tuple[Any, rl.AsyncRedisStore]:
    from fastapi import Depends, FastAPI

    from ratelimit.asgi import RateLimitMiddleware
    from ratelimit.fastapi import RateLimit

    store = rl.AsyncRedisStore.from_url(url)
    app = FastAPI()
    every = rl.AsyncLimiter("1000/minute", store=store, prefix="bad-mw", on_error="raise")
    app.add_middleware(
        RateLimitMiddleware,
        limiter=every,
        key=keys.client_ip(trusted_proxies=TRUSTED, header="Forwarded"),
    )
    by_ip = RateLimit(
        rl.AsyncLimiter("1000/minute", store=store, prefix="bad-ip", on_error="raise"),
        key=keys.client_ip(trusted_proxies=TRUSTED),
    )
    by_api_key = RateLimit(
        rl.AsyncLimiter("1000/minute", store=store, prefix="bad-key", on_error="raise"),
        key=keys.header("X-API-Key", fallback=keys.client_ip()),
    )

    @app.get("/", dependencies=[Depends(by_ip), Depends(by_api_key)])
    async def index() -> dict[str, str]:
        return {"hello": "world"}

    @app.get("/items/{item_id}", dependencies=[Depends(by_ip)])
    async def item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    @app.api_route(
        "/{rest:path}", methods=[*METHODS, "GET", "POST", "PUT"], dependencies=[Depends(by_ip)]
    )
    async def anything(rest: str) -> dict[str, int]:
        return {"length": len(rest)}

    return app, store


@pytest.fixture
async def asgi(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    app, store = build_asgi_app(server.url)
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client
    await store.client.aclose()


def no_server_error(response: httpx.Response | Any, what: object) -> None:
    status = getattr(response, "status_code", None)
    assert status is not None and status < 500, (what, status, response.text[:300])


def every_key_has_a_ttl(server: Server) -> None:
    assert server.info("keyspace"), "nothing was written: the requests never reached Redis"
    assert server.keys_without_ttl() == []


async def test_asgi_malformed_forwarding_headers(asgi: httpx.AsyncClient, server: Server) -> None:
    for value in FORWARDED_FOR:
        r = await asgi.get("/", headers={"X-Forwarded-For": value.encode()})
        no_server_error(r, ("X-Forwarded-For", value[:80]))
        assert r.status_code == 200
    for value in FORWARDED:
        r = await asgi.get("/", headers={"Forwarded": value.encode()})
        no_server_error(r, ("Forwarded", value[:80]))
        assert r.status_code == 200
    every_key_has_a_ttl(server)


async def test_asgi_huge_and_unicode_headers(asgi: httpx.AsyncClient, server: Server) -> None:
    cases: list[dict[str, bytes]] = [
        {"X-API-Key": b"k" * LONG},
        {"X-API-Key": "clé-ünïcödé-例え".encode()},
        {"X-API-Key": b"{tag}\x7f"},
        {"X-API-Key": b""},
        {"X-Forwarded-For": b"198.51.100.7", "X-API-Key": "ü".encode() * LONG},
        {f"X-Junk-{i}": b"x" * 100 for i in range(500)},
        {"Forwarded": b"for=198.51.100.7", "X-Forwarded-For": b"\xff\xfe\xfd"},
    ]
    for headers in cases:
        r = await asgi.get("/", headers=headers)
        no_server_error(r, sorted(headers)[:3])
        assert r.status_code == 200
    every_key_has_a_ttl(server)


async def test_asgi_unicode_and_long_paths(asgi: httpx.AsyncClient, server: Server) -> None:
    for path in PATHS:
        r = await asgi.get(path, headers={"X-Forwarded-For": b"198.51.100.9"})
        no_server_error(r, path[:80])
    every_key_has_a_ttl(server)


async def test_asgi_odd_methods(asgi: httpx.AsyncClient, server: Server) -> None:
    for method in METHODS:
        r = await asgi.request(method, "/somewhere", headers={"X-Forwarded-For": b"198.51.100.10"})
        no_server_error(r, method[:20])
    every_key_has_a_ttl(server)


# -- WSGI: the Flask example ----------------------------------------------------------------------


@pytest.fixture
def flask_client(server: Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("TRUSTED_PROXIES", "127.0.0.1/32")
    from examples.flask_app import create_app

    app = create_app({"RATELIMIT_STORE": server.url, "TESTING": False})
    app.testing = False  # errors become 500s, as in production: the test sees them
    client = app.test_client()
    client.environ_base = {"REMOTE_ADDR": "127.0.0.1"}
    yield client
    ext = app.extensions.get("ratelimit")
    for limiter in getattr(ext, "limiters", ()):
        store = getattr(limiter, "store", None)
        if isinstance(store, rl.RedisStore):
            store.client.close()


def test_wsgi_bad_requests(flask_client: Any, server: Server) -> None:
    for value in FORWARDED_FOR:
        r = flask_client.get("/", headers={"X-Forwarded-For": value})
        no_server_error(r, ("X-Forwarded-For", value[:80]))
    for value in FORWARDED:
        r = flask_client.get("/", headers={"Forwarded": value})
        no_server_error(r, ("Forwarded", value[:80]))
    for path in PATHS:
        r = flask_client.get(path, headers={"X-Forwarded-For": "198.51.100.9"})
        no_server_error(r, path[:80])
    for method in METHODS:
        r = flask_client.open("/login", method=method, headers={"X-Forwarded-For": "198.51.100.10"})
        no_server_error(r, method[:20])
    r = flask_client.get("/", headers={f"X-Junk-{i}": "x" * 100 for i in range(500)})
    no_server_error(r, "many headers")
    every_key_has_a_ttl(server)
