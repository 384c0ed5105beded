"""Leases in the web integrations: a Concurrency slot held for the request (ASGI, WSGI, FastAPI,
Flask, the decorator) and ``count=`` giving the cost back by the response status."""

from __future__ import annotations

from typing import Any

import pytest

import ratelimit as rl
from ratelimit.asgi import RateLimitMiddleware, Rule
from tests.web.conftest import Clock, header_map, http_scope, run_asgi, websocket_scope

IP = "ip:203.0.113.7"  # the key keys.client_ip() gives the test peer


def _slots(clock: Clock, limit: int = 1, lease: float = 30) -> rl.AsyncLimiter:
    return rl.AsyncLimiter(rl.Concurrency(limit, lease=lease), clock=clock)


async def _status(app: Any, path: str = "/") -> int:
    sent = await run_asgi(app, http_scope(path))
    return int(sent[0]["status"])


# --- ASGI -----------------------------------------------------------------------------------


async def test_asgi_holds_the_slot_until_the_last_body_message(clock: Clock) -> None:
    limiter = _slots(clock)
    seen: list[int] = []
    holder: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"a", "more_body": True})
        seen.append(await _status(holder[0]))  # streaming: the slot is still held
        await send({"type": "http.response.body", "body": b"b"})
        seen.append(await _status(holder[0]))  # the last body message released it

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    holder.append(RateLimitMiddleware(inner, limiter))
    middleware = RateLimitMiddleware(app, limiter)
    sent = await run_asgi(middleware, http_scope())
    assert sent[0]["status"] == 200
    assert header_map(sent[0])["ratelimit-policy"] == '"c1.30000";q=1;qu="concurrent-requests"'
    assert seen == [429, 200]
    assert (await limiter.peek(IP)).remaining == 1


async def test_asgi_denial_has_the_lease_bound_retry_after(clock: Clock) -> None:
    limiter = _slots(clock, lease=30)
    held = await limiter.acquire(IP)
    clock.advance(0.4)

    async def app(scope: Any, receive: Any, send: Any) -> None:  # never reached
        raise AssertionError("denied requests never reach the app")

    sent = await run_asgi(RateLimitMiddleware(app, limiter), http_scope())
    assert sent[0]["status"] == 429
    assert header_map(sent[0])["retry-after"] == "30"  # 29.6 s rounded up
    await held.release()


