"""Core benchmark: ``Limiter.hit`` on Redis and in memory, against the floor and the peers.

::

    python benchmarks/bench_core.py [--redis-url URL] [--quick] [--out benchmarks/results/core.json]

Per algorithm (fixed window, sliding window, token bucket), with one policy and with two (the
algorithm plus a fixed-window daily cap), it measures checks per second and p50/p99 latency of:

- on Redis: two floors through the same kind of client on the same server, redis-py's bare
  ``EVALSHA`` of a script that does ``INCR`` and ``PEXPIRE`` on one key (the least work any
  counting limiter can do in one round trip: the floor the ratios are taken against) and of
  ``return 1``; our ``Limiter`` on ``RedisStore.from_url``, ``limits`` (one ``hit`` per
  limit), and throttled-py and pyrate-limiter when installed. Beside the times: the client's
  CPU per check (this process), the server's CPU per check (``/proc/<pid>/stat`` of the
  server the benchmark starts) and ``usec_per_call`` of each contender's script or function
  (``INFO commandstats``);
- in memory: our default ``MemoryStore`` against ``limits``' ``MemoryStorage`` (and the same
  optional peers).

Contenders run interleaved in rounds; figures are the median of the round throughputs and the
percentiles of every call. Each is reported as a ratio measured in the same run: time per check
against the floor (Redis) or against ``limits`` (memory). It also times ``import ratelimit``
against ``import limits``. Prints Markdown, writes JSON (and a PNG when matplotlib is there).
See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)  # measure this checkout's ratelimit, not an installed copy
sys.path.insert(0, HERE)

import _harness as h  # noqa: E402

ALGORITHMS = ("fixed_window", "sliding_window", "token_bucket")
LABELS = {
    "fixed_window": "fixed window",
    "sliding_window": "sliding window",
    "token_bucket": "token bucket",
}
RATE = 1_000_000  # per minute: every hit of the run is allowed
CAP = 10_000_000  # per day: the second policy
KEYS = [f"user:{i}" for i in range(8)]
# the periods of the policies, in ms: the one of every group, then the daily cap
PERIODS = (60_000, 86_400_000)
REDIS_TARGET = 1.10  # our time per hit / the floor's, at most, one policy
REDIS_TARGET_2 = 1.15  # the same with two policies
SERVER_TARGET = 1.20  # server CPU per check / the floor's, at most, one policy
CLIENT_TARGET = 1.10  # client CPU per check / the floor's, at most
MEMORY_TARGET = 0.50  # our time per hit / limits', at most
IMPORT_TARGET = 0.25  # our import time / limits', at most

OURS = "ratelimit"
FLOOR = "floor (INCR + PEXPIRE script)"
RETURN_1 = "floor (EVALSHA return 1)"
CONTRACT = "floor (our contract, no logic)"
FLOORS = (FLOOR, RETURN_1, CONTRACT)
COUNT_SCRIPT = (
    "local n = redis.call('INCR', KEYS[1])\nredis.call('PEXPIRE', KEYS[1], ARGV[1])\nreturn n"
)
# The least work a check under our contract can do, without any logic: the server's TIME
# (DESIGN: app servers with skewed clocks agree), a read of the override key (DESIGN: read by the
# same script call that checks), and per policy a read of its state (the decision comes before
# the charge: a denial spends nothing) and one write with its TTL; then the numbers a response's
# headers need (allowed, then allowed, remaining, reset_after and retry_after of each policy).
# Separate GETs: one MGET measured slower in our script. One script per number of policies,
# straight-line (no loop), KEYS = the states then the override key, as our store sends them.


def contract_script(n: int) -> str:
    """The contract floor's script for ``n`` policies."""
    lines = ["local t = redis.call('TIME')", f"local o = redis.call('GET', KEYS[{n + 1}])"]
    for i in range(1, n + 1):
        lines.append(f"local v{i} = redis.call('GET', KEYS[{i}])")
        lines.append(f"redis.call('SET', KEYS[{i}], t[1] .. ' 1', 'PX', '60000')")
    lines.append("return {1" + ", 1, 999999, 60000, 0" * n + "}")
    return "\n".join(lines)


CONTRACT_SCRIPTS = {n: contract_script(n) for n in (1, 2)}
# The same as functions (for the levers: our check is an FCALL): contract_1, contract_2.
CONTRACT_LIBRARY = "#!lua name=rlbench_contract\n" + "".join(
    f"redis.register_function('contract_{n}', function(KEYS, ARGV)\n{text}\nend)\n"
    for n, text in CONTRACT_SCRIPTS.items()
)


