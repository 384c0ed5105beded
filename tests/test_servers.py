"""Self-tests of `tests/servers.py`: the real servers and cluster the suite starts for itself."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

try:
    from tests.servers import (
        HOST,
        KIND_NAMES,
        Cluster,
        Server,
        ServerError,
        ServerKind,
        available_servers,
        find_kind,
        free_port,
        lane_kinds,
        require_or_skip,
    )
except ImportError:  # no tests/__init__.py and the repository root is not on sys.path
    from servers import (  # type: ignore[no-redef,import-not-found]
        HOST,
        KIND_NAMES,
        Cluster,
        Server,
        ServerError,
        ServerKind,
        available_servers,
        find_kind,
        free_port,
        lane_kinds,
        require_or_skip,
    )

pytestmark = pytest.mark.redis_server

# KEYS[1], KEYS[2]: two keys of one hash slot. ARGV[1]: a value. Returns both values after SET.
SET_BOTH = """
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], ARGV[1])
return redis.call('MGET', KEYS[1], KEYS[2])
"""


@pytest.fixture(scope="module", params=lane_kinds())
def kind(request: pytest.FixtureRequest) -> ServerKind:
    """Each server kind, skipped (or failed, under RATELIMIT_REQUIRE_SERVERS=1) when missing."""
    found = find_kind(request.param)
    if found is None:
        require_or_skip(f"no {request.param} server binary found")
    return found


@pytest.fixture(scope="module")
def server(kind: ServerKind) -> Iterator[Server]:
    """One shared server per kind for the tests that don't crash it."""
    with Server(kind) as srv:
        yield srv


@pytest.fixture
def r(server: Server) -> Iterator[redis.Redis]:
    """A client of the shared server, on an emptied server."""
    server.reset()
    with server.client(decode_responses=True) as client:
        yield client


def test_available_servers_report_name_paths_and_version() -> None:
    for k in available_servers():
        assert k.name in KIND_NAMES
        assert k.server.is_file()
        assert k.cli.is_file()
        assert k.version[0].isdigit(), k.version


def test_free_port_with_bus_leaves_the_bus_port_free() -> None:
    port = free_port(with_bus=True)
    assert 0 < port <= 65535 - 10000
    assert free_port() != port


def test_start_and_ping(server: Server, r: redis.Redis) -> None:
    assert server.running
    assert server.host == HOST
    assert server.url == f"redis://{HOST}:{server.port}/0"
    assert r.ping() is True
    with redis.Redis.from_url(server.url) as by_url:
        assert by_url.ping() is True


async def test_async_client_pings(server: Server) -> None:
    client = server.async_client()
    try:
        assert await client.ping() is True
    finally:
        await client.aclose()


def test_restart_keeps_the_port_and_loses_the_data(kind: ServerKind) -> None:
    with Server(kind) as srv, srv.client() as client:
        port = srv.port
        client.set("k", "v")
        srv.stop()
        assert not srv.running
        started = time.monotonic()
        with pytest.raises(redis.ConnectionError):
            client.ping()
        assert time.monotonic() - started < 1.0  # the handed-out client does not retry
        srv.restart()
        assert srv.port == port
        assert srv.running
        assert client.get("k") is None
    assert not srv.running


def test_an_unclosed_server_dies_with_the_interpreter(kind: ServerKind) -> None:
    """The atexit safety net kills a server that was started and never closed."""
    code = (
        "from servers import Server, find_kind\n"
        f"print(Server(find_kind({kind.name!r})).start().port)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).parent,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parent)},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    port = int(done.stdout.split()[-1])
    with pytest.raises(ConnectionRefusedError), socket.create_connection((HOST, port), timeout=1):
        pass


def test_a_server_that_cannot_start_raises_with_its_log(kind: ServerKind) -> None:
    srv = Server(kind, args=["--no-such-option", "1"])
    try:
        with pytest.raises(ServerError, match="no-such-option"):
            srv.start()
        assert not srv.running
    finally:
        srv.close()


def test_pause_blocks_a_command_for_about_the_pause(server: Server, r: redis.Redis) -> None:
    server.pause(0.5)
    started = time.monotonic()
    assert r.ping() is True
    elapsed = time.monotonic() - started
    assert 0.35 < elapsed < 3.0, elapsed


def test_flush_scripts_forgets_loaded_scripts(server: Server, r: redis.Redis) -> None:
    sha = r.script_load("return 1")
    assert r.script_exists(sha) == [True]
    server.flush_scripts()
    assert r.script_exists(sha) == [False]
    with pytest.raises(redis.exceptions.NoScriptError):
        r.evalsha(sha, 0)


def test_commandstats_count_evalsha(server: Server, r: redis.Redis) -> None:
    sha = r.script_load("return 1")
    server.reset_stats()
    for _ in range(3):
        assert r.evalsha(sha, 0) == 1
    assert r.eval("return 2", 0) == 2
    stats = server.commandstats()
    assert stats["evalsha"] == 3
    assert stats["eval"] == 1


def test_keys_without_ttl(server: Server, r: redis.Redis) -> None:
    r.set("forever", 1)
    r.set("expiring", 1, px=60_000)
    assert server.keys_without_ttl() == ["forever"]


@pytest.mark.cluster
async def test_cluster_runs_a_hash_tagged_multi_key_eval(kind: ServerKind) -> None:
    with Cluster(kind) as cluster:
        assert len(cluster.startup_nodes) == 3
        for node in cluster.nodes:
            info = node.cluster_info()
            assert info["cluster_state"] == "ok"
            assert info["cluster_size"] == "3"
        with cluster.client(decode_responses=True) as rc:
            assert rc.eval(SET_BOTH, 2, "{user:1}:a", "{user:1}:b", "x") == ["x", "x"]
        arc = cluster.async_client(decode_responses=True)
        try:
            assert await arc.eval(SET_BOTH, 2, "{user:2}:a", "{user:2}:b", "y") == ["y", "y"]
        finally:
            await arc.aclose()
        assert cluster.keys_without_ttl() == [
            "{user:1}:a",
            "{user:1}:b",
            "{user:2}:a",
            "{user:2}:b",
        ]
        assert cluster.commandstats()["eval"] >= 2


@pytest.mark.cluster
@pytest.mark.slow
def test_cluster_survives_a_crashed_master_and_heals_after_restart(kind: ServerKind) -> None:
    with Cluster(kind) as cluster, cluster.client(decode_responses=True) as rc:
        keys = [f"{{k{i}}}" for i in range(30)]
        for key in keys:
            rc.set(key, 1)
        victim = cluster.nodes[0]
        on_victim = {k for k in keys if rc.get_node_from_key(k).port == victim.port}
        assert on_victim
        assert len(on_victim) < len(keys)
        victim.stop()
        survivor = next(k for k in keys if k not in on_victim)
        assert rc.get(survivor) == "1"  # require-full-coverage no: the other slots still work
        victim.restart()  # returns once the cluster is healthy again
        assert all(rc.get(k) is None for k in on_victim)  # the crash lost its data
        assert rc.get(survivor) == "1"
        for node in cluster.nodes:
            assert node.cluster_info()["cluster_state"] == "ok"
