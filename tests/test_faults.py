"""Faults on real servers: what the limiter does when Redis dies, restarts, hangs, was never
there, forgets its scripts, or loses one cluster master.

Every store here is built the way the README tells users to build it, with ``from_url``
(50 ms timeouts, no retries). Each destructive test starts a server (or cluster) of its own in a
``with`` block, so the suite's shared servers never see a fault. Real time is the subject, so
this module measures it with ``time.perf_counter`` and polls with short sleeps, always bounded.

What each fault must show, for ``on_error`` = ``"allow"``, ``"deny"`` and ``"raise"``, sync and
async:

- the policy decides while the store is away (``reason="store_error"``, or a ``StoreError``
  chained from the client's error), and no other exception escapes;
- :data:`BURST` hits during the outage take less than :data:`BURST_BUDGET` seconds in all
  (the circuit breaker: one timeout per back-off, not one per hit);
- the store decides again (``reason=None``) within :data:`RECOVERY_BUDGET` seconds of its
  return, by itself, on the same store object;
- logger ``"ratelimit"`` warns exactly once when the outage starts and once when it ends, and
  an ``on_event`` listener sees one ``breaker_open`` and one ``breaker_closed``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

import ratelimit as rl
from ratelimit.events import Event
from tests.conftest import Harness
from tests.servers import (
    Cluster,
    Server,
    ServerKind,
    any_kind,
    free_port,
)

pytestmark = pytest.mark.redis_server

BURST = 200
"""Hits sent while the store is away."""
BURST_BUDGET = 2.0
"""Seconds those hits may take in all."""
RECOVERY_BUDGET = 3.0
"""Seconds from the store's return until it decides again (a few back-offs at most)."""
PAUSE = 0.5
"""Seconds of ``CLIENT PAUSE``: ten times the client's 50 ms timeout."""
LIMIT = rl.FixedWindow(100_000, 60)
"""Generous, so the store never denies here: a decision by the store is ``reason=None``."""
POLICIES = ("allow", "deny", "raise")
FACES = ("sync", "async")

Outcome = rl.Decision | rl.StoreError


@pytest.fixture(scope="module")
def kind() -> ServerKind:
    return any_kind()


@pytest.fixture
def server(kind: ServerKind) -> Iterator[Server]:
    """A server of this test's own, to kill, pause and restart."""
    with Server(kind) as srv:
        yield srv


@pytest.fixture
def warnings_(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.WARNING, logger="ratelimit"):
        yield caplog


# -- the rig: a store built with from_url, limiters on it, and the checks -------------------------


class Rig:
    """One store built by ``from_url`` (limiter-grade: 50 ms timeouts, no retries) and one
    limiter per ``on_error`` policy on it. Limiters on one store share its circuit breaker, as
    they do in an application. Each limiter has its own ``on_event`` list."""

    def __init__(
        self,
        face: str,
        url: str,
        policies: tuple[str, ...],
        *,
        cluster: bool = False,
        **client: Any,
    ) -> None:
        self.face = face
        self.store: rl.RedisStore | rl.AsyncRedisStore
        if face == "async":
            self.store = rl.AsyncRedisStore.from_url(url, cluster=cluster, **client)
        else:
            self.store = rl.RedisStore.from_url(url, cluster=cluster, **client)
        cls: Any = rl.AsyncLimiter if face == "async" else rl.Limiter
        self.events: dict[str, list[Event]] = {p: [] for p in policies}
        self.limiters = {
            p: Harness(
                cls(
                    LIMIT,
                    store=self.store,
                    prefix=f"faults-{p}",
                    on_error=p,
                    on_event=self.events[p].append,
                )
            )
            for p in policies
        }

    async def attempt(self, policy: str, key: str) -> Outcome:
        """A hit; a raised StoreError is returned, anything else raised propagates."""
        try:
            return await self.limiters[policy].hit(key)
        except rl.StoreError as error:
            return error

    def attempt_blocking(self, policy: str, key: str) -> Outcome:
        """:meth:`attempt` for the sync face, callable from worker threads."""
        limiter = self.limiters[policy].limiter
        assert isinstance(limiter, rl.Limiter)
        try:
            return limiter.hit(key)
        except rl.StoreError as error:
            return error

    async def burst(self, policy: str, keys: list[str]) -> tuple[float, float]:
        """:data:`BURST` hits cycling through ``keys``, each checked against ``policy``.
        Returns (total seconds, slowest hit in seconds)."""
        slowest = 0.0
        start = time.perf_counter()
        for i in range(BURST):
            t = time.perf_counter()
            outcome = await self.attempt(policy, keys[i % len(keys)])
            slowest = max(slowest, time.perf_counter() - t)
            follows(outcome, policy)
        total = time.perf_counter() - start
        assert total < BURST_BUDGET, f"{BURST} hits during the outage took {total:.2f}s"
        return total, slowest

    async def until_decided(self, policy: str, key: str, since: float) -> tuple[float, rl.Decision]:
        """Poll until the store decides ``key`` again. Returns (seconds since ``since``, the
        decision); fails after :data:`RECOVERY_BUDGET` seconds."""
        while True:
            outcome = await self.attempt(policy, key)
            now = time.perf_counter()
            if isinstance(outcome, rl.Decision) and outcome.reason is None:
                return now - since, outcome
            follows(outcome, policy)
            assert now - since < RECOVERY_BUDGET, (
                f"the store came back {now - since:.2f}s ago and still does not decide; "
                f"breaker: {self.store.breaker!r}"
            )
            await asyncio.sleep(0.01)

    def breaker_events(self, policy: str) -> list[str]:
        return [e.kind for e in self.events[policy] if e.kind.startswith("breaker")]

    async def close(self) -> None:
        client = self.store.client
        if self.face == "async":
            await client.aclose()
        else:
            client.close()