@dataclass
class Settings:
    rounds: int
    redis_seconds: float  # per contender per round
    memory_seconds: float
    warmup: float  # seconds per contender per group, untimed
    import_runs: int


# About 30 Redis and 24 memory contender-groups: full ~3 min, quick under 30 s.
FULL = Settings(rounds=9, redis_seconds=0.4, memory_seconds=0.08, warmup=0.15, import_runs=7)
QUICK = Settings(rounds=5, redis_seconds=0.05, memory_seconds=0.015, warmup=0.02, import_runs=3)

Check = Callable[[Any], bool]


@dataclass
class Contender:
    fn: Callable[[str], object]
    allowed: Check  # is this reply an allowed hit (sanity check of the setup)
    note: str = ""


# --- the contenders ---------------------------------------------------------------------------


def our_policies(algorithm: str, n: int) -> list[Any]:
    import ratelimit as rl

    first = {
        "fixed_window": rl.FixedWindow(RATE, 60),
        "sliding_window": rl.SlidingWindow(RATE, 60),
        "token_bucket": rl.TokenBucket(RATE, 60),
    }[algorithm]
    return [first] if n == 1 else [first, rl.FixedWindow(CAP, 86400)]


def ours(algorithm: str, n: int, store: Any, prefix: str) -> Contender:
    """Our ``Limiter`` with its defaults, except ``on_error="raise"``: a store failure must
    stop the run, never be timed as a (fast) local answer. ``store``: built as the README
    tells users to (``RedisStore.from_url``)."""
    import ratelimit as rl

    limiter = rl.Limiter(our_policies(algorithm, n), store=store, prefix=prefix, on_error="raise")
    return Contender(limiter.hit, lambda d: d.allowed is True and d.reason is None)


def limits_contenders(
    algorithm: str, n: int, storage: Callable[[str], Any]
) -> dict[str, Contender]:
    """``limits`` for the algorithms it has; with two policies, one ``hit`` per limit.
    ``storage(name)``: the storage for one strategy (strategies would clash on one key)."""
    from limits import RateLimitItemPerDay, RateLimitItemPerMinute, strategies

    variants = {
        "fixed_window": [("limits", strategies.FixedWindowRateLimiter, "")],
        "sliding_window": [
            ("limits", strategies.SlidingWindowCounterRateLimiter, "sliding window counter"),
            ("limits (moving window)", strategies.MovingWindowRateLimiter, "a log, not a counter"),
        ],
        "token_bucket": [],
    }[algorithm]
    item = RateLimitItemPerMinute(RATE)
    cap = RateLimitItemPerDay(CAP)
    out = {}
    for name, strategy, note in variants:
        store = storage(strategy.__name__)
        hit = strategy(store).hit
        cap_hit = strategies.FixedWindowRateLimiter(store).hit
        if n == 1:
            fn: Callable[[str], object] = functools.partial(hit, item)
        else:

            def fn(key: str, hit: Any = hit, cap_hit: Any = cap_hit) -> bool:
                first = hit(item, key)
                second = cap_hit(cap, key)
                return first and second

        out[name] = Contender(fn, lambda ok: ok is True, note)
    return out


def throttled_contenders(algorithm: str, n: int, store: Any, prefix: str) -> dict[str, Contender]:
    """throttled-py: one ``Throttled`` per policy, called once each."""
    import throttled

    quota = (
        throttled.per_min(RATE, burst=RATE)
        if algorithm == "token_bucket"
        else (throttled.per_min(RATE))
    )
    first = throttled.Throttled(using=algorithm, quota=quota, store=store, key_prefix=prefix)
    if n == 1:
        fn: Callable[[str], object] = first.limit
    else:
        second = throttled.Throttled(
            using="fixed_window", quota=throttled.per_day(CAP), store=store, key_prefix=prefix
        )

        def fn(key: str) -> bool:
            a = first.limit(key)
            b = second.limit(key)
            return not a.limited and not b.limited

        return {"throttled-py": Contender(fn, lambda ok: ok is True)}
    return {"throttled-py": Contender(fn, lambda r: r.limited is False)}


