"""What overrides cost a check of an identifier that has none: the server time of the ``check``
entry point before overrides existed against now, in the same run, on the same server.

::

    python benchmarks/bench_overrides.py [--quick] [--out benchmarks/results/overrides.json]

"Before" is the Lua of the commit that preceded overrides (``BEFORE``, read with ``git show``):
loaded as its own function library (and script) beside today's, so both run on one server in
one process, called through the same redis-py client with the same arguments; only the keys
differ as each version names them (before: ``<prefix>:{id}:<policy id>``; now: the state keys
by shape, then the override key, which is absent). Per algorithm, with one policy and with
two (the algorithm plus a daily fixed-window cap), it times, interleaved in rounds:

- ``FCALL`` before / before again (a second copy of the same code: the A/A pair, this
  machine's noise) / now without an override / now with one (same shape, other numbers);
- ``EVALSHA`` before / now without an override (the cluster and Upstash path);
- ``FCALL`` and ``EVALSHA`` of today's Lua with the override read taken out of ``check``
  (:func:`without_overrides`): "before" also lacks everything built since (leases, settle), so
  this pair ("x without") is the one that isolates what overrides cost.

For each: the server's CPU per check (``/proc/<pid>/stat`` of the server it starts, pinned to
its own CPU) and ``usec_per_call`` of the command (``INFO commandstats``), as the median over
rounds of the ratio now / before (or now / without) within each round (paired: a neighbour's
load lands on both). The issue's bound: at most 1.05 for a check without an override. Prints
Markdown, writes JSON.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import uuid
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)  # measure this checkout's ratelimit, not an installed copy
sys.path.insert(0, HERE)

import _harness as h  # noqa: E402

#: The commit before overrides: its lua/ is "before".
BEFORE = "18a2535"
ALGORITHMS = ("fixed_window", "sliding_window", "token_bucket")
RATE = 1_000_000  # per minute: every check of the run is allowed
CAP = 10_000_000  # per day: the second policy
KEYS = [f"user:{i}" for i in range(8)]
TARGET = 1.05  # server time now / before, at most, for a check without an override
FULL = {"rounds": 15, "seconds": 0.25, "warmup": 0.1}
QUICK = {"rounds": 5, "seconds": 0.05, "warmup": 0.02}


def before_library() -> Any:
    """The Library (ratelimit/scripts.py) of the Lua at ``BEFORE``."""
    from ratelimit.scripts import Library

    def show(path: str) -> str:
        return subprocess.run(["git", "show", f"{BEFORE}:{path}"], cwd=ROOT, check=True,
                              capture_output=True, text=True).stdout  # fmt: skip

    names = (
        "common.lua",
        "fixed_window.lua",
        "sliding_window.lua",
        "token_bucket.lua",
        "limiter.lua",
    )  # fmt: skip  (ratelimit.scripts.LUA_FILES at BEFORE)
    return Library("\n".join(show(f"lua/{name}") for name in names))


def copy_of(lib: Any) -> Any:
    """The same Lua as another library (a comment makes its name differ): the A/A pair that
    shows this machine's noise and any bias of the order of calls."""
    from ratelimit.scripts import Library

    body = lib.text.split("\n", 1)[1].rsplit("\nredis.register_function", len(lib.functions))[0]
    return Library(body + "\n-- the same code again, for an A/A comparison\n")


#: What today's check does for overrides, and the same lines without it (the override key is
#: still passed, never read): ``without_overrides`` fails loudly when the driver changes.
_READ = "  local text = redis.call('GET', keys[#keys])\n"
_READ_WITHOUT = "  local text = false\n"


def without_overrides() -> Any:
    """Today's Lua with the override read taken out of ``check`` (no GET of the override key;
    no override ever applies): the same check as today's, as if overrides did not
    exist, so that the pair isolates what they cost. Raises RuntimeError when ``check`` no
    longer reads the override this way (update the patch with the driver)."""
    from ratelimit.scripts import LUA_FILES, Library, lua_dir

    parts = []
    for name in LUA_FILES:
        with open(os.path.join(lua_dir(), name), encoding="utf-8") as f:
            text = f.read()
        if name == "limiter.lua":
            if text.count(_READ) != 1:
                raise RuntimeError("lua/limiter.lua check() changed: update without_overrides()")
            text = text.replace(_READ, _READ_WITHOUT)
        parts.append(text)
    return Library("\n".join(parts), parts)