@pytest.fixture
async def rigs() -> AsyncIterator[list[Rig]]:
    """Rigs built by a test; every client is closed afterwards, whatever happened."""
    made: list[Rig] = []
    yield made
    for rig in made:
        await rig.close()


def follows(outcome: Outcome, policy: str) -> None:
    """``outcome`` is what ``on_error=policy`` decides for a failed store."""
    if policy == "raise":
        assert isinstance(outcome, rl.StoreError), outcome
        assert outcome.__cause__ is not None, "a StoreError is chained from the client's error"
        return
    assert isinstance(outcome, rl.Decision), outcome
    assert outcome.reason == "store_error", outcome
    assert outcome.allowed is (policy == "allow"), outcome
    if policy == "deny":
        assert outcome.retry_after > 0, outcome


def decided_or_follows(outcome: Outcome, policy: str) -> bool:
    """True when the store decided; otherwise ``outcome`` must follow the policy."""
    if isinstance(outcome, rl.Decision) and outcome.reason is None:
        return True
    follows(outcome, policy)
    return False


def one_outage_logged(caplog: pytest.LogCaptureFixture, stores: int = 1) -> None:
    """Exactly one warning when the outage started and one when it ended (per store)."""
    records = [r for r in caplog.records if r.name == "ratelimit"]
    messages = [r.getMessage() for r in records]
    starts = [m for m in messages if " failed (" in m]
    ends = [m for m in messages if " recovered after " in m]
    assert len(starts) == stores and len(ends) == stores, messages
    assert len(messages) == 2 * stores, messages
    assert all(r.levelno == logging.WARNING for r in records)


def report(name: str, **figures: float) -> None:
    """Print a test's timings (shown with ``pytest -s``; the README quotes them)."""
    text = ", ".join(f"{k}={v * 1000:.1f}ms" for k, v in figures.items())
    print(f"\n[faults] {name}: {text}")


