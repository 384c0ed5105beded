"""A FastAPI app with a limit on every request and a tighter one on a route.

Run it:   uvicorn examples.fastapi_app:app --port 8000
          (REDIS_URL=redis://localhost:6379/0 shares the limits between workers and servers;
           TRUSTED_PROXIES=10.0.0.0/8 when it runs behind a reverse proxy)
Try it:   for i in $(seq 12); do curl -si localhost:8000/ | head -1; done

- every request: 10 per minute per client (the middleware; ``/health`` is exempt);
- ``/search``: 3 per 10 seconds per client, on top (a per-route dependency);
- ``/items/{item_id}``: every item shares the route's limit;
- ``/stream`` streams its body, ``/ws`` is a WebSocket: both are limited at the start only.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

from fastapi import Depends, FastAPI, WebSocket
from fastapi.responses import StreamingResponse

import ratelimit as rl
from ratelimit import keys
from ratelimit.asgi import RateLimitMiddleware
from ratelimit.fastapi import RateLimit


def store_from_env() -> rl.MemoryStore | rl.AsyncRedisStore:
    """Redis when ``REDIS_URL`` is set, else the in-process memory store."""
    url = os.environ.get("REDIS_URL")
    return rl.AsyncRedisStore.from_url(url) if url else rl.MemoryStore()


def create_app(store: rl.MemoryStore | rl.AsyncRedisStore | None = None) -> FastAPI:
    store = store if store is not None else store_from_env()
    proxies = os.environ.get("TRUSTED_PROXIES", "").replace(",", " ").split()  # "a, b" or "a b"
    client = keys.client_ip(trusted_proxies=proxies)

    app = FastAPI(title="ratelimit example")
    every_request = rl.AsyncLimiter("10/minute", store=store, prefix="example")
    app.add_middleware(RateLimitMiddleware, limiter=every_request, key=client, exempt=["/health"])
    search_limit = RateLimit(
        rl.AsyncLimiter(rl.FixedWindow(3, 10), store=store, prefix="example"), key=client
    )

    @app.get("/")
    async def index() -> dict[str, str]:
        return {"hello": "world"}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/search", dependencies=[Depends(search_limit)])
    async def search(q: str = "") -> dict[str, list[str]]:
        return {"results": [q] if q else []}

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def lines() -> AsyncIterator[bytes]:
            for i in range(5):
                yield f"line {i}\n".encode()
                await asyncio.sleep(0.05)  # a slow producer: the client sees each line arrive

        return StreamingResponse(lines(), media_type="text/plain")

    @app.websocket("/ws")
    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        text = await websocket.receive_text()
        await websocket.send_text(f"echo: {text}")
        await websocket.close()

    return app


app = create_app()
