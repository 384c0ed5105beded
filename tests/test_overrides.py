"""Per-identifier overrides (issue 11 item 1) on every lane: memory (sync, async), fakeredis,
real Redis and Valkey, a real cluster, the Upstash endpoint. Time is the limiter's clock,
except where the store's own clock is the subject (an override's ttl on a server)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import timedelta
from typing import Any

import pytest

import ratelimit as rl
from tests.conftest import Clock, Harness, Lane

WINDOWS = [rl.FixedWindow, rl.SlidingWindow]


async def _call(lane: Lane, method: Any, *args: Any, **kwargs: Any) -> Any:
    result = method(*args, **kwargs)
    return await result if lane.is_async else result


def overrides(limiter: Harness) -> Any:
    return limiter.limiter.overrides


async def set_(lane: Lane, limiter: Harness, *args: Any, **kwargs: Any) -> None:
    await _call(lane, overrides(limiter).set, *args, **kwargs)


async def get(lane: Lane, limiter: Harness, identifier: str) -> Any:
    return await _call(lane, overrides(limiter).get, identifier)


async def delete(lane: Lane, limiter: Harness, identifier: str) -> None:
    await _call(lane, overrides(limiter).delete, identifier)


async def test_an_override_replaces_the_policies_of_its_identifier_only(
    lane: Lane, clock: Clock
) -> None:
    limiter = lane.limiter("10/minute", clock=clock)
    assert await get(lane, limiter, "user:1") is None
    await set_(lane, limiter, "user:1", "3/minute; 100/hour")
    assert await get(lane, limiter, "user:1") == (
        rl.SlidingWindow(3, 60),
        rl.SlidingWindow(100, 3600),
    )
    for _ in range(3):
        assert (await limiter.hit("user:1")).allowed
    d = await limiter.hit("user:1")
    # the Decision names the override's policies: headers show its numbers
    assert not d.allowed and d.limit == 3 and d.policy == rl.SlidingWindow(3, 60)
    assert [x.policy for x in d.details] == [rl.SlidingWindow(3, 60), rl.SlidingWindow(100, 3600)]
    assert d.details[1].remaining == 97
    other = await limiter.hit("user:2")  # no override: the limiter's own policies
    assert other.allowed and other.limit == 10 and other.remaining == 9
    await delete(lane, limiter, "user:1")
    assert await get(lane, limiter, "user:1") is None
    d = await limiter.hit("user:1")  # the own 10/minute read the same minute's state: 3 spent
    assert d.allowed and d.limit == 10 and d.remaining == 6
    await delete(lane, limiter, "user:1")  # deleting what is not there is no error


@pytest.mark.parametrize("algorithm", WINDOWS, ids=lambda c: c.__name__)
async def test_moved_up_mid_window_keeps_what_it_has_spent(
    lane: Lane, clock: Clock, algorithm: type[rl.Policy]
) -> None:
    limiter = lane.limiter(algorithm(10, 60), clock=clock)  # type: ignore[call-arg]
    for _ in range(10):
        assert (await limiter.hit("k")).allowed
    assert not (await limiter.hit("k")).allowed
    clock.advance(1_000)
    await set_(lane, limiter, "k", algorithm(1000, 60))  # type: ignore[call-arg]
    d = await limiter.hit("k", cost=5)
    assert d.allowed and d.limit == 1000 and d.reason is None
    if algorithm is rl.FixedWindow:
        assert d.remaining == 985 and d.reset_after == 59.0  # the same window goes on
    else:
        assert 980 <= d.remaining <= 985
    await set_(lane, limiter, "k", algorithm(10, 60))  # type: ignore[call-arg]
    d = await limiter.peek("k")
    assert not d.allowed and d.remaining == 0  # 15 spent of 10: none left, never negative


@pytest.mark.parametrize("algorithm", WINDOWS, ids=lambda c: c.__name__)
async def test_moved_down_it_is_denied_until_under_the_new_limit(
    lane: Lane, clock: Clock, algorithm: type[rl.Policy]
) -> None:
    limiter = lane.limiter(algorithm(10, 60), clock=clock)  # type: ignore[call-arg]
    assert (await limiter.hit("k", cost=8)).allowed
    await set_(lane, limiter, "k", algorithm(5, 60))  # type: ignore[call-arg]
    d = await limiter.hit("k")
    assert not d.allowed and d.remaining == 0 and d.limit == 5
    assert d.retry_after > 0
    clock.advance(round(d.retry_after * 1000) - 1)
    assert not (await limiter.hit("k")).allowed  # retry_after is exact
    clock.advance(1)
    d = await limiter.hit("k")
    assert d.allowed and d.limit == 5
    assert (await limiter.peek("k")).remaining <= 4


async def test_a_bucket_keeps_its_level_and_never_holds_more_than_the_new_burst(
    lane: Lane, clock: Clock
) -> None:
    limiter = lane.limiter(rl.TokenBucket(1, 1, burst=10), clock=clock)
    assert (await limiter.hit("k", cost=4)).remaining == 6
    await set_(lane, limiter, "k", rl.TokenBucket(10, 1, burst=100))  # same period: same state
    d = await limiter.peek("k")
    assert d.allowed and d.remaining == 6 and d.limit == 100  # the tokens it held
    clock.advance(1_000)
    assert (await limiter.peek("k")).remaining == 16  # refilled at the override's rate
    await set_(lane, limiter, "k", rl.TokenBucket(1, 1, burst=3))
    d = await limiter.peek("k")
    assert d.remaining == 3 and d.limit == 3  # no more than the new burst, never an error
    assert (await limiter.hit("k", cost=3)).allowed
    assert not (await limiter.hit("k")).allowed


async def test_state_of_one_period_is_never_read_with_another(lane: Lane, clock: Clock) -> None:
    limiter = lane.limiter("10/minute", clock=clock)
    assert (await limiter.hit("k", cost=7)).remaining == 3
    await set_(lane, limiter, "k", "10/hour")  # another period: its own, fresh state
    assert (await limiter.hit("k")).remaining == 9
    await set_(lane, limiter, "k", rl.FixedWindow(10, 60))  # another algorithm: fresh too
    assert (await limiter.hit("k")).remaining == 9
    await delete(lane, limiter, "k")
    assert (await limiter.peek("k")).remaining == 3  # the own policy's state, untouched


async def test_a_cost_the_override_can_never_hold_is_denied_and_charges_nothing(
    lane: Lane, clock: Clock
) -> None:
    limiter = lane.limiter("10/minute; 50/hour", clock=clock)
    await set_(lane, limiter, "k", "2/minute; 50/hour")
    d = await limiter.hit("k", cost=5)
    assert not d.allowed and d.reason is None
    assert d.policy == rl.SlidingWindow(2, 60) and d.retry_after == 60.0
    d = await limiter.peek("k")
    assert d.allowed and d.remaining == 2 and d.details[1].remaining == 50  # nothing charged
    d = await limiter.hit("k", cost=11)  # above the limiter's own too: the override decides
    assert not d.allowed and d.policy == rl.SlidingWindow(2, 60)
    with pytest.raises(rl.ConfigurationError, match="no override of this identifier holds it"):
        await limiter.hit("other", cost=11)  # no override: the call site's bug, as ever
    assert (await limiter.peek("k")).remaining == 2  # nothing charged by either
    assert (await limiter.peek("other")).remaining == 10


async def test_an_override_that_raises_the_limit_admits_costs_the_limiter_never_could(
    lane: Lane, clock: Clock
) -> None:
    limiter = lane.limiter("10000/minute", clock=clock)
    await set_(lane, limiter, "enterprise", "1000000/minute")
    d = await limiter.hit("enterprise", cost=20_000)
    assert d.allowed and d.remaining == 980_000
    assert (await limiter.peek("enterprise", 30_000)).allowed
    await delete(lane, limiter, "enterprise")  # back to the limiter's own: refused again
    with pytest.raises(rl.ConfigurationError, match="cost 20000 is more than"):
        await limiter.hit("enterprise", cost=20_000)


async def test_reset_forgets_the_state_not_the_override(lane: Lane, clock: Clock) -> None:
    limiter = lane.limiter("10/minute", clock=clock)
    await limiter.hit("k", cost=2)
    await set_(lane, limiter, "k", "5/hour")
    await limiter.hit("k", cost=3)
    await limiter.reset("k")
    assert await get(lane, limiter, "k") == (rl.SlidingWindow(5, 3600),)
    assert (await limiter.peek("k")).remaining == 5  # the override's state is gone too
    await delete(lane, limiter, "k")
    assert (await limiter.peek("k")).remaining == 10


async def test_overrides_belong_to_the_prefix(lane: Lane, clock: Clock) -> None:
    api = lane.limiter("10/minute", clock=clock, prefix="api")
    web = lane.limiter("10/minute", clock=clock, prefix="web")
    await set_(lane, api, "k", "1/minute")
    assert (await api.hit("k")).limit == 1
    assert (await web.hit("k")).limit == 10
    assert await get(lane, web, "k") is None


async def test_an_override_with_ttl_expires_on_the_stores_clock(lane: Lane, clock: Clock) -> None:
    limiter = lane.limiter("10/minute", clock=clock)
    await set_(lane, limiter, "k", "1/minute", ttl=timedelta(milliseconds=200))
    assert (await limiter.hit("k")).limit == 1
    if lane.is_memory:
        clock.advance(200)  # the memory store's clock is the limiter's
    else:
        await asyncio.sleep(0.3)  # real time is the subject: a server expires keys by its own
    assert await get(lane, limiter, "k") is None
    d = await limiter.hit("k")
    assert d.limit == 10 and d.remaining == 8


async def test_an_override_without_ttl_persists(real_lane: Lane, clock: Clock) -> None:
    """Configuration, not state: the one key written without a TTL."""
    limiter = real_lane.limiter("10/minute", clock=clock, prefix="persist")
    await set_(real_lane, limiter, "k", "1/minute")
    await set_(real_lane, limiter, "j", "1/minute", ttl=60)
    await limiter.hit("k")
    assert real_lane.server is not None
    assert real_lane.server.keys_without_ttl() == ["persist:{k}:override"]


async def test_bad_input_is_a_configuration_error_and_writes_nothing(
    lane: Lane, clock: Clock
) -> None:
    limiter = lane.limiter("10/minute", clock=clock)
    bad: list[tuple[Any, Any, Any, str]] = [
        (42, "1/minute", None, "must be a str"),
        (None, "1/minute", None, "must be a str"),
        ("k", "ten per minute", None, "cannot read limit"),
        ("k", "", None, "no limit found"),
        ("k", [], None, "at least one limit"),
        ("k", 5, None, "limits must be text"),
        ("k", "1/minute", 0, "ttl must be a positive"),
        ("k", "1/minute", -1, "ttl must be a positive"),
        ("k", "1/minute", True, "ttl must be a positive"),
        ("k", "1/minute", "60", "ttl must be a positive"),
        ("k", "1/minute", 0.0001, "at least 1 millisecond"),
    ]
    for identifier, limits, ttl, message in bad:
        with pytest.raises(rl.ConfigurationError, match=message):
            await set_(lane, limiter, identifier, limits, ttl=ttl)
    assert await get(lane, limiter, "k") is None
    with pytest.raises(rl.ConfigurationError, match="must be a str"):
        await get(lane, limiter, b"k")
    with pytest.raises(rl.ConfigurationError, match="must be a str"):
        await delete(lane, limiter, 7)  # type: ignore[arg-type]
    assert (await limiter.hit("k")).limit == 10


@pytest.mark.parametrize("face", ["sync", "async"])
@pytest.mark.parametrize("on_error", ["allow", "deny", "raise"])
async def test_a_store_failure_in_set_raises_whatever_on_error_says(
    face: str, on_error: Any
) -> None:
    """An admin call must know it failed: nothing answers on port 1."""
    if face == "sync":
        store: Any = rl.RedisStore.from_url("redis://127.0.0.1:1/0")
        limiter: Any = rl.Limiter("10/minute", store=store, on_error=on_error)
    else:
        store = rl.AsyncRedisStore.from_url("redis://127.0.0.1:1/0")
        limiter = rl.AsyncLimiter("10/minute", store=store, on_error=on_error)

    async def run(call: Any) -> None:
        result = call()
        if face == "async":
            await result

    for call in (
        lambda: limiter.overrides.set("k", "1/minute"),
        lambda: limiter.overrides.get("k"),
        lambda: limiter.overrides.delete("k"),
    ):
        with pytest.raises(rl.StoreError):
            await run(call)
    if on_error != "raise":  # while checks follow on_error
        d = limiter.hit("k") if face == "sync" else await limiter.hit("k")
        assert d.reason == "store_error"
    closed = store.client.close() if face == "sync" else store.client.aclose()
    if closed is not None:
        await closed


def _second_store(lane: Lane) -> Any:
    """Another client on the same store, as another process would have."""
    if lane.is_memory or lane.name.startswith("fakeredis"):
        return lane.store  # in-process stores: a second limiter object is the most there is
    server: Any = lane.server
    if lane.name.startswith("upstash"):
        from tests.upstash_lane import upstash_client

        url = lane.store.client._url
        client = upstash_client(url, is_async=lane.is_async)
        return rl.AsyncUpstashStore(client) if lane.is_async else rl.UpstashStore(client)
    if lane.is_async:
        return rl.AsyncRedisStore(server.async_client())
    return rl.RedisStore(server.client())


async def test_a_second_limiter_applies_a_new_override_at_its_next_check(
    lane: Lane, clock: Clock
) -> None:
    first = lane.limiter("10/minute", clock=clock, prefix="shared")
    cls = rl.AsyncLimiter if lane.is_async else rl.Limiter
    store = _second_store(lane)
    # the other process keeps its cache of denied keys on, as by default on a server
    second = Harness(cls("10/minute", store=store, clock=clock, prefix="shared",
                         deny_cache=100))  # fmt: skip
    assert (await second.hit("k", cost=9)).remaining == 1
    await set_(lane, first, "k", "100/minute")
    d = await second.hit("k", cost=5)  # its very next check applies it
    assert d.allowed and d.limit == 100 and d.remaining == 86
    await set_(lane, first, "k", "20/minute")
    denied = await second.hit("k", cost=7)
    assert not denied.allowed and denied.limit == 20
    await delete(lane, first, "k")  # a denial cached in the other process stands...
    assert (await second.hit("k", cost=7)).reason == "cached"
    clock.advance(round(denied.retry_after * 1000))  # ...until its retry_after
    d = await second.hit("k", cost=1)
    assert d.limit == 10 and d.reason is None
    if store is not lane.store:
        client = store.client
        if lane.is_async:
            await (client.close() if lane.name.startswith("upstash") else client.aclose())
        else:
            client.close()


async def test_an_override_costs_no_extra_round_trip(real_lane: Lane, clock: Clock) -> None:
    server = real_lane.server
    assert server is not None
    limiter = real_lane.limiter("10/minute; 100/hour", clock=clock)
    await set_(real_lane, limiter, "user:1", "50/minute; 7/second")
    for key in ("user:1", "user:2"):
        await limiter.peek(key)  # load the library where these keys live
    sent: list[str] = []
    store = real_lane.store
    send = store._send

    def counted(command: list[Any]) -> Any:
        sent.append(command[0])
        return send(command)

    store._send = counted
    server.reset_stats()
    for i in range(10):
        d = await limiter.hit(f"user:{1 + i % 2}")
        assert d.limit == (7 if i % 2 == 0 else 10), d
    stats = server.commandstats()
    call = "fcall" if real_lane.store.functions else "evalsha"
    assert stats.get(call) == 10 and "eval" not in stats, stats
    assert sent == [call.upper()] * 10  # the override is read inside the call


async def test_an_override_lives_in_its_identifiers_cluster_slot(
    real_lane: Lane, clock: Clock
) -> None:
    from redis.cluster import key_slot

    limiter = real_lane.limiter("10/minute", clock=clock)
    for identifier in ("user:1", "{x}", "a" * 300, "ünï"):
        await set_(real_lane, limiter, identifier, "5/hour; 2/second")
        assert (await limiter.hit(identifier)).limit == 2
        keys = [*limiter.limiter.keys(identifier), limiter.limiter._override_key(identifier)]
        assert len({key_slot(k.encode("utf-8")) for k in keys}) == 1


def test_another_process_applies_an_override_at_its_next_check(servers: Any) -> None:
    """Two processes on one real Redis: this one sets, the other one checks."""
    server = servers.get("redis")
    server.reset()
    here = rl.Limiter("10/minute", store=rl.RedisStore(server.client()), prefix="proc")
    program = (
        "import sys, ratelimit as rl\n"
        "l = rl.Limiter('10/minute', store=rl.RedisStore.from_url(sys.argv[1]), prefix='proc')\n"
        "for line in sys.stdin:\n"
        "    d = l.hit('k')\n"
        "    print(d.limit, d.remaining, flush=True)\n"
    )
    other = subprocess.Popen(
        [sys.executable, "-c", program, server.url], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert other.stdin is not None and other.stdout is not None
    try:

        def check() -> str:
            other.stdin.write("\n")  # type: ignore[union-attr]
            other.stdin.flush()  # type: ignore[union-attr]
            return other.stdout.readline().strip()  # type: ignore[union-attr]

        assert check() == "10 9"
        here.overrides.set("k", "1000/minute")
        assert check() == "1000 998"
        here.overrides.delete("k")
        assert check() == "10 7"
    finally:
        other.stdin.close()
        other.wait(timeout=30)
        other.stdout.close()
        here.store.client.close()  # type: ignore[attr-defined]


def test_overrides_admin_example_on_memory_and_on_two_workers_of_one_redis(
    servers: Any,
) -> None:
    import httpx

    from examples import overrides_admin

    async def run(first: Any, second: Any) -> None:
        def client(app: Any) -> httpx.AsyncClient:
            transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 50000))
            return httpx.AsyncClient(transport=transport, base_url="http://testserver")

        admin = {"X-Admin-Token": "s3cret"}
        acme = {"X-API-Key": "acme"}
        async with client(first) as a, client(second) as b:
            for _ in range(10):
                assert (await a.get("/data", headers=acme)).status_code == 200
            # denied by worker a, which forgets its cached denial when it sets the override;
            # a denial cached by another worker would stand until its retry_after
            assert (await a.get("/data", headers=acme)).status_code == 429
            assert (await a.put("/admin/overrides/acme", json={"limits": "1000/minute"})
                    ).status_code == 403  # fmt: skip
            bad = await a.put("/admin/overrides/acme", json={"limits": "lots"}, headers=admin)
            assert bad.status_code == 422 and "lots" in bad.json()["detail"]
            ok = await a.put("/admin/overrides/acme", headers=admin,
                             json={"limits": "1000/minute", "ttl": 86400})  # fmt: skip
            assert ok.status_code == 200
            shown = (await b.get("/admin/overrides/acme", headers=admin)).json()
            assert shown["limits"][0]["limit"] == 1000
            r = await b.get("/data", headers=acme)  # the other worker, its next request
            # the IETF fields name the override's policy and numbers: the 11 spent are kept
            assert r.status_code == 200 and "q=1000;w=60" in r.headers["RateLimit-Policy"]
            assert ";r=989;" in r.headers["RateLimit"]
            other = await a.get("/data", headers={"X-API-Key": "other"})
            assert "q=10;w=60" in other.headers["RateLimit-Policy"]
            await a.delete("/admin/overrides/acme", headers=admin)
            assert (await b.get("/data", headers=acme)).status_code == 429

    memory = rl.MemoryStore()
    asyncio.run(run(overrides_admin.create_app(memory, "s3cret"),
                    overrides_admin.create_app(memory, "s3cret")))  # fmt: skip
    server = servers.get("redis")
    server.reset()

    async def on_redis() -> None:
        stores = [rl.AsyncRedisStore(server.async_client()) for _ in range(2)]
        await run(*(overrides_admin.create_app(s, "s3cret") for s in stores))
        for s in stores:
            await s.client.aclose()

    asyncio.run(on_redis())


async def test_an_override_of_an_algorithm_the_limiter_lacks_on_the_script_path(
    real_lane: Lane, clock: Clock
) -> None:
    """An EVALSHA script holds only the limiter's own algorithms: an override of another one
    is sent once more to the script that has them all (never on FCALL, one library)."""
    limiter = real_lane.limiter("10/minute", clock=clock)
    await set_(real_lane, limiter, "k", rl.TokenBucket(2, 1, burst=3))
    store = real_lane.store
    sent: list[str] = []
    send = store._send

    def counted(command: list[Any]) -> Any:
        sent.append(command[0])
        return send(command)

    store._send = counted
    d = await limiter.hit("k")  # loads what this node lacks (EVAL once per script)
    assert d.allowed and d.policy == rl.TokenBucket(2, 1, burst=3)
    sent.clear()
    d = await limiter.hit("k")
    assert d.allowed and d.remaining == 1 and d.policy == rl.TokenBucket(2, 1, burst=3)
    # the subset script answers {-1}, reading and writing nothing; then the whole one
    assert sent == (["FCALL"] if store.functions else ["EVALSHA", "EVALSHA"]), sent
    assert (await limiter.hit("j")).limit == 10
