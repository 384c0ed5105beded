"""Cold start: what ``import ratelimit`` costs a serverless function, against ``import limits``.

::

    python benchmarks/bench_import.py [--runs 11] [--out benchmarks/results/import.json]

For each module, the median over ``--runs`` fresh interpreters of ``python -X importtime -c
"import <module>"`` (the cumulative time of the top-level module, bytecode caches warm), and
the ratio to ``limits`` measured the same way in the same run. Target: ratelimit ≤ 1/4 of
limits. For context it also times ``upstash_redis`` (what building an ``UpstashStore`` adds)
and ``asyncio``. It then checks, in a fresh interpreter, that ``import ratelimit`` imports
none of redis, httpx, upstash_redis, starlette, fastapi, flask, asyncio. Prints Markdown,
writes JSON, and exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)  # measure this checkout's ratelimit, not an installed copy
sys.path.insert(0, HERE)

import _harness as h  # noqa: E402

TARGET = 0.25  # ratelimit's import time / limits', at most
HEAVY = ("redis", "httpx", "upstash_redis", "starlette", "fastapi", "flask", "asyncio")
CONTEXT = ("upstash_redis", "asyncio")

PROBE = """
import json, sys
before = set(sys.modules)
import ratelimit
new = set(sys.modules) - before
heavy = {heavy!r}
print(json.dumps({{"imported": sorted(m for m in new if m.split(".")[0] in heavy),
                  "preloaded": sorted(m for m in heavy if m in before),
                  "new_modules": len(new)}}))
"""


def heavy_imports() -> dict[str, Any]:
    """Which of HEAVY a fresh ``import ratelimit`` brings in (and how many modules in all)."""
    done = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY)], cwd=ROOT,
                          capture_output=True, text=True, check=True)  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def measure(runs: int) -> dict[str, Any]:
    times: dict[str, Any] = {}
    for module in ("ratelimit", "limits", *CONTEXT):
        if (
            module != "ratelimit"
            and h.version_of(module.replace("_", "-")) is None
            and (module != "asyncio")
        ):
            continue
        times[module] = h.import_time_us(module, runs=runs, cwd=ROOT)
    report: dict[str, Any] = {
        "machine": h.machine_info(),
        "runs": runs,
        "method": 'python -X importtime -c "import <module>": cumulative µs of the top-level '
        "module, median of fresh interpreters",
        "versions": {
            "limits": h.version_of("limits"),
            "upstash-redis": h.version_of("upstash-redis"),
        },
        "import_time": times,
        "heavy": heavy_imports(),
    }
    if "limits" in times:
        report["ratio"] = round(times["ratelimit"]["median_us"] / times["limits"]["median_us"], 4)
    return report


def tables(report: dict[str, Any]) -> str:
    times = report["import_time"]
    base = times.get("limits", {}).get("median_us")
    rows = []
    for module, t in times.items():
        ratio = "—" if base is None else f"{t['median_us'] / base:.3f}x"
        spread = f"{min(t['runs_us']) / 1000:.1f}-{max(t['runs_us']) / 1000:.1f}"
        rows.append([f"`import {module}`", f"{t['median_us'] / 1000:.1f}", spread, ratio])
    lines = [
        f"Import time, median of {report['runs']} fresh interpreters "
        f"(`python -X importtime`, Python {report['machine']['python']})\n",
        h.markdown_table(["import", "median ms", "range ms", "x limits"], rows, "lrrr"),
        "",
    ]
    if "ratio" in report:
        verdict = "pass" if report["ratio"] <= TARGET else "MISS"
        lines.append(f"Target `import ratelimit` ≤ {TARGET:.2f}x `import limits`: "
                     f"{report['ratio']:.3f}x — {verdict}")  # fmt: skip
    heavy = report["heavy"]
    found = ", ".join(heavy["imported"]) or "none"
    verdict = "pass" if not heavy["imported"] else "MISS"
    lines.append(f"`import ratelimit` imports {heavy['new_modules']} modules; of "
                 f"{', '.join(HEAVY)}: {found} — {verdict}")  # fmt: skip
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=11, help="fresh interpreters per module")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "import.json"))
    args = parser.parse_args()
    report = measure(args.runs)
    text = tables(report)
    report["markdown"] = text
    h.write_json(args.out, report)
    with open(os.path.splitext(args.out)[0] + ".md", "w", encoding="utf-8") as f:
        f.write(text + "\n")
    print(text)
    print(f"\nwrote {args.out}")
    missed = report["heavy"]["imported"] or report.get("ratio", 0.0) > TARGET
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
