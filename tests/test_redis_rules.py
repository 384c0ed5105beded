"""The Redis rules on real servers (and fakeredis where it can tell): one script call per
check, NOSCRIPT recovery, TTLs on every key, exact-key reset, server time by default."""

from __future__ import annotations

import asyncio
from typing import Any

import ratelimit as rl
from tests.conftest import Harness, Lane
from tests.servers import Server
from tests.support import Clock

POLICIES = [rl.FixedWindow(50, 60), rl.SlidingWindow(40, 30), rl.TokenBucket(5, 1, burst=20)]


#: The lanes whose store calls the function library (FCALL): single nodes through redis-py.
FUNCTION_LANES = ("redis", "redis-async", "valkey", "valkey-async")


def _script_calls(stats: dict[str, int]) -> int:
    return stats.get("evalsha", 0) + stats.get("eval", 0) + stats.get("fcall", 0)


def _resends(stats: dict[str, int]) -> int:
    """Requests that only make a call possible again: EVAL's text, FUNCTION LOAD."""
    return stats.get("eval", 0) + stats.get("function|load", 0) + stats.get("script|load", 0)


async def test_one_script_call_per_hit_whatever_the_policies(real_lane: Lane, clock: Clock) -> None:
    server = real_lane.server
    assert server is not None
    limiter = real_lane.limiter(POLICIES, clock=clock)
    for i in range(3):  # load the library or script where these keys live
        await limiter.peek(f"user:{i}")
    server.reset_stats()
    for i in range(25):
        await limiter.hit(f"user:{i % 3}")
        await limiter.peek(f"user:{i % 3}")
    stats = server.commandstats()
    # FCALL of the function library on one node; EVALSHA on a cluster and over HTTP
    call = "fcall" if real_lane.store.functions else "evalsha"
    assert real_lane.store.functions == (real_lane.name in FUNCTION_LANES)
    assert stats.get(call) == 50, stats
    assert _script_calls(stats) == 50
    # nothing resent, no TIME round trip from the client per check
    assert _resends(stats) == 0 and "time" not in stats, stats


async def test_script_and_function_flush_mid_run_change_nothing(
    script_lane: Lane, clock: Clock
) -> None:
    """A server that forgot the library or script (restart, ``FUNCTION FLUSH``, ``SCRIPT
    FLUSH``) is sent it once: FCALL, FUNCTION LOAD, FCALL; or EVALSHA, EVAL."""
    lane = script_lane
    limiter = lane.limiter(POLICIES, clock=clock)
    for _ in range(3):
        assert (await limiter.hit("k")).allowed
    if lane.server is not None:
        lane.server.flush_scripts()  # and functions
        lane.server.reset_stats()
    else:
        for flush in (lane.raw.script_flush, lane.raw.function_flush):
            result = flush()
            if not isinstance(result, (bool, bytes, str)):
                await result
    d = await limiter.hit("k")
    assert d.allowed and d.details[0].remaining == 46
    if lane.server is not None:
        stats = lane.server.commandstats()
        if lane.store.functions:
            assert stats.get("fcall") == 2 and stats.get("function|load") == 1, stats
        else:
            assert stats.get("evalsha") == 1 and stats.get("eval") == 1, stats
        assert _script_calls(stats) + _resends(stats) <= 3
        await limiter.hit("k")
        assert _script_calls(lane.server.commandstats()) == _script_calls(stats) + 1


async def test_a_server_that_refuses_function_load_is_served_by_scripts(
    real_lane: Lane, clock: Clock
) -> None:
    """Where FUNCTION LOAD is not permitted (an ACL, a managed service), the call goes once as
    EVAL (three requests in all) and the store uses EVALSHA from then on."""
    server = real_lane.server
    if real_lane.name not in FUNCTION_LANES or not isinstance(server, Server):
        # a cluster or HTTP store uses scripts from the start: it never loads functions
        assert not real_lane.store.functions
        limiter = real_lane.limiter(POLICIES, clock=clock)
        assert server is not None
        server.reset_stats()
        assert (await limiter.hit("k")).allowed
        stats = server.commandstats()
        assert "fcall" not in stats and "function|load" not in stats, stats
        return
    admin = server.client()
    try:
        admin.function_flush()
        admin.execute_command("ACL", "SETUSER", "nofunctions", "on", "nopass", "~*", "+@all",
                              "-function")  # fmt: skip
        kw = {"username": "nofunctions", "password": "x"}
        if real_lane.name.endswith("async"):
            store: Any = rl.AsyncRedisStore(server.async_client(**kw))
        else:
            store = rl.RedisStore(server.client(**kw))
        limiter = Harness(
            rl.AsyncLimiter(POLICIES, store=store, clock=clock)
            if real_lane.name.endswith("async")
            else rl.Limiter(POLICIES, store=store, clock=clock)
        )
        server.reset_stats()
        assert (await limiter.hit("k")).allowed
        stats = server.commandstats()
        assert stats.get("fcall") == 1 and stats.get("eval") == 1, stats
        # the refused FUNCTION LOAD counts as a rejected call, not in `calls`
        assert _script_calls(stats) == 2 and stats.get("function|load", 0) == 0, stats
        d = await limiter.hit("k")
        assert d.allowed and d.details[0].remaining == 48
        assert server.commandstats().get("evalsha") == 1
        closed = store.client.close() if hasattr(store, "evaluate") else store.client.aclose()
        if closed is not None:
            await closed
    finally:
        admin.execute_command("ACL", "DELUSER", "nofunctions")
        admin.close()