def pyrate_contenders(
    algorithm: str, n: int, client: Any, bucket_key: str
) -> tuple[dict[str, Contender], list[Any]]:
    """pyrate-limiter: one bucket for all keys (it routes by bucket, not by name), with both
    rates in that bucket under the same algorithm (its multi-rate form). ``client`` None: in
    memory. Returns the contenders and the limiters to close."""
    import pyrate_limiter as pl

    rates = [pl.Rate(RATE, pl.Duration.MINUTE)]
    if n == 2:
        rates.append(pl.Rate(CAP, pl.Duration.DAY))
    note = "one bucket for all keys"
    bucket: Any
    if algorithm == "token_bucket":
        if client is None:
            bucket = pl.StateBucket(rates, pl.TokenBucket())
        else:
            bucket = pl.StateBucket(rates, pl.TokenBucket(), pl.RedisStateStore(client, bucket_key))
    else:
        if algorithm == "fixed_window":
            log_algorithm: Any = pl.FixedWindow()
        else:
            log_algorithm = pl.SlidingWindowLog()
            note += "; sliding window log"
        if client is None:
            bucket = pl.InMemoryBucket(rates, algorithm=log_algorithm)
        else:
            bucket = pl.RedisBucket.init(rates, client, bucket_key, algorithm=log_algorithm)
    limiter = pl.Limiter(bucket)
    fn = functools.partial(limiter.try_acquire, blocking=False)
    return {"pyrate-limiter": Contender(fn, lambda ok: ok is True, note)}, [limiter]


# --- running ----------------------------------------------------------------------------------


def installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def run_group(
    contenders: dict[str, Contender],
    seconds: float,
    s: Settings,
    probe: Callable[[], dict[str, float]] | None = None,
) -> dict[str, h.Result]:
    results = h.interleave(
        {k: c.fn for k, c in contenders.items()},
        KEYS,
        rounds=s.rounds,
        seconds=seconds,
        warmup=s.warmup,
        probe=probe,
    )
    for name, c in contenders.items():
        reply = c.fn(KEYS[0])
        if not c.allowed(reply):
            raise RuntimeError(f"{name}: a hit was not allowed ({reply!r}); the limits are too low")
    return results


def bench_redis(url: str, run: str, s: Settings, server_pid: int | None) -> list[dict[str, Any]]:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    import ratelimit as rl

    # One client for the floors: no command retries (what RedisStore asks for; it changes
    # nothing while every call succeeds), no socket timeout (a slow call is timed, not failed).
    client = redis.Redis.from_url(url, retry=Retry(NoBackoff(), 0))
    return_1_sha = client.script_load("return 1")
    count_sha = client.script_load(COUNT_SCRIPT)
    count_keys = {key: f"rlbench-{run}-floor:{key}" for key in KEYS}
    contract_shas = {n: client.script_load(text) for n, text in CONTRACT_SCRIPTS.items()}
    contract_keys = {
        n: {
            key: (
                *(f"rlbench-{run}-contract:{{{key}}}:f{period}" for period in PERIODS[:n]),
                f"rlbench-{run}-contract:{{{key}}}:override",
            )
            for key in KEYS
        }
        for n in CONTRACT_SCRIPTS
    }
    execute = client.execute_command

    def count_floor(key: str) -> object:
        return execute("EVALSHA", count_sha, 1, count_keys[key], 60_000)

    def contract_floor(n: int) -> Callable[[str], object]:
        sha, keys = contract_shas[n], contract_keys[n]
        return lambda key: execute("EVALSHA", sha, n + 1, *keys[key])

    # Ours as the README builds it: RedisStore.from_url (a blocking pool, no retries), with
    # one-second socket timeouts instead of 50 ms so that a loaded machine's slow call is
    # timed, not failed.
    store = rl.RedisStore.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
    stats_client = redis.Redis.from_url(url)
    probe = h.server_probe(stats_client, server_pid, client_cpu=True)
    limits_storage = throttled_store = None
    if installed("limits"):
        from limits.storage import RedisStorage

        limits_storage = functools.cache(
            lambda name: RedisStorage(url, key_prefix=f"rlbench-{run}-limits-{name}")
        )
    if installed("throttled"):
        import throttled

        throttled_store = throttled.RedisStore(server=url)
    groups = []
    for algorithm in ALGORITHMS:
        for n in (1, 2):
            contenders = {
                FLOOR: Contender(count_floor, lambda r: isinstance(r, int) and r > 0),
                RETURN_1: Contender(
                    functools.partial(execute, "EVALSHA", return_1_sha, 1), lambda r: r == 1
                ),
                CONTRACT: Contender(contract_floor(n), lambda r: isinstance(r, list) and r[0] == 1),
                OURS: ours(algorithm, n, store, f"rlbench-{run}-ours"),
            }
            if limits_storage is not None:
                contenders.update(limits_contenders(algorithm, n, limits_storage))
            if throttled_store is not None:
                contenders.update(
                    throttled_contenders(algorithm, n, throttled_store, f"rlbench-{run}-throttled")
                )
            to_close: list[Any] = []
            if installed("pyrate_limiter"):
                extra, to_close = pyrate_contenders(
                    algorithm, n, client, f"rlbench-{run}-pyrate-{algorithm}-{n}"
                )
                contenders.update(extra)
            started = time.perf_counter()
            results = run_group(contenders, s.redis_seconds, s, probe)
            for limiter in to_close:
                limiter.close()
            floor = results[FLOOR]
            rows = {}
            for name, result in results.items():
                row = result.summary()
                row["x_floor"] = round(floor.ops / result.ops, 4)
                row["x_floor_paired"] = round(h.paired_ratio(result, floor), 4)
                row["x_floor_p50"] = round(result.latency_us(50) / floor.latency_us(50), 4)
                row["x_return_1"] = round(results[RETURN_1].ops / result.ops, 4)
                row["x_contract"] = round(results[CONTRACT].ops / result.ops, 4)
                row.update(cpu_figures(result))
                if contenders[name].note:
                    row["note"] = contenders[name].note
                rows[name] = row
            for row in rows.values():
                for key in ("client_us", "server_us"):
                    base = rows[FLOOR].get(key)
                    value = row.get(key)
                    ok = value is not None and base
                    row[f"{key}_x_floor"] = round(value / base, 4) if ok else None
            groups.append(
                {
                    "algorithm": algorithm,
                    "policies": n,
                    "contenders": rows,
                    "seconds": round(time.perf_counter() - started, 2),
                }
            )
            print(
                f"  redis  {LABELS[algorithm]:14} {n} polic{'y' if n == 1 else 'ies'}: "
                f"ours {rows[OURS]['x_floor']:.3f}x floor, client "
                f"{_us(rows[OURS]['client_us'])} µs vs {_us(rows[FLOOR]['client_us'])}, server "
                f"{_us(rows[OURS]['server_us'])} µs vs {_us(rows[FLOOR]['server_us'])}, script "
                f"{_us(rows[OURS]['script_usec_per_call'])} µs vs "
                f"{_us(rows[FLOOR]['script_usec_per_call'])}",
                flush=True,
            )
    client.close()
    stats_client.close()
    store.client.close()
    return groups


