"""The Upstash lanes of the store matrix: the real ``upstash-redis`` clients, over HTTP, to the
local REST endpoint (`tests/upstash_endpoint.py`) in front of the suite's real Redis server.

`tests/conftest.py` builds the ``upstash`` and ``upstash-async`` lanes with
:func:`make_upstash_lane`, so the whole conformance suite runs over HTTP too. One endpoint
serves the session; it is stopped with the servers, before Redis. `Lane.server` is the Redis
server behind it, so tests that count commands or flush scripts see what the HTTP requests did.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import ratelimit as rl
from tests.servers import Server
from tests.upstash_endpoint import UpstashEndpoint

if TYPE_CHECKING:
    from tests.conftest import Lane

__all__ = ["TOKEN", "make_upstash_lane", "session_endpoint", "upstash_client"]

TOKEN = "upstash-lane-token"

# A test can never hang on a lost reply (the endpoint itself gives up on Redis after 5 s).
CLIENT_TIMEOUT = 10.0


def session_endpoint(servers: Any) -> tuple[Server, UpstashEndpoint]:
    """The session's Redis server and the endpoint in front of it, running, counters at zero.

    ``servers`` is conftest's session pool: the endpoint is kept on it and closed with it.
    """
    server = servers.get("any")
    assert isinstance(server, Server)
    endpoint: UpstashEndpoint | None = getattr(servers, "upstash_endpoint", None)
    if endpoint is None or endpoint.redis_url != server.url:
        endpoint = UpstashEndpoint(server.url, TOKEN).start()
        servers._stack.callback(endpoint.stop)  # LIFO: before the Redis server stops
        servers.upstash_endpoint = endpoint
    endpoint.start()  # a no-op unless a test left it stopped
    endpoint.reply_delay = 0.0
    endpoint.reset_counters()
    return server, endpoint


def upstash_client(url: str, *, is_async: bool, token: str = TOKEN, **options: Any) -> Any:
    """A real upstash-redis client as a limiter should have it: no retries, a timeout."""
    import upstash_redis
    import upstash_redis.asyncio

    from ratelimit.stores.upstash import _set_timeout

    options.setdefault("rest_retries", 0)
    options.setdefault("allow_telemetry", False)
    cls = upstash_redis.asyncio.Redis if is_async else upstash_redis.Redis
    client = cls(url=url, token=token, **options)
    _set_timeout(client, CLIENT_TIMEOUT)  # none by default
    return client


async def make_upstash_lane(name: str, servers: Any) -> AsyncIterator[Lane]:
    """Yields the ``upstash`` (sync) or ``upstash-async`` lane; closes its client after."""
    from tests.conftest import Lane

    server, endpoint = session_endpoint(servers)
    server.reset()
    if name.endswith("-async"):
        aclient = upstash_client(endpoint.url, is_async=True)
        try:
            yield Lane(name, rl.AsyncUpstashStore(aclient), server, aclient)
        finally:
            await aclient.close()
    else:
        client = upstash_client(endpoint.url, is_async=False)
        try:
            yield Lane(name, rl.UpstashStore(client), server, client)
        finally:
            client.close()