# -- single node ------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("face", FACES)
async def test_server_killed_mid_run(
    face: str, policy: str, server: Server, rigs: list[Rig], warnings_: pytest.LogCaptureFixture
) -> None:
    """SIGKILL while checks are in flight: each in-flight check is decided by the store or by
    the policy, never by another exception; the outage then costs no timeouts; the same store
    recovers once the server is back, which lost every key (a restart has no persistence)."""
    rig = Rig(face, server.url, (policy,))
    rigs.append(rig)
    for i in range(5):
        d = await rig.attempt(policy, "user:1")
        assert isinstance(d, rl.Decision) and d.reason is None
        assert d.remaining == LIMIT.limit - 1 - i

    in_flight: list[Outcome] = []
    if face == "async":
        tasks = [asyncio.create_task(rig.attempt(policy, f"user:{i}")) for i in range(40)]
        await asyncio.sleep(0)  # every task is now waiting on the network
        server.stop()
        in_flight = list(await asyncio.gather(*tasks))
    else:
        done = threading.Event()
        failures: list[BaseException] = []

        def worker(n: int) -> None:
            try:
                while not done.is_set():
                    in_flight.append(rig.attempt_blocking(policy, f"user:{n}"))
            except BaseException as error:  # anything but a Decision or StoreError is a bug
                failures.append(error)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        await asyncio.sleep(0.05)  # the workers are hitting the server
        server.stop()
        await asyncio.sleep(0.05)  # ... and now a dead one
        done.set()
        for t in threads:
            t.join(timeout=10)
        assert not failures, failures
    assert in_flight
    for outcome in in_flight:
        decided_or_follows(outcome, policy)

    total, slowest = await rig.burst(policy, [f"user:{i}" for i in range(10)])

    server.restart()
    back = time.perf_counter()
    took, decision = await rig.until_decided(policy, "user:1", back)
    # A fresh server: the key starts again with a full allowance, and the script was reloaded
    # by the NOSCRIPT fallback (EVAL) without any help.
    assert decision.remaining == LIMIT.limit - 1, decision
    one_outage_logged(warnings_)
    assert rig.breaker_events(policy) == ["breaker_open", "breaker_closed"]
    report(f"killed {face} {policy}", burst=total, slowest_hit=slowest, recovery=took)


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("face", FACES)
async def test_server_restarted_on_the_same_port(
    face: str, policy: str, server: Server, rigs: list[Rig], warnings_: pytest.LogCaptureFixture
) -> None:
    """A restart between two checks (kill and start on the same port, a blip): connections
    in the pool are stale and scripts are gone. Every check is decided by the store or by the
    policy; at most one outage is logged, and it ends; the store's state starts afresh."""
    rig = Rig(face, server.url, (policy,))
    rigs.append(rig)
    for _ in range(10):
        d = await rig.attempt(policy, "user:1")
        assert isinstance(d, rl.Decision) and d.reason is None
    server.restart()
    back = time.perf_counter()
    decided = 0
    last: rl.Decision | None = None
    slowest = 0.0
    start = time.perf_counter()
    for _ in range(BURST):
        t = time.perf_counter()
        outcome = await rig.attempt(policy, "user:1")
        slowest = max(slowest, time.perf_counter() - t)
        if decided_or_follows(outcome, policy):
            assert isinstance(outcome, rl.Decision)
            decided += 1
            last = outcome
    total = time.perf_counter() - start
    assert total < BURST_BUDGET, total
    took, decision = await rig.until_decided(policy, "user:1", back)
    if last is None:
        decided, last = 1, decision
    # Only the checks the new server decided are counted: nothing of before, nothing twice.
    assert last.remaining == LIMIT.limit - decided, (last, decided)
    messages = [r.getMessage() for r in warnings_.records if r.name == "ratelimit"]
    assert len(messages) in (0, 2), messages  # no outage, or one that started and ended
    if messages:
        one_outage_logged(warnings_)
    report(f"restarted {face} {policy}", burst=total, slowest_hit=slowest, recovery=took)


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("face", FACES)
async def test_server_paused_past_the_client_timeout(
    face: str, policy: str, server: Server, rigs: list[Rig], warnings_: pytest.LogCaptureFixture
) -> None:
    """``CLIENT PAUSE ALL`` for ten client timeouts: a hung server, not a dead one. A check pays
    at most one 50 ms timeout, the burst pays about one in all; after the pause, replies are
    not mixed up (a timed-out connection is never reused) and counts are exact."""
    rig = Rig(face, server.url, (policy,))
    rigs.append(rig)
    d = await rig.attempt(policy, "user:1")
    assert isinstance(d, rl.Decision) and d.reason is None
    server.pause(PAUSE)
    paused_at = time.perf_counter()
    total, slowest = await rig.burst(policy, [f"user:{i}" for i in range(10)])
    assert slowest < 0.5, f"one check waited {slowest:.3f}s on a hung server"
    await asyncio.sleep(max(0.0, paused_at + PAUSE - time.perf_counter()))  # the pause ends
    back = time.perf_counter()
    took, _ = await rig.until_decided(policy, "user:1", back)
    for i in range(5):  # a fresh key: replies belong to their own requests
        d = await rig.attempt(policy, "fresh")
        assert isinstance(d, rl.Decision) and d.reason is None
        assert d.remaining == LIMIT.limit - 1 - i
    one_outage_logged(warnings_)
    assert rig.breaker_events(policy) == ["breaker_open", "breaker_closed"]
    report(f"paused {face} {policy}", burst=total, slowest_hit=slowest, recovery=took)


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("face", FACES)
async def test_connections_refused_from_the_start(
    face: str,
    policy: str,
    kind: ServerKind,
    rigs: list[Rig],
    warnings_: pytest.LogCaptureFixture,
) -> None:
    """The application starts before Redis does: building the store and every check work,
    by the policy, and the store is used as soon as a server listens on the port."""
    port = free_port()
    rig = Rig(face, f"redis://127.0.0.1:{port}/0", (policy,))
    rigs.append(rig)
    total, slowest = await rig.burst(policy, [f"user:{i}" for i in range(10)])
    with Server(kind, port=port):
        back = time.perf_counter()
        took, decision = await rig.until_decided(policy, "user:1", back)
        assert decision.remaining == LIMIT.limit - 1
    one_outage_logged(warnings_)
    assert rig.breaker_events(policy) == ["breaker_open", "breaker_closed"]
    report(f"refused {face} {policy}", burst=total, slowest_hit=slowest, recovery=took)