def bench_levers(url: str, run: str) -> list[dict[str, Any]]:
    """Server time of one check by each way of calling the same Lua (on a server we started:
    it resets the server's statistics): ``usec_per_call`` of
    ``FCALL`` of the function library against ``EVALSHA`` of the whole script (which rebuilds
    every function of the chunk on each call) and of the script with only the limiter's
    algorithms (what the cluster and Upstash stores send), beside the floors (the contract
    floors called both ways); 5,000 pipelined calls, best of five, so that only the server's
    work is measured."""
    import redis

    from ratelimit.scripts import library
    from ratelimit.stores.base import Plan

    client = redis.Redis.from_url(url)
    lib = library()
    client.execute_command("FUNCTION", "LOAD", "REPLACE", lib.text)
    check = lib.scripts["check"]
    client.script_load(check.text)
    count_sha = client.script_load(COUNT_SCRIPT)
    return_1_sha = client.script_load("return 1")
    contract_shas = {n: client.script_load(text) for n, text in CONTRACT_SCRIPTS.items()}
    client.execute_command("FUNCTION", "LOAD", "REPLACE", CONTRACT_LIBRARY)

    def usec_per_call(command: str, args: Callable[[int], tuple[Any, ...]]) -> float:
        best = float("inf")
        for _ in range(5):
            client.config_resetstat()
            pipe = client.pipeline(transaction=False)
            for i in range(5000):
                pipe.execute_command(command, *args(i))
            pipe.execute()
            stats = client.info("commandstats")[f"cmdstat_{command.lower()}"]
            best = min(best, float(stats["usec_per_call"]))
        return best

    rows = [
        {
            "case": FLOOR,
            "usec_per_call": usec_per_call(
                "EVALSHA", lambda i: (count_sha, 1, f"rlbench-{run}-lever:{i & 7}", 60_000)
            ),
        },
        {"case": RETURN_1, "usec_per_call": usec_per_call("EVALSHA", lambda i: (return_1_sha, 0))},
    ]
    for n, sha in contract_shas.items():

        def contract_args(i: int, name: str, n: int = n) -> tuple[Any, ...]:
            head = f"rlbench-{run}-lever:{{c{i & 7}}}:"
            return (name, n + 1, *(f"{head}f{p}" for p in PERIODS[:n]), f"{head}override")

        rows.append(
            {
                "case": f"{CONTRACT}, {n} polic{'y' if n == 1 else 'ies'}",
                "fcall_usec_per_call": usec_per_call(
                    "FCALL", lambda i, n=n: contract_args(i, f"contract_{n}")
                ),
                "evalsha_usec_per_call": usec_per_call(
                    "EVALSHA", lambda i, sha=sha: contract_args(i, sha)
                ),
            }
        )
    for algorithm in ALGORITHMS:
        for n in (1, 2):
            policies = our_policies(algorithm, n)
            plan = Plan(policies)

            def args(i: int, name: str, plan: Plan = plan) -> tuple[Any, ...]:
                head = f"rlbench-{run}-lever:{{u{i & 7}}}:"  # the store's key layout:
                keys = [head + state for state in plan.state_ids] + [head + "override"]
                return (name, len(keys), *keys, "", 1, "1", plan.spec)

            subset = lib.script_for("check", plan.codes)
            client.script_load(subset.text)
            fcall = usec_per_call("FCALL", lambda i: args(i, lib.functions["check"]))
            evalsha = usec_per_call("EVALSHA", lambda i: args(i, check.sha))
            own = usec_per_call("EVALSHA", lambda i, sha=subset.sha: args(i, sha))
            rows.append(
                {
                    "case": f"ours, {LABELS[algorithm]}, {n} polic{'y' if n == 1 else 'ies'}",
                    "fcall_usec_per_call": fcall,
                    "evalsha_usec_per_call": evalsha,
                    "evalsha_own_algorithms_usec_per_call": own,
                }
            )
    client.close()
    return rows


