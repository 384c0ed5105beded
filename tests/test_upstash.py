"""`UpstashStore` and `AsyncUpstashStore` through the real `upstash-redis` clients, over HTTP, to
the local REST endpoint (`tests/upstash_endpoint.py`) in front of a real Redis server.

What only the HTTP stores can get wrong: how many requests a check costs (counted at the
endpoint), NOSCRIPT recovery, the errors of a REST API (bad token, an unreachable or hung
endpoint, a proxy's error page), the client's retries, `from_env`, and the reply's shape. The
algorithm rules run on these stores through the shared conformance suite (the ``upstash``
lanes). Every test body runs on the sync and the async store.
"""

from __future__ import annotations

import asyncio
import time
import warnings
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from upstash_redis.errors import UpstashError

import ratelimit as rl
from ratelimit.stores.base import Plan
from tests.conftest import Harness
from tests.servers import Server
from tests.support import Clock
from tests.upstash_endpoint import UpstashEndpoint
from tests.upstash_lane import upstash_client

pytestmark = pytest.mark.redis_server

TOKEN = "test-upstash-token"
POLICIES = [rl.FixedWindow(50, 60), rl.SlidingWindow(40, 30), rl.TokenBucket(5, 1, burst=20)]


@pytest.fixture
def redis_server(servers: Any) -> Server:
    server = servers.get("any")
    server.reset()
    return server  # type: ignore[no-any-return]


@pytest.fixture
def endpoint(redis_server: Server) -> Iterator[UpstashEndpoint]:
    """An endpoint of this test's own, which it may stop, hang or break."""
    with UpstashEndpoint(redis_server.url, TOKEN) as endpoint:
        yield endpoint