@pytest.mark.parametrize("face", FACES)
async def test_script_flush_mid_run(
    face: str, server: Server, rigs: list[Rig], warnings_: pytest.LogCaptureFixture
) -> None:
    """``SCRIPT FLUSH`` between checks is no outage: the next check gets NOSCRIPT, resends the
    call once as EVAL, and is decided by the store; nothing counts twice, nothing is logged,
    whatever the policy."""
    rig = Rig(face, server.url, POLICIES)
    rigs.append(rig)
    for policy in POLICIES:
        expected = LIMIT.limit
        for round_ in range(3):
            server.reset_stats()
            server.flush_scripts()
            for _ in range(5):
                d = await rig.attempt(policy, "user:1")
                expected -= 1
                assert isinstance(d, rl.Decision) and d.reason is None, (policy, round_, d)
                assert d.remaining == expected, (policy, round_, d)
            stats = server.commandstats()
            # one resend with the text per flush: EVAL, or FUNCTION LOAD before the FCALL
            assert stats.get("eval", 0) + stats.get("function|load", 0) == 1, stats
    assert not [r for r in warnings_.records if r.name == "ratelimit"]
    for policy in POLICIES:
        assert rig.breaker_events(policy) == []


# -- Redis Cluster ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(kind: ServerKind) -> Iterator[Cluster]:
    """A three-master cluster of this module's own (masters get killed here)."""
    with Cluster(kind) as c:
        yield c


def _cluster_url(cluster: Cluster) -> str:
    host, port = cluster.startup_nodes[0]
    return f"redis://{host}:{port}/0"


def _keys_by_node(cluster: Cluster, rig: Rig) -> dict[int, list[str]]:
    """Identifiers grouped by the port of the master that owns their slot (the same for every
    limiter: the slot comes from the ``{identifier}`` hash tag only)."""
    from redis.crc import key_slot

    limiter: Any = next(iter(rig.limiters.values())).limiter
    with cluster.client() as rc:
        slots = rc.cluster_slots()
    owners = [(lo, hi, int(v["primary"][1])) for (lo, hi), v in slots.items()]
    by_node: dict[int, list[str]] = {port: [] for _, port in cluster.startup_nodes}
    i = 0
    while min(len(v) for v in by_node.values()) < 10:
        key = f"user:{i}"
        slot = key_slot(limiter.keys(key)[0].encode())
        port = next(p for lo, hi, p in owners if lo <= slot <= hi)
        by_node[port].append(key)
        i += 1
    return by_node