def levers_table(rows: list[dict[str, Any]]) -> str:
    lines = []
    for r in rows:
        if "usec_per_call" in r:
            lines.append([r["case"], "—", f"{r['usec_per_call']:.2f}", "—"])
        else:
            lines.append(
                [
                    r["case"],
                    f"{r['fcall_usec_per_call']:.2f}",
                    f"{r['evalsha_usec_per_call']:.2f}",
                    _us(r.get("evalsha_own_algorithms_usec_per_call"), 2),
                ]
            )
    head = ["case", "FCALL µs/call", "EVALSHA µs/call", "EVALSHA, its algorithms only"]
    return h.markdown_table(head, lines, "lrrr")


def cpu_figures(result: h.Result) -> dict[str, Any]:
    """Per check: client and server CPU µs, script calls and ``usec_per_call`` of them."""
    calls = result.totals.get("script_calls", 0.0)
    usec = result.totals.get("script_usec", 0.0)
    client = result.per_call("client_cpu_s", 1e6)
    server = result.per_call("server_cpu_s", 1e6)
    return {
        "client_us": None if client is None else round(client, 2),
        "server_us": None if server is None else round(server, 2),
        "script_calls_per_check": round(calls / result.timed_calls, 3)
        if result.timed_calls
        else None,
        "script_usec_per_call": round(usec / calls, 2) if calls else None,
    }


