"""A FastAPI API limited per API key, with an admin endpoint that gives one key its own limits.

Run it:   REDIS_URL=redis://localhost:6379/0 ADMIN_TOKEN=s3cret uvicorn examples.overrides_admin:app
          (every worker and server on that Redis applies an override at its next request;
           without REDIS_URL the limits live in this process only)
Try it:   curl -s localhost:8000/data -H 'X-API-Key: acme'            # 10 per minute
          curl -s -X PUT localhost:8000/admin/overrides/acme -H 'X-Admin-Token: s3cret' \\
               -H 'Content-Type: application/json' -d '{"limits": "1000/minute", "ttl": 86400}'
          curl -si localhost:8000/data -H 'X-API-Key: acme' | grep -i ratelimit  # 1000 now

- ``/data``: 10 requests per minute per API key (the middleware; without one, per client IP);
- ``PUT /admin/overrides/{api_key}``: that key's own limits (``{"limits": ..., "ttl": ...}``,
  ``ttl`` in seconds or null for no expiry), applied from its next request, keeping what it
  has spent this minute; ``GET`` shows them, ``DELETE`` returns the key to the default.
  Bad limits are a 422 naming the value; the admin endpoints need ``X-Admin-Token``.
"""

from __future__ import annotations

import os

from fastapi import Depends, FastAPI, Header, HTTPException, Request
from pydantic import BaseModel

import ratelimit as rl
from ratelimit.asgi import RateLimitMiddleware


class Override(BaseModel):
    limits: str
    ttl: float | None = None


def store_from_env() -> rl.MemoryStore | rl.AsyncRedisStore:
    """Redis when ``REDIS_URL`` is set, else the in-process memory store."""
    url = os.environ.get("REDIS_URL")
    return rl.AsyncRedisStore.from_url(url) if url else rl.MemoryStore()


def create_app(store: rl.MemoryStore | rl.AsyncRedisStore | None = None,
               admin_token: str | None = None) -> FastAPI:  # fmt: skip
    store = store if store is not None else store_from_env()
    token = admin_token if admin_token is not None else os.environ.get("ADMIN_TOKEN", "")
    limiter = rl.AsyncLimiter("10/minute", store=store, prefix="api")

    def identifier(api_key: str) -> str:  # the key the middleware limits (see `key=` below)
        return f"key:{api_key}"

    def key(request: Request) -> str:
        api_key = request.headers.get("x-api-key")
        if api_key:
            return identifier(api_key)
        return f"ip:{request.client.host}" if request.client else "ip:unknown"

    app = FastAPI(title="ratelimit overrides example")
    app.add_middleware(RateLimitMiddleware, limiter=limiter, key=key, exempt=["/admin/*"])

    async def admin(x_admin_token: str = Header("")) -> None:
        if not token or x_admin_token != token:
            raise HTTPException(403, "admin token required")

    @app.get("/data")
    async def data() -> dict[str, str]:
        return {"data": "..."}

    @app.put("/admin/overrides/{api_key}", dependencies=[Depends(admin)])
    async def set_override(api_key: str, override: Override) -> dict[str, object]:
        try:
            await limiter.overrides.set(identifier(api_key), override.limits, ttl=override.ttl)
        except rl.ConfigurationError as error:  # bad limits or ttl: nothing was written
            raise HTTPException(422, str(error)) from None
        # a StoreError is raised as it is (a 500): the admin must know the change failed
        return {"api_key": api_key, "limits": override.limits, "ttl": override.ttl}

    @app.get("/admin/overrides/{api_key}", dependencies=[Depends(admin)])
    async def get_override(api_key: str) -> dict[str, object]:
        policies = await limiter.overrides.get(identifier(api_key))
        if policies is None:
            return {"api_key": api_key, "limits": "default"}
        shown = [{"policy": repr(p), "limit": p.limit, "period": p.period} for p in policies]
        return {"api_key": api_key, "limits": shown}

    @app.delete("/admin/overrides/{api_key}", dependencies=[Depends(admin)])
    async def delete_override(api_key: str) -> dict[str, str]:
        await limiter.overrides.delete(identifier(api_key))
        return {"api_key": api_key, "limits": "default"}

    return app


app = create_app()