@pytest.mark.cluster
@pytest.mark.slow
@pytest.mark.parametrize("face", FACES)
async def test_cluster_master_killed(
    face: str, cluster: Cluster, rigs: list[Rig], warnings_: pytest.LogCaptureFixture
) -> None:
    """One of three masters dies (no replicas, ``cluster-require-full-coverage no``): keys on
    the two others are still decided by the store, keys on the dead one follow each limiter's
    policy within the burst budget; once the master is back (same port, empty), its keys are
    decided by the store again. One outage is logged, for that master."""
    cluster.reset()
    rig = Rig(face, _cluster_url(cluster), POLICIES, cluster=True)
    rigs.append(rig)
    by_node = _keys_by_node(cluster, rig)
    victim = cluster.nodes[1]
    dead = by_node[victim.port]
    alive = [k for port, ks in by_node.items() if port != victim.port for k in ks]
    for policy in POLICIES:
        for key in dead[:3] + alive[:3]:
            d = await rig.attempt(policy, key)
            assert isinstance(d, rl.Decision) and d.reason is None

    victim.stop()
    try:
        figures: dict[str, float] = {}
        for policy in POLICIES:
            figures[f"burst_{policy}"], _ = await rig.burst(policy, dead)
            # Interleaved, as an application's traffic is: the dead master's failures must not
            # take the healthy masters' keys down with them.
            wrong: list[tuple[str, Outcome]] = []
            for i in range(60):
                await rig.attempt(policy, dead[i % len(dead)])
                key = alive[i % len(alive)]
                outcome = await rig.attempt(policy, key)
                if not (isinstance(outcome, rl.Decision) and outcome.reason is None):
                    wrong.append((key, outcome))
            assert not wrong, (
                f"{len(wrong)} of 60 checks on healthy masters were not decided by "
                f"the store, e.g. {wrong[:3]}"
            )

        victim.restart()  # returns once the cluster is healthy again
        back = time.perf_counter()
        for policy in POLICIES:
            figures[f"recovery_{policy}"], d = await rig.until_decided(policy, dead[0], back)
    finally:
        if not victim.running:  # a failed check above must not leave the cluster broken
            victim.restart()
    one_outage_logged(warnings_)
    report(f"cluster master killed {face}", **figures)


@pytest.mark.cluster
@pytest.mark.parametrize("face", FACES)
async def test_cluster_node_paused(
    face: str, cluster: Cluster, rigs: list[Rig], warnings_: pytest.LogCaptureFixture
) -> None:
    """One master hangs (``CLIENT PAUSE``) past the timeout: its keys follow the policy at the
    cost of about one timeout, then are decided by the store again after the pause."""
    cluster.reset()
    rig = Rig(face, _cluster_url(cluster), ("allow",), cluster=True)
    rigs.append(rig)
    by_node = _keys_by_node(cluster, rig)
    victim = cluster.nodes[2]
    hung = by_node[victim.port]
    for key in hung[:3]:
        d = await rig.attempt("allow", key)
        assert isinstance(d, rl.Decision) and d.reason is None
    victim.pause(PAUSE)
    paused_at = time.perf_counter()
    total, slowest = await rig.burst("allow", hung)
    assert slowest < 0.5, slowest
    await asyncio.sleep(max(0.0, paused_at + PAUSE - time.perf_counter()))  # the pause ends
    took, _ = await rig.until_decided("allow", hung[0], time.perf_counter())
    one_outage_logged(warnings_)
    report(f"cluster node paused {face}", burst=total, slowest_hit=slowest, recovery=took)


@pytest.mark.cluster
@pytest.mark.parametrize("face", FACES)
async def test_cluster_script_flush(
    face: str, cluster: Cluster, rigs: list[Rig], warnings_: pytest.LogCaptureFixture
) -> None:
    """``SCRIPT FLUSH`` on every master: each resends once as EVAL, nothing is logged."""
    cluster.reset()
    rig = Rig(face, _cluster_url(cluster), ("raise",), cluster=True)
    rigs.append(rig)
    by_node = _keys_by_node(cluster, rig)
    keys = [ks[0] for ks in by_node.values()]
    for key in keys:
        await rig.attempt("raise", key)
    cluster.flush_scripts()
    cluster.reset_stats()
    for round_ in range(3):
        for key in keys:
            d = await rig.attempt("raise", key)
            assert isinstance(d, rl.Decision) and d.reason is None, d
            assert d.remaining == LIMIT.limit - 2 - round_, d
    assert cluster.commandstats().get("eval") == len(keys)
    assert not [r for r in warnings_.records if r.name == "ratelimit"]