async def test_asgi_releases_when_the_app_raises_or_the_client_leaves(clock: Clock) -> None:
    limiter = _slots(clock)

    async def boom(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await run_asgi(RateLimitMiddleware(boom, limiter), http_scope())
    assert (await limiter.peek(IP)).remaining == 1

    after_disconnect: list[int] = []

    async def slow(scope: Any, receive: Any, send: Any) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        after_disconnect.append((await limiter.peek(IP)).remaining)  # freed at the disconnect

    await run_asgi(RateLimitMiddleware(slow, limiter), http_scope())
    assert after_disconnect == [1]


async def test_asgi_websocket_holds_its_slot_until_it_closes(clock: Clock) -> None:
    limiter = _slots(clock)
    during: list[int] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        during.append((await limiter.peek(IP)).remaining)
        second = await run_asgi(middleware, websocket_scope(), [{"type": "websocket.connect"}])
        during.append(second[0]["code"])  # refused before accept: the slot is taken
        await send({"type": "websocket.close", "code": 1000})

    middleware = RateLimitMiddleware(app, limiter)
    sent = await run_asgi(middleware, websocket_scope(), [{"type": "websocket.connect"}])
    assert sent[0]["type"] == "websocket.accept"
    assert during == [0, 1013]
    assert (await limiter.peek(IP)).remaining == 1


async def test_asgi_count_gives_the_cost_back_for_responses_it_does_not_count(
    clock: Clock,
) -> None:
    statuses = iter([200, 401, 200, 401, 401, 200])

    async def login(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": next(statuses), "headers": []})
        await send({"type": "http.response.body", "body": b""})

    limiter = rl.AsyncLimiter(rl.FixedWindow(3, 60), clock=clock)
    rule = Rule("/login", limiter, methods=["POST"], count=lambda status: status >= 400)
    app = RateLimitMiddleware(login, rules=[rule])
    got = [(await run_asgi(app, http_scope("/login", "POST")))[0]["status"] for _ in range(7)]
    # three failures use the limit up; the successes cost nothing; then 429
    assert got == [200, 401, 200, 401, 401, 429, 429]
    with pytest.raises(rl.ConfigurationError, match="count must be a callable"):
        Rule("/login", limiter, count=3)  # type: ignore[arg-type]


# --- WSGI -----------------------------------------------------------------------------------


def _wsgi_environ(path: str = "/", method: str = "GET") -> dict[str, Any]:
    return {"REQUEST_METHOD": method, "PATH_INFO": path, "REMOTE_ADDR": "203.0.113.7",
            "wsgi.url_scheme": "http", "SERVER_NAME": "x", "SERVER_PORT": "80"}  # fmt: skip


def test_wsgi_releases_when_the_server_closes_the_iterable(clock: Clock) -> None:
    from ratelimit.wsgi import Rule as WSGIRule
    from ratelimit.wsgi import WSGIRateLimitMiddleware

    limiter = rl.Limiter(rl.Concurrency(1, lease=30), clock=clock)
    closed: list[bool] = []

    class Body:
        def __iter__(self) -> Any:
            return iter([b"a", b"b"])

        def close(self) -> None:
            closed.append(True)

    def app(environ: Any, start_response: Any) -> Any:
        start_response("200 OK", [])
        return Body()

    middleware = WSGIRateLimitMiddleware(app, limiter)
    statuses: list[str] = []

    def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
        statuses.append(status)
        return lambda data: None

    first = middleware(_wsgi_environ(), start_response)
    assert b"".join(first) == b"ab"
    second = middleware(_wsgi_environ(), start_response)  # the first is not closed yet
    assert statuses == ["200 OK", "429 Too Many Requests"]
    first.close()  # type: ignore[attr-defined]
    assert closed == [True]
    list(middleware(_wsgi_environ(), start_response))
    assert statuses[-1] == "200 OK"
    del second

    def failing(environ: Any, start_response: Any) -> Any:
        start_response("401 Unauthorized", [])
        return [b"no"]

    window = rl.Limiter(rl.FixedWindow(2, 60), clock=clock)
    rule = WSGIRule("/login", window, count=lambda status: status >= 400)
    counted = WSGIRateLimitMiddleware(app, rules=[rule])
    for _ in range(3):  # successes cost nothing
        body = counted(_wsgi_environ("/login", "POST"), start_response)
        body.close()  # type: ignore[attr-defined]
    assert (
        window.peek("POST /login|" + IP, 0).remaining == 2
        or window.peek("/login|" + IP, 0).remaining == 2
    )
    failed = WSGIRateLimitMiddleware(failing, rules=[rule])
    for _ in range(3):
        body = failed(_wsgi_environ("/login", "POST"), start_response)
        getattr(body, "close", lambda: None)()
    assert statuses[-1] == "429 Too Many Requests"


# --- the decorator --------------------------------------------------------------------------


def test_decorator_holds_the_slot_for_the_call_and_releases_on_exception(clock: Clock) -> None:
    limiter = rl.Limiter(rl.Concurrency(1), clock=clock)
    inside: list[bool] = []

    @rl.rate_limit(limiter, key="k")
    def work(fail: bool) -> int:
        inside.append(limiter.peek("k").allowed)  # the slot is held during the call
        if fail:
            raise ValueError("failed")
        return 1

    assert work(False) == 1
    with pytest.raises(ValueError, match="failed"):
        work(True)
    assert inside == [False, False]
    assert limiter.peek("k").allowed  # released after both


async def test_async_decorator_holds_the_slot_for_the_call(clock: Clock) -> None:
    limiter = _slots(clock)

    @rl.rate_limit(limiter, key="k")
    async def work() -> None:
        with pytest.raises(rl.RateLimitExceeded):
            await work()  # the same key, while the first call holds the only slot

    await work()
    assert (await limiter.peek("k")).allowed


# --- Flask ----------------------------------------------------------------------------------


def test_flask_holds_the_slot_until_teardown_and_counts_failed_logins(clock: Clock) -> None:
    from flask import Flask

    from ratelimit.flask import FlaskRateLimit

    app = Flask(__name__)
    ext = FlaskRateLimit(app)
    slots = rl.Limiter(rl.Concurrency(1), clock=clock)
    inside: list[int] = []

    @app.route("/report")
    @ext.limit(slots)
    def report() -> str:
        with app.test_client() as other:  # a second request while this one holds the slot
            inside.append(other.get("/report").status_code)
        return "done"

    logins = iter([200, 401, 200, 401, 401, 200])

    @app.route("/login", methods=["POST"])
    @ext.limit(rl.Limiter(rl.FixedWindow(3, 60), clock=clock), count=lambda s: s >= 400)
    def login() -> tuple[str, int]:
        return "", next(logins)

    client = app.test_client()
    response = client.get("/report")
    assert response.status_code == 200 and inside == [429]
    assert 'qu="concurrent-requests"' in response.headers["RateLimit-Policy"]
    assert client.get("/report").status_code == 200  # released at teardown
    got = [client.post("/login").status_code for _ in range(7)]
    assert got == [200, 401, 200, 401, 401, 429, 429]
    with pytest.raises(rl.ConfigurationError, match="count must be a callable"):
        ext.limit("5/minute", count="yes")  # type: ignore[arg-type]


# --- FastAPI --------------------------------------------------------------------------------


async def test_fastapi_dependency_holds_the_slot_while_the_route_runs(clock: Clock) -> None:
    import httpx
    from fastapi import Depends, FastAPI

    from ratelimit.fastapi import RateLimit

    limiter = _slots(clock)
    during: list[int] = []
    app = FastAPI()
    held = RateLimit(limiter, name="r")  # counted under "r|<client>"

    @app.get("/report", dependencies=[Depends(held)])
    async def report() -> dict[str, bool]:
        during.append((await limiter.peek("r|" + IP)).remaining)
        return {"ok": True}

    @app.get("/fail", dependencies=[Depends(held)])
    async def fail() -> None:
        raise ValueError("boom")

    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 50000),
                                    raise_app_exceptions=False)  # fmt: skip
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        first = await client.get("/report")
        assert first.status_code == 200 and during == [0]
        assert (await client.get("/report")).status_code == 200  # released after the first
        assert (await client.get("/fail")).status_code == 500
    assert (await limiter.peek("r|" + IP)).remaining == 1  # released though the route raised