async def test_every_key_gets_a_ttl_no_longer_than_needed(real_lane: Lane, clock: Clock) -> None:
    server = real_lane.server
    assert server is not None
    # Slow enough that no key expires on the server's real clock while the test runs, however
    # loaded the machine: the fake clock moves 4.1 s, the bucket's TTL is up to 40 s.
    policies = [*POLICIES[:2], rl.TokenBucket(5, 10, burst=20)]
    limiter = real_lane.limiter(policies, clock=clock, prefix="ttl")
    for i in range(30):
        await limiter.hit(f"user:{i % 7}", cost=1 + i % 3)
        clock.advance(137)
    assert server.keys_without_ttl() == []
    client = server.client(decode_responses=True)
    try:
        for key, policy in zip(
            rl.Limiter(policies, prefix="ttl").keys("user:0"), policies, strict=True
        ):
            ttl = client.pttl(key)
            bound = 2 * policy.period_ms if isinstance(policy, rl.SlidingWindow) else (
                policy.period_ms if isinstance(policy, rl.FixedWindow) else 40_000)  # fmt: skip
            assert 0 < ttl <= bound, (key, ttl)
    finally:
        client.close()


async def test_reset_deletes_exact_keys_only(real_lane: Lane, clock: Clock) -> None:
    server = real_lane.server
    assert server is not None
    limiter = real_lane.limiter(POLICIES, clock=clock)
    await limiter.reset("user:1*")  # loads the script where that slot lives
    for key in ("user:1", "user:10", "user:1*", "user:?"):
        await limiter.hit(key)
    server.reset_stats()
    await limiter.reset("user:1*")
    stats = server.commandstats()
    # one call that deletes exact keys (an override's state too: the forget entry point)
    assert _script_calls(stats) == 1 and "scan" not in stats and "keys" not in stats, stats
    for key in ("user:1", "user:10", "user:?"):
        assert (await limiter.peek(key)).details[0].remaining == 49
    assert (await limiter.peek("user:1*")).details[0].remaining == 50


async def test_server_time_is_the_default_clock(real_lane: Lane) -> None:
    """With no clock=, the script reads the server's TIME: a window opened now has a full
    period ahead of it, whatever this process's clock says."""
    limiter = real_lane.limiter(rl.FixedWindow(1, 5))
    assert (await limiter.hit("k")).allowed
    d = await limiter.hit("k")
    assert not d.allowed
    assert 4.0 < d.retry_after <= 5.0


async def test_server_time_decides_refill(real_lane: Lane) -> None:
    """Real time is the subject here: 120 ms of server time refill a 20-per-second bucket."""
    limiter = real_lane.limiter(rl.TokenBucket(20, 1, burst=1))
    assert (await limiter.hit("k")).allowed
    d = await limiter.hit("k")
    assert not d.allowed and 0 < d.retry_after <= 0.05
    await asyncio.sleep(0.12)
    assert (await limiter.hit("k")).allowed


async def test_cluster_keys_of_one_identifier_share_a_slot(servers: object) -> None:
    from redis.cluster import key_slot

    limiter = rl.Limiter(POLICIES, prefix="api")
    from tests.test_algorithms import ODD

    for key in ODD:
        slots = {key_slot(k.encode("utf-8")) for k in limiter.keys(key)}
        assert len(slots) == 1, (key, slots)


class _NoFunctions:
    """A redis-py client in front of a server without functions (Redis 6, a proxy): FCALL and
    FUNCTION are unknown commands; everything else goes through, and is recorded."""

    def __init__(self) -> None:
        import fakeredis

        self.inner = fakeredis.FakeRedis()
        self.sent: list[str] = []

    def execute_command(self, *args: Any, **options: Any) -> Any:
        import redis

        name = str(args[0]).upper()
        self.sent.append(name)
        if name in ("FCALL", "FUNCTION"):
            raise redis.exceptions.ResponseError(
                f"unknown command '{name}', with args beginning with: "
            )
        return self.inner.execute_command(*args, **options)


def test_a_server_without_functions_is_served_by_scripts(clock: Clock) -> None:
    """FCALL unknown: the same call goes once as EVAL (two requests), then EVALSHA for good."""
    client = _NoFunctions()
    limiter = rl.Limiter(POLICIES, store=rl.RedisStore(client), clock=clock)  # type: ignore[arg-type]
    assert limiter.hit("k").allowed
    assert client.sent == ["FCALL", "EVAL"]
    d = limiter.hit("k")
    assert d.allowed and d.details[0].remaining == 48
    assert client.sent == ["FCALL", "EVAL", "EVALSHA"]


class _ReadOnlyReplica(_NoFunctions):
    """A server that has functions but refuses to load one for now (a read-only replica)."""

    def execute_command(self, *args: Any, **options: Any) -> Any:
        import redis

        name = str(args[0]).upper()
        self.sent.append(name)
        if name == "FCALL":
            raise redis.exceptions.ResponseError("Function not found")
        if name == "FUNCTION":
            raise redis.exceptions.ReadOnlyError("You can't write against a read only replica.")
        return self.inner.execute_command(*args, **options)


def test_a_passing_refusal_to_load_the_library_is_a_store_error_not_a_switch(
    clock: Clock,
) -> None:
    """FUNCTION LOAD refused for a passing reason: that check follows on_error, nothing more is
    sent, and the store keeps functions for the next check (it does not fall back for good)."""
    client = _ReadOnlyReplica()
    store = rl.RedisStore(client, breaker=False)  # type: ignore[arg-type]
    limiter = rl.Limiter(POLICIES, store=store, clock=clock)
    d = limiter.hit("k")
    assert d.allowed and d.reason == "store_error"
    assert client.sent == ["FCALL", "FUNCTION"] and store.functions
