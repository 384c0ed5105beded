"""Automatic pipelining of the async Redis store (``ratelimit/stores/_pipeline.py``), on the real
servers the suite starts.

Checks of concurrent tasks share writes and reads, yet each keeps its own reply and its own
error; a cancelled task neither desynchronises the connection nor loses another task's reply;
a server that dies under a batch fails every waiting check as ``on_error`` says, and the store
recovers by itself. Every wait here is bounded by ``asyncio.wait_for``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

import ratelimit as rl
from ratelimit.stores._pipeline import MAX_BATCH, AutoPipeline
from tests.servers import Server, ServerKind, any_kind

pytestmark = pytest.mark.redis_server

BOUND = 10.0
"""Seconds any gathering of tasks here may take, at most."""


@pytest.fixture(params=["redis", "valkey"])
def server(request: pytest.FixtureRequest, servers: Any) -> Server:
    srv: Server = servers.get(request.param)
    srv.reset()
    return srv


@pytest.fixture
async def store(server: Server) -> AsyncIterator[rl.AsyncRedisStore]:
    """A store built as the README says, ``from_url``, with 1 s timeouts: these tests are
    about each check's own reply, and on a loaded machine 50 ms can time a connect out."""
    s = rl.AsyncRedisStore.from_url(server.url, socket_timeout=1.0, socket_connect_timeout=1.0)
    yield s
    await s.client.aclose()


class Counting:
    """Counts the connections the store's pool lends out: one per direct command or batch."""

    def __init__(self, client: Any) -> None:
        self.pool = client.connection_pool
        self.borrowed = 0
        self._get = self.pool.get_connection

        async def get_connection(*args: Any, **kwargs: Any) -> Any:
            self.borrowed += 1
            return await self._get(*args, **kwargs)

        self.pool.get_connection = get_connection


async def gather(*aws: Any) -> list[Any]:
    return await asyncio.wait_for(asyncio.gather(*aws, return_exceptions=True), BOUND)