def policies(algorithm: str, n: int, rate: int = RATE) -> list[Any]:
    import ratelimit as rl

    first = {
        "fixed_window": rl.FixedWindow(rate, 60),
        "sliding_window": rl.SlidingWindow(rate, 60),
        "token_bucket": rl.TokenBucket(rate, 60),
    }[algorithm]
    return [first] if n == 1 else [first, rl.FixedWindow(CAP, 86400)]


def contenders(client: Any, before: Any, again: Any, bare: Any, run: str, algorithm: str,
               n: int) -> dict[str, Any]:  # fmt: skip
    """name -> a callable of one identifier making one check (charge 1, server time)."""
    import ratelimit as rl
    from ratelimit.scripts import library
    from ratelimit.stores.base import Plan

    now = library()
    ps = policies(algorithm, n)
    limiter = rl.Limiter(ps, prefix=f"rlbench-{run}-now")
    spec = Plan(ps).spec_bytes  # the plan text is the same in both versions
    old_keys = {k: [f"rlbench-{run}-before:{{{k}}}:{p.id}" for p in ps] for k in KEYS}
    again_keys = {k: [f"rlbench-{run}-again:{{{k}}}:{p.id}" for p in ps] for k in KEYS}
    new_keys = {k: limiter._keys_of(k) for k in KEYS}
    over = rl.Limiter(ps, prefix=f"rlbench-{run}-over")
    over_keys = {k: over._keys_of(k) for k in KEYS}
    bumped = Plan(policies(algorithm, n, RATE + 1))  # the same shapes, other numbers
    for k in KEYS:
        client.set(over_keys[k][-1], bumped.spec)
    execute = client.execute_command
    argv = (b"", 1, b"1", spec)

    def call(command: str, name: str, keys: dict[str, list[str]]) -> Any:
        def check(key: str) -> object:
            ks = keys[key]
            return execute(command, name, len(ks), *ks, *argv)

        return check

    return {
        "FCALL before": call("FCALL", before.functions["check"], old_keys),
        "FCALL before, again (A/A)": call("FCALL", again.functions["check"], again_keys),
        "FCALL now, no override": call("FCALL", now.functions["check"], new_keys),
        "FCALL now, with override": call("FCALL", now.functions["check"], over_keys),
        "EVALSHA before": call("EVALSHA", before.scripts["check"].sha, old_keys),
        "EVALSHA now, no override": call("EVALSHA", now.scripts["check"].sha, new_keys),
        "FCALL now, without overrides": call("FCALL", bare.functions["check"], new_keys),
        "EVALSHA now, without overrides": call("EVALSHA", bare.scripts["check"].sha, new_keys),
    }


PAIRS = (
    ("FCALL before, again (A/A)", "FCALL before"),
    ("FCALL now, no override", "FCALL before"),
    ("FCALL now, with override", "FCALL before"),
    ("EVALSHA now, no override", "EVALSHA before"),
)
#: The bound's pairs: today's check of an identifier without an override against today's code
#: with the override read taken out (see without_overrides).
BARE_PAIRS = (
    ("FCALL now, no override", "FCALL now, without overrides"),
    ("EVALSHA now, no override", "EVALSHA now, without overrides"),
)


