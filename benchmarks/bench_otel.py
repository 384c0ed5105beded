"""What OpenTelemetry metrics cost a check: ``ratelimit.otel.Metrics`` against a no-op listener.

::

    python benchmarks/bench_otel.py [--quick] [--base REF] [--out benchmarks/results/otel.json]

On a memory store (the cheapest check there is, so the listener's share is the largest) it
times ``Limiter.hit`` interleaved in rounds (``_harness.interleave``) with:

- no listener (``on_event=None``),
- a no-op listener (``on_event=lambda event: None``): what any listener costs the limiter
  (the Event, the store-call timing),
- ``Metrics()`` (counts per check; the store durations the limiter timed, about 100 a second,
  recorded in the SDK histogram), on an SDK MeterProvider with an in-memory reader.

The target: Metrics at most 5% of a memory-store check's time above the no-op listener,
as the median over rounds of the paired ratio of CPU time per check (``time.thread_time``:
on a shared machine, wall-clock time also counts the slices other processes get). The CPU
rounds are short and many, interleaved, so that the two figures of a pair ran under the same
conditions and a neighbour's burst spoils a few pairs, not the median: 100 rounds of 8,000
checks per contender in each of 5 fresh processes (``--quick``: 40 of 4,000 in 3), pooled,
since each process's memory layout and hash seed shift its figures by about a point; every
process's median and the interquartile range of the pooled ratios are reported beside it.
All contenders use the same prefix, so their memory stores hold the same keys. Wall-clock
throughput and p50/p99 latency come from ``_harness.interleave`` as in the other benchmarks.

``--base REF`` runs the same CPU rounds for the git revision REF (extracted to a temporary
folder) in as many processes, alternating with this checkout's: a before/after of the
overhead from one command. It also times the hot path without a listener in both, to show
that listener support costs nothing to users without one. Prints Markdown and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)  # measure this checkout's ratelimit, not an installed copy
sys.path.insert(0, HERE)

import _harness as h  # noqa: E402

LIMIT = "1000000000/minute"  # every hit of the run is allowed
KEYS = [f"user:{i}" for i in range(8)]
TARGET = 0.05  # Metrics' time above the no-op listener, as a share of a check, at most

# One process's figure for --base: ns per hit without a listener (best of 5 x 200,000).
_HOT_PATH = """
import time, timeit, ratelimit as rl
limiter = rl.Limiter("1000000000/minute")
keys = [f"user:{i}" for i in range(8)]
def run():
    for k in keys:
        limiter.hit(k)