@pytest.mark.cluster
@pytest.mark.slow
async def test_cluster_refused_from_the_start(
    kind: ServerKind, rigs: list[Rig], warnings_: pytest.LogCaptureFixture
) -> None:
    """The application starts before the cluster (sync and async stores at once, one cluster
    start): building the stores must not raise, checks follow the policy, and each store is
    used once the cluster is up. One outage per store is logged."""
    pending = Cluster(kind)  # ports chosen, nothing started yet
    try:
        for face in FACES:
            rigs.append(Rig(face, _cluster_url(pending), ("deny",), cluster=True))
    except Exception as error:  # the failure this test exists to catch
        pending.stop()
        pytest.fail(f"building a cluster store while the cluster is down raised {error!r}")
    bursts = [await rig.burst("deny", [f"user:{i}" for i in range(10)]) for rig in rigs]
    with pending:
        back = time.perf_counter()
        recoveries = [(await rig.until_decided("deny", "user:1", back))[0] for rig in rigs]
    one_outage_logged(warnings_, stores=2)
    for face, (total, slowest), took in zip(FACES, bursts, recoveries, strict=True):
        report(f"cluster refused {face}", burst=total, slowest_hit=slowest, recovery=took)


# -- connection pool ---------------------------------------------------------------------------


async def test_a_traffic_peak_is_decided_by_the_store(
    server: Server, rigs: list[Rig], warnings_: pytest.LogCaptureFixture
) -> None:
    """An async application serves hundreds of requests at once; a healthy store must decide
    every one of them. A pool that refuses its 101st connection turns a traffic peak into a
    "store failure", and ``on_error="allow"`` then stops limiting exactly when it matters: the
    peak must wait briefly for a free connection instead."""
    # The subject is the pool, not the timeout: a 0.5 s socket timeout keeps a busy shared
    # machine (300 checks queued on one event loop) from turning slow replies into failures.
    rig = Rig("async", server.url, ("raise",), socket_timeout=0.5)
    rigs.append(rig)
    client: Any = rig.store.client
    pool = client.connection_pool
    warm = [await pool.get_connection() for _ in range(100)]  # one by one: no connect race
    for connection in warm:
        await pool.release(connection)
    for round_ in range(2):
        outcomes = await asyncio.gather(*(rig.attempt("raise", f"user:{i}") for i in range(300)))
        failed = [o for o in outcomes if not isinstance(o, rl.Decision)]
        assert not failed, (
            f"round {round_}: {len(failed)} of 300 concurrent checks failed, e.g. {failed[0]!r}"
        )
    assert not [r for r in warnings_.records if r.name == "ratelimit"]


# -- a slot being migrated (resharding) -----------------------------------------------------------

ONE_NODE_BOUND = 0.3
"""Seconds a check may take while its slot migrates: one node's bound (50 ms connect + 50 ms
read timeouts) with room for a loaded machine; redis-py's own TRYAGAIN retries took ~400 ms."""


@pytest.mark.cluster
@pytest.mark.parametrize("face", FACES)
async def test_a_migrating_slot_answers_within_one_node_bound_and_opens_no_breaker(
    face: str, cluster: Cluster, rigs: list[Rig], warnings_: pytest.LogCaptureFixture
) -> None:
    """The identifier's keys are split between the source and the target of a migration, so
    the server answers TRYAGAIN: each check answers by on_error within one node's bound, no
    breaker opens (the node is healthy), nothing is logged; once the slot has moved, the store
    decides again."""
    from redis.crc import key_slot

    cluster.reset()
    two = (rl.FixedWindow(100_000, 60), rl.FixedWindow(1_000_000, 3600))
    rig = Rig(face, _cluster_url(cluster), ("allow", "raise"), cluster=True)
    rigs.append(rig)
    cls: Any = rl.AsyncLimiter if face == "async" else rl.Limiter
    events: list[Event] = []
    limiter = Harness(cls(two, store=rig.store, on_event=events.append, deny_cache=0))
    raising = Harness(cls(two, store=rig.store, on_error="raise", deny_cache=0))
    keys = limiter.limiter.keys("user:moving")
    slot = key_slot(keys[0].encode())
    assert (await limiter.hit("user:moving")).reason is None
    with cluster.migrating(slot) as (source, target):
        cluster.migrate_keys(source, target, keys[:1])  # one key moved, one not: TRYAGAIN
        slowest = 0.0
        outages: list[object] = []
        for _ in range(5):
            started = time.perf_counter()
            d = await limiter.hit("user:moving")
            slowest = max(slowest, time.perf_counter() - started)
            assert d.allowed and d.reason == "store_error"
            with pytest.raises(rl.StoreError, match=r"TTL exhausted|TRYAGAIN") as caught:
                await raising.hit("user:moving")
            outages.append(getattr(caught.value, "outage", None))
        assert slowest < ONE_NODE_BOUND, f"a check on a migrating slot took {slowest:.3f}s"
        assert outages == [False] * 5  # the node answered: not an outage
        assert all(b.state == "closed" for b in rig.store.breakers.values())
        assert rig.store.breaker is not None and rig.store.breaker.state == "closed"
        assert not [e for e in events if e.kind.startswith("breaker")]
        cluster.migrate_keys(source, target, keys[1:])
        cluster.finish_migration(slot, target)
        d = await limiter.hit("user:moving")  # MOVED: redis-py follows it once
        assert d.reason is None and d.remaining == 100_000 - 2
    assert not [r for r in warnings_.records if r.name == "ratelimit"]
    report(f"migrating slot {face}", slowest_check=slowest)