def measure(group: dict[str, Any], settings: dict[str, Any], probe: Any) -> dict[str, Any]:
    """Per contender, per round: server µs per check and usec_per_call; then the paired
    medians of now / before."""
    per_round: dict[str, dict[str, list[float]]] = {
        name: {"server_us": [], "usec_per_call": [], "ops": []} for name in group
    }
    h.interleave(group, KEYS, rounds=1, seconds=settings["warmup"], warmup=0.0)
    for _ in range(settings["rounds"]):
        results = h.interleave(group, KEYS, rounds=1, seconds=settings["seconds"], warmup=0.0,
                               probe=probe)  # fmt: skip
        for name, result in results.items():
            server = result.per_call("server_cpu_s", 1e6)
            calls = result.totals.get("script_calls", 0.0)
            if server is not None:
                per_round[name]["server_us"].append(server)
            if calls:
                per_round[name]["usec_per_call"].append(result.totals["script_usec"] / calls)
            per_round[name]["ops"].append(result.ops)
    rows: dict[str, Any] = {
        name: {k: round(h.median(v), 3) for k, v in figures.items() if v}
        for name, figures in per_round.items()
    }
    for pairs, suffix in ((PAIRS, "x_before"), (BARE_PAIRS, "x_without")):
        for after, before in pairs:
            for figure in ("server_us", "usec_per_call"):
                a, b = per_round[after][figure], per_round[before][figure]
                if a and b:
                    ratios = [x / y for x, y in zip(a, b, strict=True) if y]
                    rows[after][f"{figure}_{suffix}"] = round(h.median(ratios), 4)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls (under 30 s)")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "overrides.json"))
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL
    import redis

    pinning = h.Pinning()
    server = h.start_server(pinning)
    h.pin_process(pinning)
    print(f"pinning: {pinning.describe()}", flush=True)
    run = uuid.uuid4().hex[:8]
    started = time.perf_counter()
    groups = []
    try:
        client = redis.Redis.from_url(server.url)
        before = before_library()
        again = copy_of(before)
        bare = without_overrides()
        from ratelimit.scripts import library

        for lib in (before, again, bare, library()):
            client.execute_command("FUNCTION", "LOAD", "REPLACE", lib.text)
            for script in lib.scripts.values():
                client.script_load(script.text)
        pid = server.process.pid if server.process is not None else None
        probe = h.server_probe(client, pid)
        for algorithm in ALGORITHMS:
            for n in (1, 2):
                rows = measure(contenders(client, before, again, bare, run, algorithm, n),
                               settings, probe)  # fmt: skip
                groups.append({"algorithm": algorithm, "policies": n, "contenders": rows})
                aa = rows["FCALL before, again (A/A)"]
                no = rows["FCALL now, no override"]
                ev = rows["EVALSHA now, no override"]
                print(
                    f"  {algorithm:14} {n}: A/A x{aa.get('usec_per_call_x_before')} "
                    f"usec_per_call; FCALL no override x{no.get('server_us_x_before')} "
                    f"server CPU, x{no.get('usec_per_call_x_before')} usec_per_call; EVALSHA "
                    f"x{ev.get('server_us_x_before')}, x{ev.get('usec_per_call_x_before')}; "
                    f"against today's code without overrides: FCALL server CPU "
                    f"x{no.get('server_us_x_without')}, usec_per_call "
                    f"x{no.get('usec_per_call_x_without')}; EVALSHA "
                    f"x{ev.get('server_us_x_without')}, x{ev.get('usec_per_call_x_without')}",
                    flush=True,
                )
        client.close()
    finally:
        server.stop()
    summary = {}
    for after, _ in PAIRS + BARE_PAIRS:
        for figure in ("server_us_x_before", "usec_per_call_x_before", "server_us_x_without",
                       "usec_per_call_x_without"):  # fmt: skip
            values = [g["contenders"][after][figure] for g in groups
                      if figure in g["contenders"][after]]  # fmt: skip
            if values:
                summary[f"{after}: {figure}"] = round(h.median(values), 4)
    report = {
        "benchmark": "overrides",
        "command": " ".join([os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]]),
        "before": BEFORE,
        "target": TARGET,
        "settings": settings,
        "machine": h.machine_info(),
        "pinning": pinning.as_dict(),
        "groups": groups,
        "summary": summary,
        "seconds": round(time.perf_counter() - started, 1),
    }
    h.write_json(args.out, report)
    head = ["algorithm", "policies", "check", "server µs", "x before", "x without",
            "µs/call", "x before", "x without"]  # fmt: skip
    table = []
    for g in groups:
        for name, row in g["contenders"].items():
            table.append([
                g["algorithm"], str(g["policies"]), name, f"{row.get('server_us', 0):.2f}",
                str(row.get("server_us_x_before", "")), str(row.get("server_us_x_without", "")),
                f"{row.get('usec_per_call', 0):.2f}", str(row.get("usec_per_call_x_before", "")),
                str(row.get("usec_per_call_x_without", "")),
            ])  # fmt: skip
    print(h.markdown_table(head, table, "lllrrrrrr"))
    for key, value in summary.items():
        print(f"median over groups, {key}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