print(min(timeit.repeat(run, number=25_000, repeat=5, timer=time.thread_time)) / 200_000 * 1e9)
"""

# One process's CPU rounds (``cpu_rounds``) of the contenders, for the ratelimit on its
# PYTHONPATH: imported before this file's folder is put on the path.
_CPU_ROUNDS = """
import json, sys
import ratelimit, ratelimit.otel
sys.path.insert(0, {here!r})
import bench_otel
calls, reader = bench_otel.contenders()
figures = bench_otel.cpu_rounds(calls, {rounds}, {checks})
reader.get_metrics_data()
print(json.dumps({{"ratelimit": ratelimit.__file__, "figures": figures}}))
"""


def contenders() -> tuple[dict[str, Any], Any]:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    import ratelimit as rl
    from ratelimit.otel import Metrics

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    metrics = Metrics(provider)
    # one prefix for all: the same store keys, so the same dict layouts in their memory stores
    limiters = {
        "no listener": rl.Limiter(LIMIT, prefix="bench"),
        "no-op listener": rl.Limiter(LIMIT, prefix="bench", on_event=lambda event: None),
        "Metrics()": rl.Limiter(LIMIT, prefix="bench", on_event=metrics),
    }
    return {name: limiter.hit for name, limiter in limiters.items()}, reader


def cpu_rounds(calls: dict[str, Any], rounds: int, n: int) -> dict[str, list[float]]:
    """CPU ns per call of each contender, one figure per round, interleaved as
    ``_harness.interleave`` does (order reversed on odd rounds)."""
    clock = time.thread_time_ns
    figures: dict[str, list[float]] = {name: [] for name in calls}
    names = list(calls)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            fn = calls[name]
            start = clock()
            for _ in range(n // len(KEYS)):
                for key in KEYS:
                    fn(key)
            figures[name].append((clock() - start) / (n // len(KEYS) * len(KEYS)))
    return figures


def cpu_processes(processes: int, rounds: int, checks: int, ref: str | None) -> dict[str, Any]:
    """``cpu_rounds`` in ``processes`` fresh interpreters (for ``ref`` too when given,
    alternating with this checkout): each process has its own memory layout and hash seed,
    which shift its figures a little, so the pairs of all processes are pooled. Per
    checkout: each contender's CPU ns per round, and every process's median paired ratio
    against the no-op listener."""
    code = _CPU_ROUNDS.format(here=HERE, rounds=rounds, checks=checks)
    if ref is None:
        outputs = {"this checkout": [h.python_output(code, ROOT) for _ in range(processes)]}
    else:
        outputs = h.against_ref(ROOT, ref, code, processes)
    found: dict[str, Any] = {}
    for name, outs in outputs.items():
        runs = [json.loads(out) for out in outs]
        if name == "this checkout" and not all(r["ratelimit"].startswith(ROOT) for r in runs):
            raise RuntimeError(f"a CPU process measured another ratelimit: {runs[0]['ratelimit']}")
        pooled: dict[str, list[float]] = {}
        for run in runs:
            for contender, figures in run["figures"].items():
                pooled.setdefault(contender, []).extend(figures)
        found[name] = {
            "cpu": pooled,
            "process_ratios": [
                round(h.median(paired(run["figures"], "Metrics()")), 4) for run in runs
            ],
        }
    return found


def paired(figures: dict[str, list[float]], name: str) -> list[float]:
    """``name``'s CPU time per check over the no-op listener's, round by round, sorted."""
    return sorted(a / b for a, b in zip(figures[name], figures["no-op listener"], strict=True))


def hot_path_vs_base(ref: str, runs: int) -> dict[str, Any]:
    """ns per hit without a listener: this checkout against ``ref``, alternating processes."""
    outputs = h.against_ref(ROOT, ref, _HOT_PATH, runs)
    figures = {name: [float(out) for out in outs] for name, outs in outputs.items()}
    ours, theirs = h.median(figures["this checkout"]), h.median(figures[ref])
    return {
        "ref": ref,
        "runs": runs,
        "ns_per_hit": {"this checkout": round(ours, 1), ref: round(theirs, 1)},
        "ratio": round(ours / theirs, 4),
        "samples": figures,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds")
    parser.add_argument("--base", help="git revision to compare the no-listener hot path with")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "otel.json"))
    args = parser.parse_args()
    rounds, seconds = (5, 0.3) if args.quick else (15, 1.0)
    # fresh processes x interleaved CPU rounds x checks per contender and round
    processes, cpu_round_count, cpu_calls = (3, 40, 4_000) if args.quick else (5, 100, 8_000)
    started = time.perf_counter()

    calls, reader = contenders()
    results = h.interleave(calls, KEYS, rounds=rounds, seconds=seconds, warmup=0.2)
    reader.get_metrics_data()  # the observable counters are read here, off the hot path
    found = cpu_processes(processes, cpu_round_count, cpu_calls, args.base)
    cpu = found["this checkout"]["cpu"]
    rows = []
    report_rows: dict[str, Any] = {}
    for name, result in results.items():
        ratios = paired(cpu, name)
        ratio = h.median(ratios)
        rows.append(
            [
                name,
                f"{h.median(cpu[name]):,.0f}",
                f"{ratio:.3f}",
                f"{result.ops:,.0f}",
                f"{result.latency_us(50):.2f}",
                f"{result.latency_us(99):.2f}",
            ]
        )
        report_rows[name] = {
            **result.summary(),
            "cpu_ns_per_check": round(h.median(cpu[name]), 1),
            "cpu_ns_rounds": [round(x, 1) for x in cpu[name]],
            "cpu_time_vs_noop_listener": round(ratio, 4),
            "cpu_time_vs_noop_listener_iqr": [
                round(h.percentile(ratios, 25), 4),
                round(h.percentile(ratios, 75), 4),
            ],
        }
    overhead = report_rows["Metrics()"]["cpu_time_vs_noop_listener"] - 1
    low, high = (x - 1 for x in report_rows["Metrics()"]["cpu_time_vs_noop_listener_iqr"])
    process_ratios = found["this checkout"]["process_ratios"]
    report: dict[str, Any] = {
        "benchmark": "otel",
        "command": " ".join([os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]]),
        "settings": {
            "rounds": rounds,
            "seconds_per_round": seconds,
            "cpu_processes": processes,
            "cpu_rounds_per_process": cpu_round_count,
            "checks_per_cpu_round": cpu_calls,
            "keys": len(KEYS),
        },
        "machine": h.machine_info(),
        "versions": {d: h.version_of(d) for d in ("opentelemetry-api", "opentelemetry-sdk")},
        "memory": report_rows,
        "metrics_overhead_vs_noop": round(overhead, 4),
        "metrics_vs_noop_per_process": process_ratios,
        "target": {"at_most": TARGET, "met": overhead <= TARGET},
    }
    print(
        h.markdown_table(
            ["memory store, 1 policy", "CPU ns/check", "x no-op", "checks/s", "p50 us", "p99 us"],
            rows,
        )
    )
    verdict = "met" if overhead <= TARGET else "MISSED"
    pairs = processes * cpu_round_count
    print(f"\nMetrics() above the no-op listener: {overhead:+.1%} of a check, median of {pairs} "
          f"paired rounds in {processes} processes (IQR {low:+.1%} to {high:+.1%}; per "
          f"process {', '.join(f'{r - 1:+.1%}' for r in process_ratios)}; target "
          f"<= {TARGET:.0%}: {verdict})")  # fmt: skip
    if args.base:
        theirs = found[args.base]
        their = h.median(paired(theirs["cpu"], "Metrics()")) - 1
        report["metrics_overhead_vs_noop_at_base"] = {
            "ref": args.base,
            "overhead": round(their, 4),
            "per_process": theirs["process_ratios"],
            "cpu_ns_per_check": {k: round(h.median(v), 1) for k, v in theirs["cpu"].items()},
        }
        print(f"Metrics() above the no-op listener at {args.base}: {their:+.1%} (same rounds, "
              "alternating processes)")  # fmt: skip
        report["hot_path_vs_base"] = base = hot_path_vs_base(args.base, 5 if args.quick else 9)
        print(
            f"no listener, ns per hit: this checkout {base['ns_per_hit']['this checkout']}, "
            f"{args.base} {base['ns_per_hit'][args.base]} (ratio {base['ratio']:.3f})"
        )
    report["elapsed_s"] = round(time.perf_counter() - started, 1)
    h.write_json(args.out, report)
    print(f"JSON: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