@pytest.mark.cluster
@pytest.mark.parametrize("face", FACES)
async def test_a_redirected_probe_reports_to_the_breaker_that_admitted_it(
    face: str, cluster: Cluster, rigs: list[Rig]
) -> None:
    """The source master's breaker is half open when the slot moves: the probe it admitted is
    redirected (MOVED) and answered by the target, and its answer closes the source's breaker,
    not the target's."""
    from redis.crc import key_slot

    from ratelimit.breaker import CircuitBreaker
    from tests.support import Clock

    cluster.reset()
    clock = Clock()
    rig = Rig(face, _cluster_url(cluster), ("allow",), cluster=True)
    rigs.append(rig)
    rig.store.breaker = CircuitBreaker(base=1, cap=1, jitter=0, clock=clock, name="cluster")
    limiter = rig.limiters["allow"]
    keys = limiter.limiter.keys("user:probe")
    slot = key_slot(keys[0].encode())
    assert (await limiter.hit("user:probe")).reason is None
    source_breaker = rig.store.breaker_for(keys)
    assert source_breaker is not None and source_breaker is not rig.store.breaker
    with cluster.migrating(slot) as (source, target):
        cluster.migrate_keys(source, target, keys)
        cluster.finish_migration(slot, target)  # the client's slot map is stale now
        source_breaker.failure(rl.StoreError("the source master failed"))
        assert (await limiter.hit("user:probe")).reason == "store_error"
        clock.advance(1000)
        d = await limiter.hit("user:probe")  # the probe: sent to the source, answered by target
        assert d.reason is None and d.remaining == LIMIT.limit - 2
        assert source_breaker.state == "closed"
        target_breaker = rig.store.breaker_for(keys)
        assert target_breaker is not source_breaker and target_breaker is not None
        assert target_breaker.state == "closed"
        assert (await limiter.hit("user:probe")).reason is None


async def test_a_cancelled_probe_frees_the_breaker_on_a_real_server(
    server: Server, rigs: list[Rig]
) -> None:
    """The server hangs; the probe sent when the back-off ends is cancelled by
    ``asyncio.wait_for`` and never reports. After ``probe_timeout`` the next check probes, and
    the store decides again once the server is back."""
    from ratelimit.breaker import CircuitBreaker

    rig = Rig("async", server.url, ("allow",))
    rigs.append(rig)
    rig.store.breaker = CircuitBreaker(base=0.05, cap=0.2, jitter=0)  # probe_timeout: 0.2 s
    limiter = rig.limiters["allow"] = Harness(rl.AsyncLimiter(LIMIT, store=rig.store))
    assert (await limiter.hit("k")).reason is None
    server.pause(0.4)
    paused_at = time.perf_counter()
    assert (await limiter.hit("k")).reason == "store_error"  # one timeout: the breaker opens
    await asyncio.sleep(0.06)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(limiter.hit("k"), 0.01)  # the probe, cancelled
    assert rig.store.breaker.state == "half_open"
    await asyncio.sleep(max(0.0, paused_at + 0.4 - time.perf_counter()))
    took, d = await rig.until_decided("allow", "k", time.perf_counter())
    assert d.reason is None and rig.store.breaker.state == "closed"
    assert took < 1.0, f"the store decided again only {took:.2f}s after the pause"
