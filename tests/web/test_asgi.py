"""The pure ASGI middleware, through Starlette apps (httpx's ASGI transport, Starlette's test
client for WebSockets) and raw scope/receive/send calls for the edge cases."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import http_sfv
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket, WebSocketDisconnect

import ratelimit as rl
from ratelimit import keys
from ratelimit.asgi import RateLimitMiddleware, Rule
from ratelimit.stores.base import Store
from tests.support import Clock
from tests.web.conftest import header_map, http_scope, run_asgi, websocket_scope


async def homepage(request: Request) -> PlainTextResponse:
    return PlainTextResponse("hello")


async def item(request: Request) -> JSONResponse:
    return JSONResponse({"id": request.path_params["item_id"]})


async def login(request: Request) -> PlainTextResponse:
    return PlainTextResponse("welcome")


async def stream(request: Request) -> StreamingResponse:
    async def chunks() -> AsyncIterator[bytes]:
        for i in range(5):
            yield f"chunk {i}\n".encode()

    return StreamingResponse(chunks(), media_type="text/plain")


async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text("hi")
    await websocket.close()


def starlette_app(**options: Any) -> Starlette:
    routes = [
        Route("/", homepage),
        Route("/health", homepage),
        Route("/items/{item_id:int}", item),
        Route("/login", login, methods=["GET", "POST"]),
        Route("/stream", stream),
        WebSocketRoute("/ws", echo),
    ]
    app = Starlette(routes=routes)
    app.add_middleware(RateLimitMiddleware, **options)
    return app


def client(app: Any, peer: str = "203.0.113.7") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(peer, 50000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


def sf(value: str) -> list[Any]:
    parsed = http_sfv.List()
    parsed.parse(value.encode())
    return list(parsed)


# --- the common path ----------------------------------------------------------------------------


async def test_allowed_requests_get_headers_then_429(clock: Clock) -> None:
    limiter = rl.AsyncLimiter(rl.FixedWindow(3, 60), clock=clock)
    app = starlette_app(limiter=limiter)
    async with client(app) as http:
        for remaining in (2, 1, 0):
            response = await http.get("/")
            assert response.status_code == 200
            assert response.text == "hello"
            (state,) = sf(response.headers["RateLimit"])
            assert state.params["r"] == remaining
            assert state.params["t"] == 60
            (policy,) = sf(response.headers["RateLimit-Policy"])
            assert (policy.value, dict(policy.params)) == ("f3.60000", {"q": 3, "w": 60})
            assert "Retry-After" not in response.headers

        clock.now += 20.5
        denied = await http.get("/")
        assert denied.status_code == 429
        assert denied.headers["Retry-After"] == "40"  # 39.5 s rounded up
        assert denied.headers["Content-Type"] == "application/problem+json"
        problem = denied.json()
        assert problem["status"] == 429
        assert problem["retry_after"] == 40
        assert problem["violated-policies"] == ["f3.60000"]
        (state,) = sf(denied.headers["RateLimit"])
        assert state.params["r"] == 0

        # another client is counted on its own
        async with client(app, peer="198.51.100.9") as other:
            assert (await other.get("/")).status_code == 200

        clock.now += 39.5  # exactly retry_after later: allowed, no sleeping
        assert (await http.get("/")).status_code == 200


async def test_header_modes(clock: Clock) -> None:
    limiter = rl.AsyncLimiter(rl.FixedWindow(5, 10), clock=clock)
    async with client(starlette_app(limiter=limiter, headers=("draft-6", "legacy"))) as http:
        response = await http.get("/")
        assert response.headers["RateLimit-Limit"] == "5"
        assert response.headers["RateLimit-Remaining"] == "4"
        assert response.headers["RateLimit-Reset"] == "10"
        assert response.headers["X-RateLimit-Remaining"] == "4"
        assert "RateLimit" not in response.headers
    async with client(starlette_app(limiter=limiter, headers=None)) as http:
        response = await http.get("/")
        assert not [h for h in response.headers if "ratelimit" in h.lower()]


async def test_sync_limiter_on_memory_store_is_accepted(clock: Clock) -> None:
    limiter = rl.Limiter(rl.FixedWindow(1, 60), clock=clock)
    async with client(starlette_app(limiter=limiter)) as http:
        assert (await http.get("/")).status_code == 200
        assert (await http.get("/")).status_code == 429


def test_sync_limiter_on_a_network_store_is_refused() -> None:
    class NetworkStore(Store):
        pass

    with pytest.raises(rl.ConfigurationError, match="block the event loop"):
        RateLimitMiddleware(homepage, limiter=rl.Limiter("1/second", store=NetworkStore()))  # type: ignore[arg-type]


async def test_text_builds_an_async_limiter_on_a_memory_store() -> None:
    middleware = RateLimitMiddleware(homepage, "2/minute")  # type: ignore[arg-type]
    assert isinstance(middleware.limiter, rl.AsyncLimiter)
    assert isinstance(middleware.limiter.store, rl.MemoryStore)


# --- rules, exemptions, keys, cost --------------------------------------------------------------


async def test_rules_by_template_share_a_limit(clock: Clock) -> None:
    items = rl.AsyncLimiter(rl.FixedWindow(2, 60), clock=clock)
    app = starlette_app(rules=[Rule("/items/{item_id:int}", items)])
    async with client(app) as http:
        assert (await http.get("/items/1")).status_code == 200
        assert (await http.get("/items/2")).status_code == 200
        assert (await http.get("/items/3")).status_code == 429
        # no default limiter: what no rule matches is not limited, and gets no headers
        for _ in range(5):
            response = await http.get("/")
            assert response.status_code == 200
            assert "RateLimit" not in response.headers


async def test_rules_by_method_and_first_match_wins(clock: Clock) -> None:
    strict = rl.AsyncLimiter(rl.FixedWindow(1, 60), clock=clock)
    default = rl.AsyncLimiter(rl.FixedWindow(100, 60), clock=clock)
    rules = [Rule("/login", strict, methods=["post"]), Rule("/login", default)]
    async with client(starlette_app(limiter=default, rules=rules)) as http:
        assert (await http.post("/login")).status_code == 200
        assert (await http.post("/login")).status_code == 429
        for _ in range(3):
            assert (await http.get("/login")).status_code == 200


async def test_two_rules_sharing_a_limiter_count_separately_unless_named(clock: Clock) -> None:
    shared = rl.AsyncLimiter(rl.FixedWindow(1, 60), clock=clock)
    separate = starlette_app(rules=[Rule("/", shared), Rule("/health", shared)])
    async with client(separate) as http:
        assert (await http.get("/")).status_code == 200
        assert (await http.get("/health")).status_code == 200
    together = rl.AsyncLimiter(rl.FixedWindow(1, 60), clock=clock)
    named = starlette_app(
        rules=[Rule("/", together, name="pages"), Rule("/health", together, name="pages")]
    )
    async with client(named) as http:
        assert (await http.get("/")).status_code == 200
        assert (await http.get("/health")).status_code == 429


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("*", "/anything", True),
        ("/static/*", "/static/css/site.css", True),
        ("/static/*", "/static", True),
        ("/static/*", "/staticky", False),
        ("/items/{item_id}", "/items/42", True),
        ("/items/{item_id}", "/items/42/parts", False),
        ("/items/{item_id:int}", "/items/abc", False),
        ("/files/{rest:path}", "/files/a/b/c.txt", True),
        ("/users/{uid:uuid}", "/users/8d3e4f5a-1b2c-4d5e-8f9a-0b1c2d3e4f5a", True),
        ("/exact", "/exact", True),
        ("/exact", "/exact/", False),
        ("/a.b", "/aXb", False),
    ],
)
async def test_path_patterns(pattern: str, path: str, matches: bool) -> None:
    limiter = rl.AsyncLimiter("1/minute")
    middleware = RateLimitMiddleware(_ok_app, rules=[Rule(pattern, limiter)])
    first = await run_asgi(middleware, http_scope(path))
    second = await run_asgi(middleware, http_scope(path))
    assert first[0]["status"] == 200
    assert second[0]["status"] == (429 if matches else 200)


@pytest.mark.parametrize("pattern", ["items", "", "/items/{id:nope}", "/items/{id"])
def test_bad_patterns(pattern: str) -> None:
    with pytest.raises(rl.ConfigurationError):
        Rule(pattern, "1/second")


async def test_root_path_is_removed_before_matching() -> None:
    middleware = RateLimitMiddleware(_ok_app, rules=[Rule("/login", "1/minute")])
    scope = http_scope("/api/login", root_path="/api")
    assert (await run_asgi(middleware, dict(scope)))[0]["status"] == 200
    assert (await run_asgi(middleware, dict(scope)))[0]["status"] == 429


async def test_exempt_paths_and_callables(clock: Clock) -> None:
    limiter = rl.AsyncLimiter(rl.FixedWindow(1, 60), clock=clock)
    async with client(starlette_app(limiter=limiter, exempt=["/health", "/items/*"])) as http:
        for _ in range(3):
            assert (await http.get("/health")).status_code == 200
            assert (await http.get("/items/7")).status_code == 200
        assert (await http.get("/")).status_code == 200
        assert (await http.get("/")).status_code == 429

    def sync_exempt(request: Request) -> bool:
        return request.headers.get("X-Internal") == "yes"

    async def async_exempt(request: Request) -> bool:
        return request.headers.get("X-Internal") == "yes"

    for exempt in (sync_exempt, async_exempt):
        limiter = rl.AsyncLimiter(rl.FixedWindow(1, 60), clock=clock)
        async with client(starlette_app(limiter=limiter, exempt=exempt)) as http:
            for _ in range(3):
                response = await http.get("/", headers={"X-Internal": "yes"})
                assert response.status_code == 200
            assert (await http.get("/")).status_code == 200
            assert (await http.get("/")).status_code == 429


async def test_custom_keys_sync_and_async(clock: Clock) -> None:
    def by_user(request: Request) -> str:
        return "user:" + request.headers.get("X-User", "anonymous")

    async def by_user_async(request: Request) -> str:
        return by_user(request)

    for key in (by_user, by_user_async):
        limiter = rl.AsyncLimiter(rl.FixedWindow(1, 60), clock=clock)
        async with client(starlette_app(limiter=limiter, key=key)) as http:
            assert (await http.get("/", headers={"X-User": "ann"})).status_code == 200
            assert (await http.get("/", headers={"X-User": "bob"})).status_code == 200
            assert (await http.get("/", headers={"X-User": "ann"})).status_code == 429
            await limiter.reset("user:ann")
            assert (await http.get("/", headers={"X-User": "ann"})).status_code == 200


async def test_built_in_keys_see_the_scope(clock: Clock) -> None:
    limiter = rl.AsyncLimiter(rl.FixedWindow(1, 60), clock=clock)
    key = keys.client_ip(trusted_proxies=["10.0.0.0/8"])
    async with client(starlette_app(limiter=limiter, key=key), peer="10.0.0.2") as http:
        forwarded = {"X-Forwarded-For": "198.51.100.1"}
        assert (await http.get("/", headers=forwarded)).status_code == 200
        assert (await http.get("/", headers=forwarded)).status_code == 429
        other = {"X-Forwarded-For": "198.51.100.2"}
        assert (await http.get("/", headers=other)).status_code == 200
    assert (await limiter.peek("ip:198.51.100.1")).remaining == 0


async def test_a_key_function_must_return_text() -> None:
    middleware = RateLimitMiddleware(_ok_app, "5/minute", key=lambda request: None)  # type: ignore[arg-type]
    with pytest.raises(rl.ConfigurationError, match="must return a str"):
        await run_asgi(middleware, http_scope())


async def test_cost_int_and_callable(clock: Clock) -> None:
    limiter = rl.AsyncLimiter(rl.FixedWindow(10, 60), clock=clock)
    async with client(starlette_app(limiter=limiter, cost=4)) as http:
        assert (await http.get("/")).status_code == 200
        assert (await http.get("/")).status_code == 200
        assert (await http.get("/")).status_code == 429  # 8 spent, 4 more would be 12

    async def by_size(request: Request) -> int:
        return int(request.headers.get("X-Units", "1"))

    limiter = rl.AsyncLimiter(rl.FixedWindow(10, 60), clock=clock)
    async with client(starlette_app(limiter=limiter, cost=by_size)) as http:
        assert (await http.get("/", headers={"X-Units": "9"})).status_code == 200
        assert (await http.get("/", headers={"X-Units": "2"})).status_code == 429
        assert (await http.get("/", headers={"X-Units": "1"})).status_code == 200


@pytest.mark.parametrize(
    "options",
    [
        {"limiter": 42},
        {"limiter": "1/second", "cost": -1},
        {"limiter": "1/second", "cost": 1.5},
        {"limiter": "1/second", "key": "ip"},
        {"limiter": "1/second", "headers": "rfc"},
        {"limiter": "1/second", "deny": "nope"},
        {"rules": ["/login"]},
        {"limiter": "1/second", "exempt": ["health"]},
    ],
)
def test_bad_options(options: dict[str, Any]) -> None:
    with pytest.raises(rl.ConfigurationError):
        RateLimitMiddleware(_ok_app, **options)


# --- deny responses -----------------------------------------------------------------------------


async def test_custom_deny_response_sync_and_async(clock: Clock) -> None:
    def deny(request: Request, decision: rl.Decision) -> PlainTextResponse:
        return PlainTextResponse(f"slow down, {request.url.path}", status_code=429)

    async def deny_async(request: Request, decision: rl.Decision) -> PlainTextResponse:
        return PlainTextResponse("busy", status_code=503, headers={"Retry-After": "120"})

    limiter = rl.AsyncLimiter(rl.FixedWindow(1, 60), clock=clock)
    async with client(starlette_app(limiter=limiter, deny=deny)) as http:
        await http.get("/")
        response = await http.get("/")
        assert (response.status_code, response.text) == (429, "slow down, /")
        assert response.headers["Retry-After"] == "60"
        assert "RateLimit" in response.headers

    limiter = rl.AsyncLimiter(rl.FixedWindow(1, 60), clock=clock)
    async with client(starlette_app(limiter=limiter, deny=deny_async)) as http:
        await http.get("/")
        response = await http.get("/")
        assert response.status_code == 503
        assert response.headers.get_list("Retry-After") == ["120"]  # its own value is kept


# --- store failures -----------------------------------------------------------------------------


class BrokenStore(rl.MemoryStore):
    async def aevaluate(self, *args: Any, **kwargs: Any) -> list[int]:
        raise rl.StoreError("connection refused")


async def test_store_error_allow_passes_without_headers() -> None:
    limiter = rl.AsyncLimiter("1/minute", store=BrokenStore(), on_error="allow")
    async with client(starlette_app(limiter=limiter)) as http:
        for _ in range(3):
            response = await http.get("/")
            assert response.status_code == 200
            assert "RateLimit" not in response.headers


async def test_store_error_deny_is_503_never_429() -> None:
    limiter = rl.AsyncLimiter("1/minute", store=BrokenStore(), on_error="deny")
    async with client(starlette_app(limiter=limiter)) as http:
        response = await http.get("/")
        assert response.status_code == 503
        assert int(response.headers["Retry-After"]) >= 1
        assert "RateLimit" not in response.headers
        assert response.json()["status"] == 503


async def test_store_error_raise_propagates() -> None:
    limiter = rl.AsyncLimiter("1/minute", store=BrokenStore(), on_error="raise")
    middleware = RateLimitMiddleware(_ok_app, limiter)
    with pytest.raises(rl.StoreError):
        await run_asgi(middleware, http_scope())


# --- raw ASGI: pass-through, headers once, streaming ---------------------------------------------


async def _ok_app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"x-app", b"1")]})
    await send({"type": "http.response.body", "body": b"ok"})


async def test_lifespan_and_unknown_scopes_pass_through() -> None:
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])
        message = await receive()
        await send({"type": message["type"] + ".complete"})

    middleware = RateLimitMiddleware(app, "1/hour")
    sent = await run_asgi(middleware, {"type": "lifespan"}, [{"type": "lifespan.startup"}])
    assert sent == [{"type": "lifespan.startup.complete"}]
    sent = await run_asgi(middleware, {"type": "custom"}, [{"type": "custom.event"}])
    assert sent == [{"type": "custom.event.complete"}]
    assert seen == ["lifespan", "custom"]


async def test_headers_added_once_on_start_and_body_untouched() -> None:
    chunks = [b"a" * 10, b"b" * 20, b""]
    original_headers = [(b"content-type", b"text/plain")]

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": original_headers})
        for i, chunk in enumerate(chunks):
            more = i < len(chunks) - 1
            await send({"type": "http.response.body", "body": chunk, "more_body": more})

    middleware = RateLimitMiddleware(app, "10/minute")
    sent = await run_asgi(middleware, http_scope())
    start, *bodies = sent
    assert [name for name, _ in start["headers"]] == [b"content-type", b"ratelimit-policy",
                                                      b"ratelimit"]  # fmt: skip
    assert original_headers == [(b"content-type", b"text/plain")]  # the app's list is not mutated
    assert [m["body"] for m in bodies] == chunks
    assert [m.get("more_body") for m in bodies] == [True, True, False]
    assert all("headers" not in m for m in bodies)


async def test_streaming_and_file_responses_keep_working(tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(bytes(range(256)) * 4096)  # 1 MiB

    async def file(request: Request) -> FileResponse:
        return FileResponse(big)

    app = Starlette(routes=[Route("/stream", stream), Route("/file", file)])
    app.add_middleware(RateLimitMiddleware, limiter="100/minute")
    sent = await run_asgi(app, http_scope("/stream"))
    bodies = [m["body"] for m in sent if m["type"] == "http.response.body" and m["body"]]
    assert bodies == [f"chunk {i}\n".encode() for i in range(5)]  # chunk by chunk, not buffered
    assert "ratelimit" in header_map(sent[0])

    async with client(app) as http:
        response = await http.get("/file")
        assert response.status_code == 200
        assert response.content == big.read_bytes()
        assert "RateLimit" in response.headers


async def test_denied_http_answer_is_an_asgi_response(clock: Clock) -> None:
    limiter = rl.AsyncLimiter(rl.FixedWindow(1, 60), clock=clock)
    middleware = RateLimitMiddleware(_ok_app, limiter, headers="draft-6")
    await run_asgi(middleware, http_scope())
    start, body = await run_asgi(middleware, http_scope())
    assert start["type"] == "http.response.start"
    assert start["status"] == 429
    headers = header_map(start)
    assert headers["retry-after"] == "60"
    assert headers["ratelimit-remaining"] == "0"
    assert int(headers["content-length"]) == len(body["body"])
    assert json.loads(body["body"])["retry_after"] == 60
    assert body.get("more_body", False) is False


async def test_a_request_with_no_client_gets_its_own_documented_key(clock: Clock) -> None:
    limiter = rl.AsyncLimiter(rl.FixedWindow(1, 60), clock=clock)
    middleware = RateLimitMiddleware(_ok_app, limiter)
    assert (await run_asgi(middleware, http_scope(client=None)))[0]["status"] == 200
    assert (await limiter.peek("peer:unknown")).remaining == 0
    assert (await limiter.peek("ip:127.0.0.1")).remaining == 1


async def test_partition_key_is_hashed(clock: Clock) -> None:
    limiter = rl.AsyncLimiter(rl.FixedWindow(5, 60), clock=clock)
    middleware = RateLimitMiddleware(_ok_app, limiter, partition_key_secret=b"k")
    (start, _) = await run_asgi(middleware, http_scope())
    value = header_map(start)["ratelimit"]
    assert "203.0.113.7" not in value
    assert isinstance(sf(value)[0].params["pk"], bytes)


# --- WebSockets ---------------------------------------------------------------------------------


async def _ws_app(scope: Any, receive: Any, send: Any) -> None:
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept", "headers": [(b"x-app", b"1")]})
    await send({"type": "websocket.close", "code": 1000})


async def test_websocket_allowed_gets_headers_on_accept(clock: Clock) -> None:
    limiter = rl.AsyncLimiter(rl.FixedWindow(2, 60), clock=clock)
    middleware = RateLimitMiddleware(_ws_app, limiter)
    sent = await run_asgi(middleware, websocket_scope(), [{"type": "websocket.connect"}])
    assert sent[0]["type"] == "websocket.accept"
    headers = header_map(sent[0])
    assert headers["x-app"] == "1"
    assert sf(headers["ratelimit"])[0].params["r"] == 1


async def test_websocket_denied_with_the_http_response_extension(clock: Clock) -> None:
    limiter = rl.AsyncLimiter(rl.FixedWindow(1, 60), clock=clock)
    middleware = RateLimitMiddleware(_ws_app, limiter)
    scope = websocket_scope(extensions={"websocket.http.response": {}})
    await run_asgi(middleware, dict(scope), [{"type": "websocket.connect"}])
    start, body = await run_asgi(middleware, dict(scope), [{"type": "websocket.connect"}])
    assert start["type"] == "websocket.http.response.start"
    assert start["status"] == 429
    assert header_map(start)["retry-after"] == "60"
    assert "ratelimit" in header_map(start)
    assert body["type"] == "websocket.http.response.body"
    assert json.loads(body["body"])["status"] == 429


async def test_websocket_denied_without_the_extension_is_closed_before_accept(
    clock: Clock,
) -> None:
    limiter = rl.AsyncLimiter(rl.FixedWindow(1, 60), clock=clock)
    middleware = RateLimitMiddleware(_ws_app, limiter)
    await run_asgi(middleware, websocket_scope(), [{"type": "websocket.connect"}])
    sent = await run_asgi(middleware, websocket_scope(), [{"type": "websocket.connect"}])
    assert [m["type"] for m in sent] == ["websocket.close"]
    assert sent[0]["code"] == 1013
    assert "retry in 60 s" in sent[0]["reason"]


def test_websocket_through_starlettes_test_client(clock: Clock) -> None:
    from starlette.testclient import WebSocketDenialResponse

    limiter = rl.AsyncLimiter(rl.FixedWindow(1, 60), clock=clock)
    with TestClient(starlette_app(limiter=limiter)) as test_client:
        with test_client.websocket_connect("/ws") as ws:
            assert ws.receive_text() == "hi"
        with pytest.raises(WebSocketDenialResponse) as denied, test_client.websocket_connect("/ws"):
            pass  # pragma: no cover
        assert denied.value.status_code == 429
        assert denied.value.headers["Retry-After"] == "60"


def test_websocket_exempt_and_unlimited_paths_still_connect(clock: Clock) -> None:
    limiter = rl.AsyncLimiter(rl.FixedWindow(1, 60), clock=clock)
    with TestClient(starlette_app(limiter=limiter, exempt=["/ws"])) as test_client:
        for _ in range(3):
            with test_client.websocket_connect("/ws") as ws:
                assert ws.receive_text() == "hi"
        with pytest.raises(WebSocketDisconnect), test_client.websocket_connect("/nowhere"):
            pass  # pragma: no cover


def test_the_middleware_needs_no_starlette_and_import_ratelimit_stays_light() -> None:
    import subprocess
    import sys

    code = (
        "import sys, ratelimit\n"
        "heavy = ('starlette', 'fastapi', 'flask', 'redis', 'asyncio', 'inspect')\n"
        "assert not [m for m in heavy if m in sys.modules], sys.modules.keys()\n"
        "ratelimit.keys, ratelimit.rate_limit\n"
        "assert not [m for m in heavy if m in sys.modules]\n"
        "import ratelimit.asgi, ratelimit.wsgi\n"
        "assert not [m for m in ('starlette', 'fastapi', 'flask') if m in sys.modules]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
