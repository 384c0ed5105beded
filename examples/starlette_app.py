"""A Starlette app limited by rules: per route template and method, in one middleware.

Run it:   uvicorn examples.starlette_app:app --port 8000

- ``POST /login``: 5 per minute per client;
- ``/items/{item_id}``: 20 per minute per client, shared by every item;
- everything else: 100 per minute per client, except ``/health``;
- the key is the client IP, or the ``X-API-Key`` header when a client sends one.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

import ratelimit as rl
from ratelimit import keys
from ratelimit.asgi import RateLimitMiddleware, Rule


async def index(request: Request) -> PlainTextResponse:
    return PlainTextResponse("hello")


async def health(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


async def login(request: Request) -> JSONResponse:
    return JSONResponse({"token": "not-a-real-token"})


async def item(request: Request) -> JSONResponse:
    return JSONResponse({"id": request.path_params["item_id"]})


def create_app(store: rl.MemoryStore | None = None) -> Starlette:
    store = store if store is not None else rl.MemoryStore()

    def limiter(limits: str) -> rl.AsyncLimiter:
        return rl.AsyncLimiter(limits, store=store, prefix="starlette-example")

    rate_limit = Middleware(
        RateLimitMiddleware,
        limiter=limiter("100/minute"),
        key=keys.header("X-API-Key", fallback=keys.client_ip()),
        rules=[
            Rule("/login", limiter("5/minute"), methods=["POST"]),
            Rule("/items/{item_id:int}", limiter("20/minute")),
        ],
        exempt=["/health"],
        headers=("ietf", "draft-6"),
    )
    routes = [
        Route("/", index),
        Route("/health", health),
        Route("/login", login, methods=["POST"]),
        Route("/items/{item_id:int}", item),
    ]
    return Starlette(routes=routes, middleware=[rate_limit])


app = create_app()
