"""The local Upstash REST endpoint, driven by the real `upstash-redis` clients (sync and async).

These tests prove that `tests/upstash_endpoint.py` is a faithful enough stand-in for Upstash for
the Upstash stores to be tested against it, and pin down the client behaviour the stores rely on
(see `tests/upstash_notes.md`): errors, retries, timeouts, NOSCRIPT.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import redis
import upstash_redis
import upstash_redis.asyncio
from upstash_redis.errors import UpstashError

from tests.servers import Server, any_kind
from tests.support import free_port
from tests.upstash_endpoint import UpstashEndpoint

pytestmark = pytest.mark.redis_server

TOKEN = "local-test-token"
ARRAY_SCRIPT = "return {1, 2, tonumber(ARGV[1]) + 1, {4, KEYS[1]}, false}"


# -- a real Redis server ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    """A real server of our own (Upstash is Redis; Valkey when only Valkey is installed)."""
    with Server(any_kind()) as srv:
        yield srv


@pytest.fixture
def redis_url(server: Server) -> str:
    return server.url


@pytest.fixture
def direct(server: Server) -> Iterator[redis.Redis]:
    """redis-py straight to the server, for checking what the endpoint did; emptied first."""
    server.reset()
    with server.client() as client:
        yield client


# -- the endpoint and its clients ------------------------------------------------------------


@pytest.fixture
def endpoint(redis_url: str, direct: redis.Redis) -> Iterator[UpstashEndpoint]:
    with UpstashEndpoint(redis_url, TOKEN) as endpoint:
        yield endpoint


class Client:
    """One face for both upstash-redis clients, so each test body is written once."""

    def __init__(
        self,
        sync: upstash_redis.Redis | None = None,
        async_: upstash_redis.asyncio.Redis | None = None,
    ) -> None:
        self.sync = sync
        self.async_ = async_

    @property
    def raw(self) -> Any:
        return self.sync if self.sync is not None else self.async_

    async def __call__(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if self.sync is not None:
            return getattr(self.sync, method)(*args, **kwargs)
        return await getattr(self.async_, method)(*args, **kwargs)

    async def close(self) -> None:
        if self.sync is not None:
            self.sync.close()
        else:
            assert self.async_ is not None
            await self.async_.close()


def make_client(kind: str, url: str, token: str = TOKEN, **options: Any) -> Client:
    options.setdefault("rest_retries", 0)
    options.setdefault("allow_telemetry", False)
    if kind == "sync":
        return Client(sync=upstash_redis.Redis(url=url, token=token, **options))
    return Client(async_=upstash_redis.asyncio.Redis(url=url, token=token, **options))


@pytest.fixture(params=["sync", "async"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def clients(kind: str) -> AsyncIterator[list[Client]]:
    """Every client a test makes with `new` is closed at teardown."""
    made: list[Client] = []
    yield made
    for client in made:
        await client.close()


@pytest.fixture
def new(kind: str, endpoint: UpstashEndpoint, clients: list[Client]) -> Any:
    def new(url: str | None = None, **options: Any) -> Client:
        client = make_client(kind, url or endpoint.url, **options)
        clients.append(client)
        return client

    return new


@pytest.fixture
def client(new: Any) -> Client:
    return new()  # type: ignore[no-any-return]


# -- commands --------------------------------------------------------------------------------


async def test_strings_round_trip_one_request_per_command(
    client: Client, endpoint: UpstashEndpoint, direct: redis.Redis
) -> None:
    assert await client("set", "greeting", "héllo wörld") is True
    assert await client("get", "greeting") == "héllo wörld"
    assert await client("set", "status", "OK") is True
    assert await client("get", "status") == "OK"
    assert await client("get", "missing") is None
    assert direct.get("greeting") == "héllo wörld".encode()
    assert endpoint.requests == 5
    assert endpoint.commands == {"SET": 2, "GET": 3}
    assert endpoint.statuses == {200: 5}


async def test_incr_counts_in_the_real_server(
    client: Client, endpoint: UpstashEndpoint, direct: redis.Redis
) -> None:
    assert [await client("incr", "n") for _ in range(3)] == [1, 2, 3]
    assert await client("incrby", "n", 10) == 13
    assert direct.get("n") == b"13"
    assert endpoint.commands == {"INCR": 3, "INCRBY": 1}


async def test_eval_returns_nested_arrays_of_integers(
    client: Client, endpoint: UpstashEndpoint
) -> None:
    result = await client("eval", ARRAY_SCRIPT, keys=["k:{a}"], args=[9])
    assert result == [1, 2, 10, [4, "k:{a}"], None]
    assert endpoint.commands == {"EVAL": 1}


async def test_time_and_ping_status_replies(client: Client) -> None:
    seconds, micros = await client("time")
    assert abs(seconds - time.time()) < 5
    assert 0 <= micros < 1_000_000
    assert await client("ping") == "PONG"


# -- scripts ---------------------------------------------------------------------------------


async def test_evalsha_of_an_unloaded_script_raises_noscript_once(
    new: Any, endpoint: UpstashEndpoint
) -> None:
    # rest_retries=3: a JSON error reply is never retried by the client.
    client = new(rest_retries=3, rest_retry_interval=0)
    with pytest.raises(UpstashError, match=r"^NOSCRIPT No matching script"):
        await client("evalsha", "0" * 40, keys=["k"], args=[1])
    assert endpoint.requests == 1
    assert endpoint.statuses == {400: 1}


async def test_eval_caches_the_script_for_evalsha(
    client: Client, endpoint: UpstashEndpoint, direct: redis.Redis
) -> None:
    sha = direct.script_load(ARRAY_SCRIPT)
    direct.script_flush()
    with pytest.raises(UpstashError, match="NOSCRIPT"):
        await client("evalsha", sha, keys=["k"], args=[1])
    # The store's fallback: the same call as EVAL, which also caches the script.
    assert await client("eval", ARRAY_SCRIPT, keys=["k"], args=[1]) == [1, 2, 2, [4, "k"], None]
    assert await client("evalsha", sha, keys=["k"], args=[1]) == [1, 2, 2, [4, "k"], None]
    assert endpoint.commands == {"EVALSHA": 2, "EVAL": 1}


async def test_script_load_and_exists(client: Client, direct: redis.Redis) -> None:
    sha = await client("script_load", "return ARGV[1]")
    assert sha == direct.script_load("return ARGV[1]")
    assert await client("script_exists", sha) == [True]
    assert await client("evalsha", sha, args=["x"]) == "x"


async def test_script_errors_keep_the_redis_text(client: Client) -> None:
    await client("set", "s", "not a number")
    with pytest.raises(UpstashError, match=r"^ERR value is not an integer"):
        await client("eval", "return redis.call('INCR', KEYS[1])", keys=["s"])
    with pytest.raises(UpstashError, match=r"^MYCODE custom failure$"):
        await client("eval", "return redis.error_reply('MYCODE custom failure')")
    with pytest.raises(UpstashError, match=r"^ERR unknown command 'NOSUCH'"):
        await client("execute", ["NOSUCH", "x"])


# -- authentication and reachability ---------------------------------------------------------


async def test_wrong_token_raises_unauthorized(new: Any, endpoint: UpstashEndpoint) -> None:
    client = new(token="not-the-token", rest_retries=2, rest_retry_interval=0)
    with pytest.raises(UpstashError, match=r"^Unauthorized$"):
        await client("get", "a")
    assert endpoint.statuses == {401: 1}  # not retried
    assert endpoint.commands == {}  # never reached Redis


async def test_stopped_endpoint_refuses_connections_then_restarts_on_the_same_port(
    client: Client, endpoint: UpstashEndpoint
) -> None:
    assert await client("set", "a", "1") is True  # a pooled keep-alive connection now exists
    url = endpoint.url
    endpoint.stop()
    assert not endpoint.running
    with pytest.raises(httpx.ConnectError):
        await client("get", "a")
    endpoint.start()
    assert endpoint.url == url
    assert await client("get", "a") == "1"


async def test_connection_refused_error_per_client(kind: str, clients: list[Client]) -> None:
    client = make_client(kind, f"http://127.0.0.1:{free_port()}")
    clients.append(client)
    with pytest.raises(httpx.ConnectError) as caught:
        await client("get", "a")
    # The sync transport reports the errno, the async one (anyio) a summary.
    expected = "Connection refused" if kind == "sync" else "All connection attempts failed"
    assert expected in str(caught.value)


async def test_unreachable_redis_behind_the_endpoint(new: Any) -> None:
    dead = UpstashEndpoint(f"redis://127.0.0.1:{free_port()}/0", TOKEN, redis_timeout=1.0)
    with dead:
        client = new(url=dead.url)
        with pytest.raises(UpstashError, match=r"^ERR Redis is unavailable"):
            await client("get", "a")
        assert dead.statuses == {503: 1}


# -- retries and timeouts of the client ------------------------------------------------------


async def test_a_non_json_reply_is_retried_by_the_client(
    new: Any, endpoint: UpstashEndpoint, direct: redis.Redis
) -> None:
    client = new(rest_retries=1, rest_retry_interval=0)
    endpoint.fail_next(status=502)
    assert await client("incr", "n") == 1
    assert endpoint.requests == 2  # the same command was sent twice
    assert endpoint.statuses == {502: 1, 200: 1}
    assert direct.get("n") == b"1"


async def test_without_retries_a_non_json_reply_raises_json_decode_error(
    client: Client, endpoint: UpstashEndpoint
) -> None:
    endpoint.fail_next(status=502)
    with pytest.raises(json.JSONDecodeError):
        await client("incr", "n")
    assert endpoint.requests == 1


async def test_no_timeout_by_default_and_a_lost_reply_still_counts(
    client: Client, endpoint: UpstashEndpoint, direct: redis.Redis
) -> None:
    http = client.raw._http._client  # httpx.Client / httpx.AsyncClient
    assert http.timeout == httpx.Timeout(None)
    http.timeout = httpx.Timeout(0.2)
    endpoint.reply_delay = 1.0
    with pytest.raises(httpx.ReadTimeout):
        await client("incr", "n")
    assert direct.get("n") == b"1"  # the command ran; only its reply was lost
    endpoint.reply_delay = 0.0


# -- protocol details ------------------------------------------------------------------------


def test_raw_protocol(endpoint: UpstashEndpoint) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    b64 = {**auth, "Upstash-Encoding": "base64"}
    with httpx.Client(base_url=endpoint.url) as http:
        assert http.post("/", json=["SET", "k", "v"], headers=auth).json() == {"result": "OK"}
        assert http.post("/", json=["GET", "k"], headers=auth).json() == {"result": "v"}
        assert http.post("/", json=["GET", "k"], headers=b64).json() == {"result": "dg=="}
        assert http.post("/", json=["INCRBY", "i", 5], headers=b64).json() == {"result": 5}
        assert http.post("/", json=["GET", "nope"], headers=b64).json() == {"result": None}

        reply = http.post("/", json=["EVALSHA", "0" * 40, 0], headers=auth)
        assert reply.status_code == 400
        assert reply.json()["error"].startswith("NOSCRIPT ")

        reply = http.post("/", json=["GET", "k"], headers={"Authorization": "Bearer wrong"})
        assert (reply.status_code, reply.json()) == (401, {"error": "Unauthorized"})
        assert http.post("/", json=["GET", "k"]).status_code == 401
        assert http.post(f"/?_token={TOKEN}", json=["GET", "k"]).json() == {"result": "v"}

        assert http.post("/", content=b"{not json", headers=auth).status_code == 400
        assert http.post("/", json=["GET", None], headers=auth).status_code == 400
        assert http.get("/get/k", headers=auth).status_code == 404

        batch = [["SET", "p", "1"], ["INCR", "p"], ["NOSUCH"]]
        reply = http.post("/pipeline", json=batch, headers=b64)
        assert reply.status_code == 200
        first, second, third = reply.json()
        assert (first, second) == ({"result": "OK"}, {"result": 2})
        assert third["error"].startswith("ERR unknown command")


async def test_pipeline_and_transaction(client: Client, direct: redis.Redis) -> None:
    for make in ("pipeline", "multi"):
        batch = getattr(client.raw, make)()
        batch.set("p", "1")
        batch.incr("p")
        batch.get("p")
        result = batch.exec()
        if not isinstance(result, list):
            result = await result
        assert result == [True, 2, "2"]


async def test_plain_encoding(new: Any) -> None:
    client = new(rest_encoding=None)
    await client("set", "k", "héllo")
    assert await client("get", "k") == "héllo"
    assert await client("eval", ARRAY_SCRIPT, keys=["k"], args=[1]) == [1, 2, 2, [4, "k"], None]


async def test_headers_sent_by_the_client(new: Any, endpoint: UpstashEndpoint) -> None:
    client = new(allow_telemetry=True)
    await client("get", "a")
    headers = {key.lower(): value for key, value in endpoint.last_headers.items()}
    assert headers["authorization"] == f"Bearer {TOKEN}"
    assert headers["upstash-encoding"] == "base64"
    assert headers["content-type"] == "application/json"
    assert headers["upstash-sync-token"] == ""  # read_your_writes, no token received yet
    assert headers["upstash-telemetry-sdk"].startswith("py-upstash-redis@v")


def test_from_env(endpoint: UpstashEndpoint, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UPSTASH_REDIS_REST_URL", endpoint.url)
    monkeypatch.setenv("UPSTASH_REDIS_REST_TOKEN", TOKEN)
    with upstash_redis.Redis.from_env(allow_telemetry=False) as client:
        assert client.incr("env") == 1


def test_threads_share_one_client(endpoint: UpstashEndpoint, direct: redis.Redis) -> None:
    with upstash_redis.Redis(url=endpoint.url, token=TOKEN, rest_retries=0) as client:

        def work() -> None:
            for _ in range(25):
                client.incr("shared")

        threads = [threading.Thread(target=work) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert direct.get("shared") == b"200"
    assert endpoint.commands == {"INCR": 200}


def test_lifecycle(redis_url: str) -> None:
    endpoint = UpstashEndpoint(redis_url, TOKEN)
    assert "not started" in repr(endpoint)
    with pytest.raises(RuntimeError):
        _ = endpoint.url
    endpoint.start()
    assert endpoint.start() is endpoint  # idempotent
    port = endpoint.port
    endpoint.restart()
    assert endpoint.port == port
    assert "running" in repr(endpoint)
    endpoint.stop()
    endpoint.stop()  # idempotent
    assert "stopped" in repr(endpoint)
    endpoint.reset_counters()
    assert endpoint.requests == 0
