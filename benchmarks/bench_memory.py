"""Memory benchmark: ``Limiter.hit`` on the ``MemoryStore`` against the in-memory peers.

Per algorithm, with one policy, in the same interleaved rounds (``_harness.interleave``):

- **allowed** hits (1,000,000 per minute, eight keys in turn): ours against ``limits``
  (``MemoryStorage`` with the same strategy: fixed window, sliding window counter) and
  throttled-py (its ``MemoryStore``; the only peer with a token bucket);
- **denied** hits (a limit of 1 per hour, spent before the rounds): the same contenders.

The target (issue 8, item 5): our allowed hit at most 0.5x the time of the fastest comparable
peer's (``limits`` for the windows, throttled-py for the token bucket). Figures are the median
over rounds of each round's calls per second; ``x peer`` is our time per call over the peer's
(below 1: faster). Writes ``benchmarks/results/memory.json``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)  # measure this checkout's ratelimit, not an installed copy
sys.path.insert(0, HERE)

import _harness as h  # noqa: E402

ALGORITHMS = ("fixed_window", "sliding_window", "token_bucket")
KEYS = [f"user:{i}" for i in range(8)]
ALLOW = 1_000_000  # per minute: never denies in a run
TARGET = 0.50
#: the comparable peer of each algorithm (the one the target is judged against)
PEER = {"fixed_window": "limits", "sliding_window": "limits", "token_bucket": "throttled-py"}

Hit = Callable[[str], object]


def ours(algorithm: str, deny: bool) -> Hit:
    import ratelimit as rl

    limit, period = (1, 3600) if deny else (ALLOW, 60)
    policy = {
        "fixed_window": rl.FixedWindow(limit, period),
        "sliding_window": rl.SlidingWindow(limit, period),
        "token_bucket": rl.TokenBucket(limit, period),
    }[algorithm]
    return rl.Limiter(policy, store=rl.MemoryStore()).hit


def limits_peer(algorithm: str, deny: bool) -> Hit | None:
    try:
        from limits import RateLimitItemPerHour, RateLimitItemPerMinute, strategies
        from limits.storage import MemoryStorage
    except ImportError:
        return None
    strategy = {
        "fixed_window": strategies.FixedWindowRateLimiter,
        "sliding_window": strategies.SlidingWindowCounterRateLimiter,
    }.get(algorithm)
    if strategy is None:
        return None
    item = RateLimitItemPerHour(1) if deny else RateLimitItemPerMinute(ALLOW)
    hit = strategy(MemoryStorage()).hit
    return lambda key: hit(item, key)


def throttled_peer(algorithm: str, deny: bool) -> Hit | None:
    try:
        import throttled
    except ImportError:
        return None
    quota = throttled.per_hour(1, burst=1) if deny else throttled.per_min(ALLOW, burst=ALLOW)
    return throttled.Throttled(using=algorithm, quota=quota, store=throttled.MemoryStore()).limit


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--seconds", type=float, default=0.1, help="per contender and round")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "memory.json"))
    args = parser.parse_args(argv)
    pinning = h.Pinning()
    h.pin_process(pinning)
    print(f"pinning: {pinning.describe()}", flush=True)
    started = time.perf_counter()
    groups = []
    rows = []
    for algorithm in ALGORITHMS:
        for deny in (False, True):
            contenders: dict[str, Hit] = {"ratelimit": ours(algorithm, deny)}
            for name, make in (("limits", limits_peer), ("throttled-py", throttled_peer)):
                fn = make(algorithm, deny)
                if fn is not None:
                    contenders[name] = fn
            if deny:
                for fn in contenders.values():
                    for key in KEYS:
                        fn(key)  # spend the one allowed hit of every key
            results = h.interleave(
                contenders, KEYS, rounds=args.rounds, seconds=args.seconds, warmup=0.05
            )
            base = results["ratelimit"]
            out: dict[str, Any] = {}
            for name, result in results.items():
                row = result.summary()
                if name != "ratelimit":
                    row["ours_x_this"] = round(result.ops / base.ops, 4)
                    row["ours_x_this_paired"] = round(h.paired_ratio(base, result), 4)
                out[name] = row
            peer = PEER[algorithm]
            group = {
                "algorithm": algorithm,
                "check": "denied" if deny else "allowed",
                "peer": peer,
                "ours_x_peer": out.get(peer, {}).get("ours_x_this"),
                "ours_x_peer_paired": out.get(peer, {}).get("ours_x_this_paired"),
                "contenders": out,
            }
            groups.append(group)
            for name, row in out.items():
                ratio = f"{row['ours_x_this']:.2f}x" if "ours_x_this" in row else "-"
                rows.append(
                    [algorithm.replace("_", " "), group["check"], name,
                     f"{row['ops_per_s']:,.0f}", f"{row['ns_per_op'] / 1000:.2f}", ratio]
                )  # fmt: skip
            shown = group["ours_x_peer"]
            print(
                f"  {algorithm:14} {group['check']:7}: ours "
                + (f"{shown:.3f}x {peer}'s time" if shown is not None else f"({peer} missing)"),
                flush=True,
            )
    print()
    print(
        h.markdown_table(
            ["algorithm", "check", "library", "checks/s", "µs/check", "ours x this"],
            rows,
            "lllrrr",
        )
    )
    targets = [
        {
            "algorithm": g["algorithm"],
            "peer": g["peer"],
            "ours_x_peer": g["ours_x_peer"],
            "ours_x_peer_paired": g["ours_x_peer_paired"],
            "target": TARGET,
            "met": g["ours_x_peer"] is not None and g["ours_x_peer"] <= TARGET,
        }
        for g in groups
        if g["check"] == "allowed"
    ]
    print()
    for t in targets:
        verdict = "pass" if t["met"] else "MISS"
        print(
            f"target {t['algorithm']}: ours {t['ours_x_peer']}x {t['peer']} "
            f"(paired {t['ours_x_peer_paired']}x), <= {TARGET}: {verdict}"
        )
    report = {
        "benchmark": "memory",
        "command": " ".join([os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]]),
        "settings": {"rounds": args.rounds, "seconds_per_round": args.seconds, "keys": len(KEYS)},
        "machine": h.machine_info(),
        "load_average": os.getloadavg(),
        "versions": {d: h.version_of(d) for d in ("limits", "throttled-py")},
        "pinning": pinning.as_dict(),
        "groups": groups,
        "targets": targets,
        "elapsed_s": round(time.perf_counter() - started, 1),
    }
    h.write_json(args.out, report)
    print(f"\nJSON: {args.out}; elapsed {report['elapsed_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