def _us(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def bench_memory(s: Settings) -> list[dict[str, Any]]:
    import ratelimit as rl

    groups = []
    limits_storage = None
    if installed("limits"):
        from limits.storage import MemoryStorage

        limits_storage = functools.cache(lambda name: MemoryStorage())
    for algorithm in ALGORITHMS:
        for n in (1, 2):
            contenders = {OURS: ours(algorithm, n, rl.MemoryStore(), "rlbench")}
            if limits_storage is not None:
                contenders.update(limits_contenders(algorithm, n, limits_storage))
            if installed("throttled"):
                import throttled

                contenders.update(
                    throttled_contenders(algorithm, n, throttled.MemoryStore(), "rlbench")
                )
            to_close: list[Any] = []
            if installed("pyrate_limiter"):
                extra, to_close = pyrate_contenders(algorithm, n, None, "")
                contenders.update(extra)
            started = time.perf_counter()
            results = run_group(contenders, s.memory_seconds, s)
            for limiter in to_close:
                limiter.close()
            base = results.get("limits")
            rows = {}
            for name, result in results.items():
                row = result.summary()
                row["x_limits"] = None if base is None else round(base.ops / result.ops, 4)
                row["x_limits_paired"] = (
                    None if base is None else round(h.paired_ratio(result, base), 4)
                )
                if contenders[name].note:
                    row["note"] = contenders[name].note
                rows[name] = row
            groups.append(
                {
                    "algorithm": algorithm,
                    "policies": n,
                    "contenders": rows,
                    "seconds": round(time.perf_counter() - started, 2),
                }
            )
            ratio = rows[OURS]["x_limits"]
            shown = "no limits equivalent" if ratio is None else f"ours {ratio:.3f}x limits"
            print(
                f"  memory {LABELS[algorithm]:14} {n} polic{'y' if n == 1 else 'ies'}: {shown}",
                flush=True,
            )
    return groups


def bench_imports(s: Settings) -> dict[str, Any]:
    out: dict[str, Any] = {"runs": s.import_runs}
    for module in ("ratelimit", "limits"):
        if module == "ratelimit" or installed(module):
            out[module] = h.import_time_us(module, runs=s.import_runs, cwd=ROOT)
    if "limits" in out:
        out["ratio"] = round(out["ratelimit"]["median_us"] / out["limits"]["median_us"], 4)
    return out


# --- reporting --------------------------------------------------------------------------------


def _fmt_ops(ops: float) -> str:
    return f"{ops:,.0f}"


def _pol(n: int) -> str:
    return "1" if n == 1 else "2 (+ daily cap)"


def tables(report: dict[str, Any]) -> str:
    redis_rows = []
    for g in report["redis"]:
        for name, r in g["contenders"].items():
            redis_rows.append(
                [
                    LABELS[g["algorithm"]],
                    _pol(g["policies"]),
                    name,
                    _fmt_ops(r["ops_per_s"]),
                    f"{r['p50_us']:.1f}",
                    f"{r['p99_us']:.1f}",
                    f"{r['x_floor']:.2f}x",
                    _us(r.get("client_us")),
                    _us(r.get("server_us")),
                    _us(r.get("script_usec_per_call")),
                ]
            )
    memory_rows = []
    for g in report["memory"]:
        for name, r in g["contenders"].items():
            x = "—" if r["x_limits"] is None else f"{r['x_limits']:.2f}x"
            memory_rows.append(
                [
                    LABELS[g["algorithm"]],
                    _pol(g["policies"]),
                    name,
                    _fmt_ops(r["ops_per_s"]),
                    f"{r['p50_us']:.2f}",
                    f"{r['p99_us']:.2f}",
                    x,
                ]
            )
    head = ["algorithm", "policies", "library", "checks/s", "p50 µs", "p99 µs"]
    cpu_head = ["client µs", "server µs", "script µs/call"]
    parts = [
        f"Redis ({report['server']['name']} {report['server']['version']}, "
        f"{report['pinning_text']})\n",
        h.markdown_table([*head, "time x floor", *cpu_head], redis_rows, "lllrrrrrrr"),
        "\nMemory (in-process)\n",
        h.markdown_table([*head, "time x limits"], memory_rows, "lllrrrr"),
    ]
    imp = report.get("import_time")
    if imp:
        line = f"\n`import ratelimit`: {imp['ratelimit']['median_us'] / 1000:.1f} ms"
        if "limits" in imp:
            line += (
                f"; `import limits`: {imp['limits']['median_us'] / 1000:.1f} ms "
                f"({imp['ratio']:.2f}x; median of {imp['runs']} fresh interpreters)"
            )
        parts.append(line)
    return "\n".join(parts)


def summary_table(report: dict[str, Any]) -> str:
    """The floor, ``limits`` and ours with one and two policies, in one short table: time per
    check against the floor, client and server CPU per check, the script's usec_per_call.
    Figures of a case measured in several groups (the floors) are their medians."""

    def pick(algorithm: str | None, n: int, name: str) -> list[dict[str, Any]]:
        return [
            g["contenders"][name]
            for g in report["redis"]
            if (algorithm is None or g["algorithm"] == algorithm)
            and g["policies"] == n
            and name in g["contenders"]
        ]

    def cells(rows: list[dict[str, Any]]) -> list[str]:
        def med(key: str) -> float | None:
            values = [r[key] for r in rows if r.get(key) is not None]
            return h.median(values) if values else None

        x = med("x_floor")
        return [
            "—" if x is None else f"{x:.2f}",
            _us(med("client_us")),
            _us(med("server_us")),
            _us(med("script_usec_per_call")),
        ]

    lines = [
        ["floor (`INCR` + `PEXPIRE` script)", *cells(pick(None, 1, FLOOR) + pick(None, 2, FLOOR))],
        ["floor (`return 1`)", *cells(pick(None, 1, RETURN_1) + pick(None, 2, RETURN_1))],
        [
            "floor (our contract, no logic), 1 policy: `TIME`, `GET` override, `GET` + `SET`",
            *cells(pick(None, 1, CONTRACT)),
        ],
        [
            "floor (our contract, no logic), 2 policies: the same, `GET` + `SET` per policy",
            *cells(pick(None, 2, CONTRACT)),
        ],
    ]
    for algorithm, label in (("fixed_window", "fixed window"), ("sliding_window", "sliding "
                                                                 "window counter")):  # fmt: skip
        rows = pick(algorithm, 1, "limits")
        if rows:
            lines.append([f"`limits` {label}", *cells(rows)])
    for n in (1, 2):
        for algorithm in ALGORITHMS:
            what = "1 policy" if n == 1 else "2 policies (+ daily cap)"
            lines.append([f"ours, {LABELS[algorithm]}, {what}", *cells(pick(algorithm, n, OURS))])
    return h.markdown_table(
        ["case", "time x floor", "client µs / check", "server µs / check", "script µs / call"],
        lines,
        "lrrrr",
    )


def evaluate_targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    targets = []
    for g in report["redis"]:
        row = g["contenders"][OURS]
        floor = g["contenders"][FLOOR]
        limit = REDIS_TARGET if g["policies"] == 1 else REDIS_TARGET_2
        x = row["x_floor"]
        targets.append(
            {
                "target": f"Redis hit ≤ {limit:.2f}x floor",
                "algorithm": g["algorithm"],
                "policies": g["policies"],
                "measured": x,
                "limit": limit,
                "pass": x <= limit,
            }
        )
        for key, name, limit in (
            ("client_us", "client CPU", CLIENT_TARGET),
            ("server_us", "server CPU", SERVER_TARGET),
        ):
            if key == "server_us" and g["policies"] != 1:
                continue
            if row.get(key) is None or not floor.get(key):
                continue
            x = round(row[key] / floor[key], 4)
            targets.append(
                {
                    "target": f"{name} per check ≤ {limit:.2f}x floor's",
                    "algorithm": g["algorithm"],
                    "policies": g["policies"],
                    "measured": x,
                    "limit": limit,
                    "pass": x <= limit,
                }
            )
    for g in report["memory"]:
        x = g["contenders"][OURS]["x_limits"]
        if x is None:
            continue
        targets.append(
            {
                "target": f"memory hit ≤ {MEMORY_TARGET:.2f}x limits",
                "algorithm": g["algorithm"],
                "policies": g["policies"],
                "measured": x,
                "limit": MEMORY_TARGET,
                "pass": x <= MEMORY_TARGET,
            }
        )
    imp = report.get("import_time") or {}
    if "ratio" in imp:
        targets.append(
            {
                "target": f"import ≤ {IMPORT_TARGET:.2f}x limits",
                "algorithm": None,
                "policies": None,
                "measured": imp["ratio"],
                "limit": IMPORT_TARGET,
                "pass": imp["ratio"] <= IMPORT_TARGET,
            }
        )
    return targets


def targets_table(targets: list[dict[str, Any]]) -> str:
    rows = [
        [
            t["target"],
            LABELS.get(t["algorithm"], "—"),
            t["policies"] or "—",
            f"{t['measured']:.3f}x",
            "pass" if t["pass"] else "MISS",
        ]
        for t in targets
    ]
    return h.markdown_table(
        ["target", "algorithm", "policies", "measured", "result"], rows, "lllrl"
    )


def chart(report: dict[str, Any], path: str) -> str | None:
    """A PNG of time per check: Redis against the floor, memory in µs. None without
    matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(14, 5))
    for ax, section, key, label in (
        (axes[0], "redis", "x_floor", "time per check x floor (lower is better)"),
        (axes[1], "memory", "ns_per_op", "µs per check (lower is better)"),
    ):
        groups = report[section]
        names: list[str] = []
        for g in groups:
            names += [n for n in g["contenders"] if n not in names and n not in FLOORS]
        width = 0.8 / max(len(names), 1)
        for i, name in enumerate(names):
            xs, ys = [], []
            for j, g in enumerate(groups):
                r = g["contenders"].get(name)
                if r is not None:
                    xs.append(j + i * width)
                    ys.append(r[key] / (1000 if key == "ns_per_op" else 1))
            ax.bar(xs, ys, width, label=name)
        ax.set_xticks([j + width * (len(names) - 1) / 2 for j in range(len(groups))])
        ax.set_xticklabels(
            [f"{LABELS[g['algorithm']]}\n{g['policies']} pol." for g in groups], fontsize=8
        )
        ax.set_ylabel(label)
        ax.set_title(f"{section}: ratelimit vs peers")
        if section == "redis":
            ax.axhline(1.0, color="black", linewidth=0.8)
            ax.axhline(REDIS_TARGET, color="red", linewidth=0.8, linestyle="--")
            ax.set_title("redis: time per check x floor (INCR + PEXPIRE script)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def cleanup(url: str, run: str) -> None:
    """Deletes this run's keys from a server we did not start."""
    import redis

    client = redis.Redis.from_url(url)
    batch = []
    for key in client.scan_iter(match=f"*rlbench-{run}*", count=1000):
        batch.append(key)
        if len(batch) == 500:
            client.delete(*batch)
            batch.clear()
    if batch:
        client.delete(*batch)
    client.close()


def source_state() -> dict[str, Any]:
    """The commit measured and whether the core had uncommitted changes (read-only git)."""
    import subprocess

    def git(*args: str) -> str:
        try:
            done = subprocess.run(
                ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=True
            )
        except (OSError, subprocess.SubprocessError):
            return ""
        return done.stdout.rstrip("\n")

    dirty = git("status", "--porcelain", "--", "ratelimit", "lua").splitlines()
    return {
        "commit": git("rev-parse", "HEAD") or None,
        "uncommitted_core_files": [line[3:] for line in dirty],
    }


def server_version(url: str) -> tuple[str, str]:
    import redis

    client = redis.Redis.from_url(url)
    info = client.info("server")
    client.close()
    if "valkey_version" in info:
        return "Valkey", str(info["valkey_version"])
    return "Redis", str(info["redis_version"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis-url", help="use this server instead of starting one")
    parser.add_argument("--quick", action="store_true", help="fewer calls (under 30 s)")
    parser.add_argument(
        "--out",
        default=os.path.join(HERE, "results", "core.json"),
        help="JSON report path (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    s = QUICK if args.quick else FULL
    started = time.perf_counter()
    run = uuid.uuid4().hex[:8]

    import redis
    import redis.utils

    pinning, server, url = h.server_for(args.redis_url)
    name, version = server_version(url)
    skipped = [
        f"{dist} not installed: skipped"
        for dist, module in (
            ("limits", "limits"),
            ("throttled-py", "throttled"),
            ("pyrate-limiter", "pyrate_limiter"),
        )
        if not installed(module)
    ]
    for note in skipped:
        print(f"note: {note}")
    if not redis.utils.HIREDIS_AVAILABLE:
        print("note: hiredis is not installed; every contender uses redis-py's Python parser")
    print(
        f"server: {name} {version} at {url}; {s.rounds} rounds of {s.redis_seconds} s (Redis) "
        f"and {s.memory_seconds} s (memory) per contender, {len(KEYS)} keys",
        flush=True,
    )
    try:
        pid = server.process.pid if server is not None and server.process is not None else None
        redis_groups = bench_redis(url, run, s, pid)
        # CONFIG RESETSTAT and FUNCTION LOAD: only on a server of our own
        levers = bench_levers(url, run) if server is not None else []
    finally:
        if server is not None:
            server.stop()
        else:
            cleanup(url, run)
    memory_groups = bench_memory(s)
    imports = bench_imports(s)

    report: dict[str, Any] = {
        "benchmark": "core",
        "command": " ".join([os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]]),
        "quick": args.quick,
        "settings": {
            "rounds": s.rounds,
            "redis_seconds_per_round": s.redis_seconds,
            "memory_seconds_per_round": s.memory_seconds,
            "warmup_seconds": s.warmup,
            "keys": len(KEYS),
            "import_runs": s.import_runs,
            "policies": {"rate": f"{RATE}/minute", "cap": f"{CAP}/day fixed window"},
        },
        "machine": h.machine_info(),
        "versions": {
            d: h.version_of(d)
            for d in ("redis", "hiredis", "limits", "throttled-py", "pyrate-limiter")
        },
        "server": {
            "name": name,
            "version": version,
            "binary": server.binary if server else None,
            "origin": server.origin if server else "--redis-url",
        },
        "hiredis_parser": bool(redis.utils.HIREDIS_AVAILABLE),
        "source": source_state(),
        "pinning": pinning.as_dict(),
        "pinning_text": pinning.describe(),
        "skipped": skipped,
        "redis": redis_groups,
        "levers": levers,
        "memory": memory_groups,
        "import_time": imports,
    }
    import ratelimit

    report["versions"]["ratelimit"] = ratelimit.__version__
    report["targets"] = evaluate_targets(report)
    report["elapsed_s"] = round(time.perf_counter() - started, 1)
    print()
    print(tables(report))
    print()
    print(summary_table(report))
    print()
    if report["levers"]:
        print(levers_table(report["levers"]))
        print()
    print(targets_table(report["targets"]))
    h.write_json(args.out, report)
    png = chart(report, os.path.splitext(args.out)[0] + ".png")
    print(f"\nJSON: {args.out}" + (f"; chart: {png}" if png else ""))
    print(f"elapsed: {report['elapsed_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