@pytest.fixture(params=["sync", "async"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class Stores:
    """Builds stores and limiters of one kind on the test's endpoint; closes every client."""

    def __init__(self, kind: str, endpoint: UpstashEndpoint) -> None:
        self.is_async = kind == "async"
        self.endpoint = endpoint
        self.cls: Any = rl.AsyncUpstashStore if self.is_async else rl.UpstashStore
        self.clients: list[Any] = []

    def client(self, token: str = TOKEN, **options: Any) -> Any:
        client = upstash_client(self.endpoint.url, is_async=self.is_async, token=token, **options)
        self.clients.append(client)
        return client

    def store(self, token: str = TOKEN, **options: Any) -> Any:
        return self.cls(self.client(token, **options))

    def from_url(self, **kwargs: Any) -> Any:
        store = self.cls.from_url(self.endpoint.url, TOKEN, **kwargs)
        self.clients.append(store.client)
        return store

    def limiter(self, limits: Any = POLICIES, store: Any = None, **kwargs: Any) -> Harness:
        cls = rl.AsyncLimiter if self.is_async else rl.Limiter
        return Harness(cls(limits, store=self.store() if store is None else store, **kwargs))

    async def close(self) -> None:
        for client in self.clients:
            if self.is_async:
                await client.close()
            else:
                client.close()


@pytest.fixture
async def stores(kind: str, endpoint: UpstashEndpoint) -> AsyncIterator[Stores]:
    made = Stores(kind, endpoint)
    yield made
    await made.close()


async def _until_recovered(limiter: Harness, key: str, within: float = 3.0) -> rl.Decision:
    """Hits until the store answers again (the circuit breaker waits out its back-off)."""
    deadline = time.monotonic() + within
    while True:
        try:
            decision = await limiter.hit(key)
        except rl.StoreError:
            decision = None
        if decision is not None and decision.reason is None:
            return decision
        assert time.monotonic() < deadline, f"no recovery within {within}s: {decision}"
        await asyncio.sleep(0.05)


# -- one request per check ---------------------------------------------------------------------


@pytest.mark.parametrize("policies", [POLICIES[:1], POLICIES], ids=["one-policy", "three"])
async def test_one_request_per_check_whatever_the_policies(
    stores: Stores, endpoint: UpstashEndpoint, policies: list[rl.Policy]
) -> None:
    limiter = stores.limiter(policies)
    await limiter.peek("warm")  # the server has no script yet: EVALSHA, then EVAL
    assert endpoint.commands == Counter({"EVALSHA": 1, "EVAL": 1})
    endpoint.reset_counters()
    for i in range(12):
        assert (await limiter.hit(f"user:{i % 4}")).allowed
        await limiter.peek(f"user:{i % 4}")
    assert endpoint.requests == 24
    assert endpoint.commands == Counter({"EVALSHA": 24})  # no EVAL, no SCRIPT LOAD, no TIME
    assert endpoint.statuses == Counter({200: 24})


async def test_reset_is_one_request_of_exact_keys(
    stores: Stores, endpoint: UpstashEndpoint
) -> None:
    limiter = stores.limiter()
    await limiter.reset("user:1")  # the server learns the forget script (an override's state
    await limiter.hit("user:1")  # is deleted too: see lua/limiter.lua, forget)
    await limiter.hit("user:10")
    endpoint.reset_counters()
    await limiter.reset("user:1")
    assert endpoint.requests == 1 and endpoint.commands == Counter({"EVALSHA": 1})
    assert (await limiter.peek("user:1")).details[0].remaining == 50
    assert (await limiter.peek("user:10")).details[0].remaining == 49


async def test_noscript_sends_the_same_call_once_as_eval(
    stores: Stores, endpoint: UpstashEndpoint, redis_server: Server, clock: Clock
) -> None:
    limiter = stores.limiter(clock=clock)
    for _ in range(3):
        await limiter.hit("k")
    redis_server.flush_scripts()  # what a restart or a failover does
    endpoint.reset_counters()
    d = await limiter.hit("k")
    assert d.allowed and d.details[0].remaining == 46  # the state survived; one charge
    assert endpoint.requests == 2
    assert endpoint.commands == Counter({"EVALSHA": 1, "EVAL": 1})
    await limiter.hit("k")  # EVAL cached the script
    assert endpoint.commands == Counter({"EVALSHA": 2, "EVAL": 1})


# -- errors ------------------------------------------------------------------------------------


async def test_a_wrong_token_is_a_clear_store_error(
    stores: Stores, endpoint: UpstashEndpoint
) -> None:
    limiter = stores.limiter(store=stores.store(token="not-the-token"), on_error="raise")
    with pytest.raises(rl.StoreError, match="rejected the token") as caught:
        await limiter.hit("k")
    message = str(caught.value)
    assert "Unauthorized" in message and "UPSTASH_REDIS_REST_TOKEN" in message
    assert "not-the-token" not in message  # never echo a credential
    assert isinstance(caught.value.__cause__, UpstashError)
    assert endpoint.requests == 1 and endpoint.statuses == Counter({401: 1})  # not retried


async def test_a_wrong_token_follows_on_error(stores: Stores) -> None:
    limiter = stores.limiter(store=stores.store(token="not-the-token"), on_error="deny")
    d = await limiter.hit("k")
    assert not d.allowed and d.reason == "store_error" and d.retry_after > 0


async def test_a_server_error_is_a_store_error(
    stores: Stores, endpoint: UpstashEndpoint, redis_server: Server
) -> None:
    limiter = stores.limiter(on_error="raise")
    await limiter.peek("k")  # load the script
    with redis_server.client() as direct:  # a key of the limiter that is not a string
        direct.hset(limiter.limiter.keys("k")[0], "a", "1")
    endpoint.reset_counters()
    with pytest.raises(rl.StoreError, match=r"server answered an error: .*WRONGTYPE") as caught:
        await limiter.hit("k")
    assert isinstance(caught.value.__cause__, UpstashError)
    assert endpoint.commands == Counter({"EVALSHA": 1})  # neither retried nor sent as EVAL


async def test_a_proxy_error_page_is_a_store_error_not_retried(
    stores: Stores, endpoint: UpstashEndpoint
) -> None:
    limiter = stores.limiter(on_error="raise")
    endpoint.fail_next()  # an HTML 502: the client cannot parse it
    with pytest.raises(rl.StoreError, match="did not answer in Upstash's JSON") as caught:
        await limiter.hit("k")
    assert isinstance(caught.value.__cause__, ValueError)
    assert endpoint.requests == 1


@pytest.mark.parametrize("on_error", ["allow", "deny", "raise"])
async def test_a_stopped_endpoint_follows_on_error_fast(
    stores: Stores, endpoint: UpstashEndpoint, on_error: str
) -> None:
    """Real time is the subject: a refused connection must not cost the client's 3 s retry."""
    limiter = stores.limiter(on_error=on_error)
    assert (await limiter.hit("k")).allowed  # a warm, kept-alive connection
    endpoint.stop()
    started = time.perf_counter()
    if on_error == "raise":
        with pytest.raises(rl.StoreError, match=r"could not reach|request to .* failed") as caught:
            await limiter.hit("k")
        assert isinstance(caught.value.__cause__, httpx.TransportError)
    else:
        d = await limiter.hit("k")
        assert d.allowed is (on_error == "allow") and d.reason == "store_error"
    assert time.perf_counter() - started < 0.5
    endpoint.start()
    d = await _until_recovered(limiter, "k")
    assert d.allowed and d.details[0].remaining == 48


async def test_a_lost_reply_is_not_sent_again(
    stores: Stores, endpoint: UpstashEndpoint, redis_server: Server
) -> None:
    """Real time is the subject: the reply comes after the store's timeout. The script ran
    once on the server, and the store must not run it again."""
    limiter = stores.limiter(store=stores.from_url(timeout=0.15), on_error="raise")
    await limiter.hit("k")  # script loaded, connection warm
    endpoint.reset_counters()
    endpoint.reply_delay = 0.6
    started = time.perf_counter()
    with pytest.raises(rl.StoreError, match="may have run") as caught:
        await limiter.hit("k")
    took = time.perf_counter() - started
    assert isinstance(caught.value.__cause__, httpx.ReadTimeout)
    assert 0.14 <= took < 0.5, took
    await asyncio.sleep(max(0.0, 0.8 - took))  # past the delayed reply: any resend would be counted
    assert endpoint.requests == 1 and endpoint.commands == Counter({"EVALSHA": 1})
    endpoint.reply_delay = 0.0
    d = await _until_recovered(limiter, "k")
    assert d.details[0].remaining == 47  # 50 - the first hit - the lost one - this one


async def test_a_hung_endpoint_costs_one_timeout_not_one_per_check(
    stores: Stores, endpoint: UpstashEndpoint
) -> None:
    """Real time is the subject: the store's breaker answers while the endpoint hangs."""
    limiter = stores.limiter(store=stores.from_url(timeout=0.1), on_error="allow")
    await limiter.hit("k")
    endpoint.reset_counters()
    endpoint.reply_delay = 2.0
    started = time.perf_counter()
    decisions = [await limiter.hit("k") for _ in range(20)]
    assert time.perf_counter() - started < 0.8
    assert all(d.allowed and d.reason == "store_error" for d in decisions)
    assert endpoint.requests <= 2


# -- the client's retries, from_env ------------------------------------------------------------


async def test_a_retrying_client_gets_one_clear_warning(stores: Stores) -> None:
    with pytest.warns(RuntimeWarning, match=r"rest_retries=1.*counted twice") as caught:
        store = stores.store(rest_retries=1, rest_retry_interval=0.01)
    assert len(caught) == 1
    assert caught[0].filename == __file__.replace(".pyc", ".py")  # points at the caller
    limiter = stores.limiter(store=store)
    with warnings.catch_warnings(record=True) as later:
        warnings.simplefilter("always")
        for _ in range(3):
            await limiter.hit("k")
    assert later == []  # once per store, not per check


async def test_a_client_without_retries_gets_no_warning(stores: Stores) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        stores.store(rest_retries=0)
        stores.from_url()
    assert caught == []


async def test_from_env_builds_a_limiter_grade_client(
    stores: Stores, endpoint: UpstashEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UPSTASH_REDIS_REST_URL", endpoint.url)
    monkeypatch.setenv("UPSTASH_REDIS_REST_TOKEN", TOKEN)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        store = stores.cls.from_env(timeout=0.3, allow_telemetry=False)
    stores.clients.append(store.client)
    assert caught == []
    assert isinstance(store, stores.cls)
    assert store.client._http._retries == 0
    assert store.client._http._client.timeout == httpx.Timeout(0.3)
    d = await stores.limiter("5/second", store=store).hit("k")
    assert d.allowed and d.remaining == 4
    assert endpoint.last_headers["Authorization"] == f"Bearer {TOKEN}"
    default = stores.cls.from_env()
    stores.clients.append(default.client)
    assert default.client._http._client.timeout == httpx.Timeout(0.5)


@pytest.mark.parametrize("missing", ["UPSTASH_REDIS_REST_URL", "UPSTASH_REDIS_REST_TOKEN"])
def test_from_env_names_a_missing_variable(monkeypatch: pytest.MonkeyPatch, missing: str) -> None:
    monkeypatch.setenv("UPSTASH_REDIS_REST_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("UPSTASH_REDIS_REST_TOKEN", TOKEN)
    monkeypatch.delenv(missing)
    for cls in (rl.UpstashStore, rl.AsyncUpstashStore):
        with pytest.raises(rl.ConfigurationError, match=missing):
            cls.from_env()


@pytest.mark.parametrize("timeout", [0, -1, "1", None, True])
def test_from_url_rejects_a_bad_timeout(timeout: Any) -> None:
    for cls in (rl.UpstashStore, rl.AsyncUpstashStore):
        with pytest.raises(rl.ConfigurationError, match="timeout"):
            cls.from_url("http://127.0.0.1:9", TOKEN, timeout=timeout)


async def test_sync_and_async_clients_are_not_mixed(endpoint: UpstashEndpoint) -> None:
    sync = upstash_client(endpoint.url, is_async=False, token=TOKEN)
    aclient = upstash_client(endpoint.url, is_async=True, token=TOKEN)
    try:
        with pytest.raises(rl.ConfigurationError, match="AsyncUpstashStore"):
            rl.UpstashStore(aclient)
        with pytest.raises(rl.ConfigurationError, match="use UpstashStore"):
            rl.AsyncUpstashStore(sync)
    finally:
        sync.close()
        await aclient.close()


# -- concurrency -------------------------------------------------------------------------------


async def test_concurrent_checks_on_one_key_admit_exactly_the_limit(
    kind: str, redis_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sixteen threads sharing a sync client, or fifty tasks sharing an async one: many HTTP
    connections at once, one atomic script each."""
    import threading

    from tests import upstash_endpoint

    # socketserver listens with a backlog of 5, which resets bursts of new connections
    monkeypatch.setattr(upstash_endpoint._Server, "request_queue_size", 128)
    with UpstashEndpoint(redis_server.url, TOKEN) as endpoint:
        stores = Stores(kind, endpoint)
        try:
            limiter = stores.limiter(rl.FixedWindow(137, 3600), on_error="raise")
            if stores.is_async:

                async def worker() -> int:
                    return sum([(await limiter.hit("one-key")).allowed for _ in range(4)])

                admitted = sum(await asyncio.gather(*(worker() for _ in range(50))))
            else:
                sync = limiter.limiter
                assert isinstance(sync, rl.Limiter)
                counts: list[int] = []

                def thread() -> None:
                    counts.append(sum(sync.hit("one-key").allowed for _ in range(15)))

                threads = [threading.Thread(target=thread) for _ in range(16)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join(timeout=60)
                admitted = sum(counts)
            assert admitted == 137
        finally:
            await stores.close()


# -- keys shared with TCP clients --------------------------------------------------------------


async def test_http_and_tcp_clients_share_keys_and_decisions(
    stores: Stores, redis_server: Server, clock: Clock
) -> None:
    """The same database over HTTP and over TCP: one count, the same decisions."""
    if stores.is_async:
        tcp_client: Any = redis_server.async_client()
        tcp_store: Any = rl.AsyncRedisStore(tcp_client)
    else:
        tcp_client = redis_server.client()
        tcp_store = rl.RedisStore(tcp_client)
    try:
        # A bucket slow enough that its key cannot expire on the server's real clock between
        # two checks of the frozen test clock, however loaded the machine.
        policies = [*POLICIES[:2], rl.TokenBucket(5, 60, burst=20)]
        http = stores.limiter(policies, prefix="shared", clock=clock)
        tcp = Harness((rl.AsyncLimiter if stores.is_async else rl.Limiter)(
            policies, store=tcp_store, prefix="shared", clock=clock))  # fmt: skip
        assert http.limiter.keys("user:7") == tcp.limiter.keys("user:7")
        admitted = 0
        for i in range(30):
            admitted += (await (http if i % 2 else tcp).hit("user:7")).allowed
            if i < 19:  # before any denial (which each limiter may cache locally)
                assert await http.peek("user:7") == await tcp.peek("user:7")
            clock.advance(1)
        assert admitted == 20  # the bucket's burst, counted once for both

        def fresh(store: Any) -> Harness:
            cls = rl.AsyncLimiter if stores.is_async else rl.Limiter
            return Harness(cls(policies, store=store, prefix="shared", clock=clock))

        http_store = http.limiter.store
        assert await fresh(http_store).peek("user:7") == await fresh(tcp_store).peek("user:7")
        await http.reset("user:7")
        assert (await fresh(tcp_store).peek("user:7")).details[2].remaining == 20
        # server time (no clock=) agrees too: both read the same TIME
        http_now = stores.limiter(rl.FixedWindow(3, 60), prefix="now")
        tcp_now = Harness((rl.AsyncLimiter if stores.is_async else rl.Limiter)(
            rl.FixedWindow(3, 60), store=tcp_store, prefix="now"))  # fmt: skip
        got = [(await h.hit("k")).allowed for h in (http_now, tcp_now, http_now, tcp_now)]
        assert got == [True, True, True, False]
    finally:
        if stores.is_async:
            await tcp_client.aclose()
        else:
            tcp_client.close()


# -- the reply ---------------------------------------------------------------------------------


class _StubClient:
    """Answers every command with a canned reply, as upstash-redis hands it back."""

    def __init__(self, reply: object) -> None:
        self.reply = reply

    def execute(self, command: list[Any]) -> object:
        return self.reply


class _AsyncStubClient(_StubClient):
    async def execute(self, command: list[Any]) -> object:  # type: ignore[override]
        return self.reply


@pytest.mark.parametrize(
    "raw", [[1, 1, 4, 10_000, 0], ["1", "1", "4", "10000", "0"], [1, "1", 4, "10000", 0]]
)
async def test_the_reply_becomes_a_list_of_ints(raw: list[Any]) -> None:
    plan = Plan([rl.FixedWindow(5, 10)])
    keys = ["p:{k}:f"]
    store: Any = rl.UpstashStore(_StubClient(raw))  # type: ignore[arg-type]
    astore: Any = rl.AsyncUpstashStore(_AsyncStubClient(raw))  # type: ignore[arg-type]
    reply = store.evaluate(plan, keys, None, 1, True)
    areply = await astore.aevaluate(plan, keys, None, 1, True)
    assert reply == areply == [1, 1, 4, 10_000, 0]
    assert all(type(x) is int for x in reply)


@pytest.mark.parametrize("raw", [None, [], "OK", ["x"], [1, None], {"result": 1}])
async def test_an_unexpected_reply_is_a_store_error(raw: object) -> None:
    plan = Plan([rl.FixedWindow(5, 10)])
    store: Any = rl.UpstashStore(_StubClient(raw))  # type: ignore[arg-type]
    astore: Any = rl.AsyncUpstashStore(_AsyncStubClient(raw))  # type: ignore[arg-type]
    with pytest.raises(rl.StoreError, match="unexpected script reply"):
        store.evaluate(plan, ["k"], None, 1, True)
    with pytest.raises(rl.StoreError, match="unexpected script reply"):
        await astore.aevaluate(plan, ["k"], None, 1, True)


def test_repr_names_the_endpoint_never_the_token(endpoint: UpstashEndpoint) -> None:
    store = rl.UpstashStore.from_url(endpoint.url, TOKEN)
    try:
        assert endpoint.url in repr(store) and TOKEN not in repr(store)
    finally:
        store.client.close()