async def test_concurrent_checks_share_writes_and_each_gets_its_own_reply(
    server: Server,
) -> None:
    client = server.async_client()
    counting = Counting(client)
    pipe = AutoPipeline(client)
    replies = await gather(*(pipe.execute_command("ECHO", f"v{i}") for i in range(600)))
    assert replies == [f"v{i}".encode() for i in range(600)]
    # the first goes alone; the other 599 in batches of at most MAX_BATCH
    assert counting.borrowed <= 1 + -(-599 // MAX_BATCH)
    await client.aclose()


async def test_a_single_check_goes_straight_to_the_client(server: Server) -> None:
    client = server.async_client()
    counting = Counting(client)
    pipe = AutoPipeline(client)
    for i in range(5):
        assert await pipe.execute_command("ECHO", str(i)) == str(i).encode()
    assert counting.borrowed == 5  # each on its own: nothing was in flight
    await client.aclose()


async def test_an_error_reply_fails_its_own_command_only(server: Server) -> None:
    client = server.async_client()
    await client.set("text", "not a number")
    sha = await client.script_load("return ARGV[1]")
    pipe = AutoPipeline(client)
    calls: list[Any] = []
    for i in range(60):
        if i % 3 == 1:
            calls.append(pipe.execute_command("INCR", "text"))  # WRONGTYPE-like error reply
        elif i % 3 == 2:
            calls.append(pipe.execute_command("EVALSHA", "0" * 40, 0, i))  # NOSCRIPT
        else:
            calls.append(pipe.execute_command("EVALSHA", sha, 0, i))
    calls.append(pipe.execute_command("ECHO", True))  # cannot be encoded: DataError
    replies = await gather(*calls)
    from redis.exceptions import DataError, NoScriptError, ResponseError

    for i, reply in enumerate(replies[:60]):
        if i % 3 == 1:
            assert isinstance(reply, ResponseError) and not isinstance(reply, NoScriptError)
        elif i % 3 == 2:
            assert isinstance(reply, NoScriptError)
        else:
            assert reply == str(i).encode()
    assert isinstance(replies[60], DataError)
    assert await pipe.execute_command("ECHO", "after") == b"after"
    await client.aclose()


async def test_noscript_in_a_batch_sends_the_text_once_per_check(
    server: Server, store: rl.AsyncRedisStore
) -> None:
    limiter = rl.AsyncLimiter(rl.FixedWindow(100, 60), store=store, on_error="raise")
    await limiter.hit("warm")  # the script is known...
    server.flush_scripts()  # ...and forgotten, as after a restart
    server.reset_stats()
    decisions = await gather(*(limiter.hit("user") for _ in range(150)))
    assert sum(d.allowed for d in decisions) == 100
    assert all(d.reason is None for d in decisions)
    stats = server.commandstats()
    assert stats.get("eval", 0) <= 150  # at most one EVAL per check
    assert stats.get("evalsha", 0) + stats.get("eval", 0) <= 300  # at most two requests each


async def test_noscript_for_some_checks_of_a_batch_leaves_the_others(server: Server) -> None:
    client = server.async_client()
    pipe = AutoPipeline(client)
    sha = await client.script_load("return 7")
    replies = await gather(
        *(pipe.execute_command("EVALSHA", sha if i % 2 else "f" * 40, 0) for i in range(100))
    )
    from redis.exceptions import NoScriptError

    assert [r for i, r in enumerate(replies) if i % 2] == [7] * 50
    assert all(isinstance(r, NoScriptError) for i, r in enumerate(replies) if not i % 2)
    await client.aclose()


@pytest.mark.parametrize("policy", [rl.FixedWindow(137, 60), rl.TokenBucket(137, 60)])
async def test_many_tasks_admit_exactly_the_limit(
    store: rl.AsyncRedisStore, policy: rl.FixedWindow
) -> None:
    limiter = rl.AsyncLimiter(policy, store=store, on_error="raise", deny_cache=0)
    decisions = await gather(*(limiter.hit("user:1") for _ in range(500)))
    assert sum(d.allowed for d in decisions) == 137
    remaining = sorted(d.remaining for d in decisions if d.allowed)
    assert remaining == list(range(137))  # each check saw its own reply


async def test_a_cancelled_task_neither_desyncs_the_connection_nor_loses_a_reply(
    server: Server,
) -> None:
    client = server.async_client(socket_timeout=2.0)
    pipe = AutoPipeline(client)
    server.pause(0.2)  # every batch stays in flight while tasks are cancelled
    tasks = [asyncio.ensure_future(pipe.execute_command("ECHO", f"v{i}")) for i in range(200)]
    await asyncio.sleep(0.05)  # all sent: one alone, the rest in one write
    for task in tasks[::3]:
        task.cancel()
    await gather(*tasks)
    for i, task in enumerate(tasks):
        if i % 3 == 0:
            assert task.cancelled()
        else:
            assert task.result() == f"v{i}".encode()
    # the connections are in step: every later reply is the right one
    again = await gather(*(pipe.execute_command("ECHO", f"w{i}") for i in range(300)))
    assert again == [f"w{i}".encode() for i in range(300)]
    await client.aclose()


async def test_a_check_cancelled_before_its_batch_went_out_is_never_sent(
    server: Server,
) -> None:
    client = server.async_client()
    pipe = AutoPipeline(client)
    first = asyncio.ensure_future(pipe.execute_command("PING"))  # goes alone, stays in flight
    queued = [asyncio.ensure_future(pipe.execute_command("INCR", "n")) for _ in range(10)]
    await asyncio.sleep(0)  # they run up to their wait; the flush comes next turn
    for task in queued:
        task.cancel()
    await gather(first, *queued)
    assert all(task.cancelled() for task in queued)
    assert await pipe.execute_command("GET", "n") is None
    await client.aclose()


async def test_many_cancelled_checks_keep_the_limit_exact(store: rl.AsyncRedisStore) -> None:
    limiter = rl.AsyncLimiter(rl.FixedWindow(1000, 60), store=store, on_error="raise")
    tasks = [asyncio.ensure_future(limiter.hit("user")) for _ in range(300)]
    await asyncio.sleep(0)
    for task in tasks[1::2]:
        task.cancel()
    await gather(*tasks)
    done = [t.result() for t in tasks if not t.cancelled()]
    assert all(d.allowed for d in done)
    # whatever the cancelled ones did on the server, the counter and the replies agree
    peek = await limiter.peek("user")
    charged = 1000 - peek.remaining
    assert len(done) <= charged <= 300
    assert sorted(d.remaining for d in done)[-1] <= 999


@pytest.fixture(scope="module")
def kind() -> ServerKind:
    return any_kind()


@pytest.fixture
def own_server(kind: ServerKind) -> Iterator[Server]:
    with Server(kind) as srv:
        yield srv


async def test_a_server_killed_under_a_batch_fails_each_check_by_on_error(
    own_server: Server,
) -> None:
    store = rl.AsyncRedisStore.from_url(own_server.url, socket_timeout=2.0)
    limiter = rl.AsyncLimiter(rl.FixedWindow(10_000, 60), store=store, on_error="allow")
    raising = rl.AsyncLimiter(rl.FixedWindow(10_000, 60), store=store, on_error="raise",
                              prefix="raise")  # fmt: skip
    assert (await limiter.hit("warm")).reason is None
    own_server.pause(1.0)
    hits = [asyncio.ensure_future(limiter.hit(f"user:{i % 7}")) for i in range(100)]
    raised = [asyncio.ensure_future(raising.hit("user")) for i in range(20)]
    await asyncio.sleep(0.1)  # all in flight, held by the pause
    started = time.perf_counter()
    own_server.stop()
    decisions = await gather(*hits)
    errors = await gather(*raised)
    assert time.perf_counter() - started < 2.0
    assert all(isinstance(d, rl.Decision) for d in decisions)
    assert all(d.allowed and d.reason == "store_error" for d in decisions)
    assert all(isinstance(e, rl.StoreError) for e in errors)
    own_server.start()
    deadline = time.monotonic() + 5.0
    decision = await limiter.hit("after")
    while decision.reason is not None and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        decision = await limiter.hit("after")
    assert decision.reason is None
    # and concurrent checks after the outage get their own, right replies
    again = await gather(*(limiter.hit("again") for _ in range(50)))
    assert sorted(d.remaining for d in again) == list(range(10_000 - 50, 10_000))
    await store.client.aclose()


async def test_a_paused_server_times_checks_out_as_before(own_server: Server) -> None:
    store = rl.AsyncRedisStore.from_url(own_server.url)  # 50 ms timeouts
    limiter = rl.AsyncLimiter(rl.FixedWindow(10_000, 60), store=store, on_error="deny")
    assert (await limiter.hit("warm")).reason is None
    own_server.pause(0.4)
    started = time.perf_counter()
    decisions = await gather(*(limiter.hit(f"user:{i}") for i in range(50)))
    assert time.perf_counter() - started < 1.0
    assert all(not d.allowed and d.reason == "store_error" for d in decisions)
    await asyncio.sleep(0.5)
    deadline = time.monotonic() + 5.0
    decision = await limiter.hit("after")
    while decision.reason is not None and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        decision = await limiter.hit("after")
    assert decision.reason is None
    again = await gather(*(limiter.hit("again") for _ in range(50)))
    assert sorted(d.remaining for d in again) == list(range(10_000 - 50, 10_000))
    await store.client.aclose()


def test_the_store_works_on_each_event_loop_it_is_used_on(server: Server) -> None:
    store = rl.AsyncRedisStore.from_url(server.url)
    limiter = rl.AsyncLimiter(rl.FixedWindow(100, 60), store=store, on_error="raise")

    async def burst() -> list[rl.Decision]:
        decisions = await gather(*(limiter.hit("user") for _ in range(30)))
        await store.client.connection_pool.disconnect()  # its connections belong to this loop
        return decisions

    first = asyncio.run(burst())
    second = asyncio.run(burst())
    assert sum(d.allowed for d in first + second) == 60


@pytest.mark.cluster
async def test_a_cluster_client_sends_each_check_on_its_own(servers: Any) -> None:
    cluster = servers.get("cluster")
    client = cluster.async_client()
    assert not AutoPipeline.supports(client)
    store = rl.AsyncRedisStore(client)
    limiter = rl.AsyncLimiter(rl.FixedWindow(40, 60), store=store, on_error="raise")
    decisions = await gather(*(limiter.hit(f"user:{i % 5}") for i in range(250)))
    assert sum(d.allowed for d in decisions) == 200
    await client.aclose()


async def test_a_single_connection_client_is_not_pipelined(server: Server) -> None:
    client = server.async_client(single_connection_client=True)
    assert not AutoPipeline.supports(client)
    await client.aclose()


async def test_a_restarted_server_is_one_outage_not_one_per_stale_connection(
    own_server: Server,
) -> None:
    """Concurrent checks spread over a few pooled connections; when the server restarts they
    all die. Each one used to fail a later batch, re-opening the breaker once per connection
    well after the server was back (a load test saw 4 s of on_error decisions)."""
    store = rl.AsyncRedisStore.from_url(own_server.url)
    events: list[str] = []
    limiter = rl.AsyncLimiter(rl.FixedWindow(10**6, 60), store=store, on_error="allow",
                              on_event=lambda e: events.append(e.kind))  # fmt: skip
    began = time.perf_counter()
    by_on_error: list[float] = []
    stop = False

    async def client(i: int) -> None:
        while not stop:
            decision = await limiter.hit(f"user:{i}")
            if decision.reason is not None:
                by_on_error.append(time.perf_counter() - began)
            await asyncio.sleep(0.001)

    tasks = [asyncio.ensure_future(client(i)) for i in range(32)]
    await asyncio.sleep(0.3)
    await asyncio.to_thread(own_server.restart)
    up = time.perf_counter() - began
    await asyncio.sleep(2.5)
    stop = True
    await gather(*tasks)
    assert by_on_error, "the restart went unnoticed"
    assert events.count("breaker_open") == 1, events.count("breaker_open")
    assert max(by_on_error) < up + 1.5, (up, max(by_on_error))
    await store.client.aclose()
