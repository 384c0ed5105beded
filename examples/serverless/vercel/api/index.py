"""Rate limiting in a small ASGI app as deployed on Vercel (``api/index.py`` exporting ``app``),
over Upstash's REST API: one HTTP request per check.

Pure ASGI, no framework: the same ``app`` runs under uvicorn or any ASGI server. With Starlette
or FastAPI, use ``ratelimit.asgi.RateLimitMiddleware`` with the same ``AsyncUpstashStore``.

Environment:

- ``UPSTASH_REDIS_REST_URL``, ``UPSTASH_REDIS_REST_TOKEN``: the database (required);
- ``RATELIMIT_LIMITS``: the limits, default ``"10/second; 1000/day"``;
- ``RATELIMIT_PREFIX``: the first part of every key, default ``"api"``;
- ``RATELIMIT_ON_ERROR``: ``"allow"`` (default), ``"deny"`` or ``"raise"`` when Upstash fails.

An async HTTP client belongs to the event loop it first ran on, and a serverless runtime may
serve requests on a new loop: the limiter is built on first use in the running loop (and again
if the loop changes), and closed at lifespan shutdown when the runtime sends one.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
from collections.abc import Awaitable, Callable
from typing import Any

import ratelimit as rl

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

EXEMPT = frozenset({"/health"})

_limiter: rl.AsyncLimiter | None = None
_loop: asyncio.AbstractEventLoop | None = None


def build_limiter() -> rl.AsyncLimiter:
    """The limiter, configured from the environment."""
    return rl.AsyncLimiter(
        os.environ.get("RATELIMIT_LIMITS", "10/second; 1000/day"),
        store=rl.AsyncUpstashStore.from_env(),
        prefix=os.environ.get("RATELIMIT_PREFIX", "api"),
        on_error=os.environ.get("RATELIMIT_ON_ERROR", "allow"),  # type: ignore[arg-type]
    )


def limiter() -> rl.AsyncLimiter:
    """This event loop's limiter, built on first use."""
    global _limiter, _loop
    loop = asyncio.get_running_loop()
    if _limiter is None or _loop is not loop:
        _limiter, _loop = build_limiter(), loop
    return _limiter


async def aclose() -> None:
    """Close the limiter's HTTP client (lifespan shutdown, tests)."""
    global _limiter, _loop
    current, _limiter, _loop = _limiter, None, None
    if current is not None:
        await current.store.client.close()  # type: ignore[attr-defined]


def client_key(scope: Scope) -> str:
    """The caller's address. Vercel's edge sets ``x-real-ip`` itself (a client cannot forge
    it there); elsewhere, behind your own proxies, use ``ratelimit.keys.client_ip``."""
    for name, value in scope.get("headers") or ():
        if name == b"x-real-ip":
            return "ip:" + value.decode("latin-1")
    client = scope.get("client")
    return f"ip:{client[0] if client else 'unknown'}"


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["type"] != "http":
        return
    if scope["path"] in EXEMPT:
        await _respond(send, 200, {"status": "ok"}, [])
        return
    decision = await limiter().hit(client_key(scope))
    headers = [
        (b"ratelimit-limit", str(decision.limit).encode()),
        (b"ratelimit-remaining", str(decision.remaining).encode()),
        (b"ratelimit-reset", str(math.ceil(decision.reset_after)).encode()),
    ]
    if not decision.allowed:
        retry = max(1, math.ceil(decision.retry_after))
        headers.append((b"retry-after", str(retry).encode()))
        body = {"title": "Too Many Requests", "status": 429, "retry_after": retry}
        await _respond(send, 429, body, headers, b"application/problem+json")
        return
    await _respond(send, 200, {"message": "hello from Vercel", "path": scope["path"]}, headers)


async def _respond(send: Send, status: int, body: dict[str, Any],
                   headers: list[tuple[bytes, bytes]],
                   content_type: bytes = b"application/json") -> None:  # fmt: skip
    payload = json.dumps(body).encode()
    headers = [*headers, (b"content-type", content_type),
               (b"content-length", str(len(payload)).encode())]  # fmt: skip
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            limiter()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await aclose()
            await send({"type": "lifespan.shutdown.complete"})
            return
