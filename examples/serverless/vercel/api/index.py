"""Rate limiting in a small ASGI app as deployed on Vercel (``api/index.py`` exporting ``app``),
over Upstash's REST API: one HTTP request per check.

Pure ASGI, no framework: the same ``app`` runs under uvicorn or any ASGI server. With Starlette
or FastAPI, use ``ratelimit.asgi.RateLimitMiddleware`` with an ``AsyncUpstashStore``.

Environment:

- ``UPSTASH_REDIS_REST_URL``, ``UPSTASH_REDIS_REST_TOKEN``: the database (required);
- ``RATELIMIT_LIMITS``: the limits, default ``"10/second; 1000/day"``;
- ``RATELIMIT_PREFIX``: the first part of every key, default ``"api"``;
- ``RATELIMIT_ON_ERROR``: ``"allow"`` (default), ``"deny"`` or ``"raise"`` when Upstash fails;
- ``TRUSTED_PROXIES``: off Vercel, the addresses of your own reverse proxies (comma-separated).

Why a sync limiter in an async app: a serverless runtime may serve each request on a new event
loop, and an async HTTP client belongs to the loop it first ran on, so an async limiter would
need a new client (and leave the old one open) each time the loop changes. The sync client
belongs to no loop: the process keeps one, with its keep-alive connection, for every request,
and each check runs in a worker thread (``asyncio.to_thread``) so it never blocks the loop.
The client is closed at lifespan shutdown when the runtime sends one.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from typing import Any

import ratelimit as rl
from ratelimit import keys
from ratelimit.headers import Renderer

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

EXEMPT = frozenset({"/health"})

limiter = rl.Limiter(
    os.environ.get("RATELIMIT_LIMITS", "10/second; 1000/day"),
    store=rl.UpstashStore.from_env(),
    prefix=os.environ.get("RATELIMIT_PREFIX", "api"),
    on_error=os.environ.get("RATELIMIT_ON_ERROR", "allow"),  # type: ignore[arg-type]
)
renderer = Renderer("draft-6")  # RateLimit-Limit/Remaining/Reset, as the integrations send them


def build_key() -> Callable[[Any], str]:
    """The library's client-IP key. On Vercel (``VERCEL`` is set there) the edge writes
    ``x-real-ip`` itself, so a client cannot forge it: it is read from whatever peer the
    runtime reports. Elsewhere the direct peer, or ``X-Forwarded-For`` from the proxies
    named in ``TRUSTED_PROXIES``. Either way IPv6 callers are grouped by /64 and each address
    is spelled one way."""
    if os.environ.get("VERCEL"):
        return keys.client_ip(trusted_proxies=["0.0.0.0/0", "::/0"], header="X-Real-IP")
    trusted = os.environ.get("TRUSTED_PROXIES", "").replace(",", " ").split()
    return keys.client_ip(trusted_proxies=trusted)


client_key = build_key()


def exempt(path: str) -> bool:
    """``/health`` and ``/health/`` alike (a trailing slash reaches the same handler here)."""
    return (path.rstrip("/") or "/") in EXEMPT


async def aclose() -> None:
    """Close the limiter's HTTP client (lifespan shutdown, tests)."""
    limiter.store.client.close()  # type: ignore[attr-defined]


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["type"] != "http":
        return
    if exempt(scope["path"]):
        await _respond(send, 200, json.dumps({"status": "ok"}).encode(), [])
        return
    decision = await asyncio.to_thread(limiter.hit, client_key(scope))
    if not decision.allowed:
        status, fields, body = renderer.deny(decision)
        await _respond(send, status, body, fields)
        return
    body = json.dumps({"message": "hello from Vercel", "path": scope["path"]}).encode()
    headers = [*renderer.fields(decision), ("Content-Type", "application/json")]
    await _respond(send, 200, body, headers)


async def _respond(send: Send, status: int, body: bytes, headers: list[tuple[str, str]]) -> None:
    if not any(name.lower() == "content-type" for name, _ in headers):
        headers = [*headers, ("Content-Type", "application/json")]
    if not any(name.lower() == "content-length" for name, _ in headers):
        headers = [*headers, ("Content-Length", str(len(body)))]
    raw = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await aclose()
            await send({"type": "lifespan.shutdown.complete"})
            return
