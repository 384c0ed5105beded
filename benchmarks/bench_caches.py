"""What the bounded caches cost the paths that read them, against an earlier revision.

::

    python benchmarks/bench_caches.py --base REF [--runs 9]

Times, in CPU nanoseconds per call (``time.process_time``: on a shared machine wall-clock
time also counts other processes' slices), the hits of the limiter's key cache, of
``client_ip``'s address cache, the header renderer (its text caches) and the cache of denied
keys, the stores into them under a flood of new keys, and a whole memory-store ``hit``. Each
run is a fresh process, alternating this checkout and REF (``_harness.against_ref``); a
figure is the fastest of three batches in a run, and the table shows the median over runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import _harness as h  # noqa: E402

_CASES = """
import json, time, timeit
import ratelimit as rl
from ratelimit import keys
from ratelimit.cache import DeniedCache
from ratelimit.headers import Renderer

limiter = rl.Limiter(rl.parse("10/second; 100/minute"), clock=lambda: 1.0)
ip = keys.client_ip(trusted_proxies=["10.0.0.0/8"])
ip._address("203.0.113.9")
renderer = Renderer("ietf")
decision = limiter.hit("user:42")
denied = DeniedCache(10_000)
one = rl.Limiter("1/minute", clock=lambda: 1.0)
one.hit("x")
denial = one.hit("x")
denied.put("x", 1, denial, 1000)
n = [0]

def flood_keys():
    n[0] += 1
    limiter.keys(f"k{n[0]}")

def flood_denied():
    n[0] += 1
    denied.put(f"k{n[0]}", 1, denial, 1000)

cases = {
    "Limiter.keys, hit": lambda: limiter.keys("user:42"),
    "client_ip address, hit": lambda: ip._address("203.0.113.9"),
    "Renderer.raw_fields": lambda: renderer.raw_fields(decision),
    "Renderer.fields": lambda: renderer.fields(decision),
    "DeniedCache.get, hit": lambda: denied.get("x", 1, 1500),
    "Limiter.keys, new key (flood)": flood_keys,
    "DeniedCache.put (flood)": flood_denied,
    "memory Limiter.hit": lambda: limiter.hit("user:42"),
}
out = {}
for name, fn in cases.items():
    timer = timeit.Timer(fn, timer=time.process_time)
    out[name] = min(timer.timeit(number=50_000) / 50_000 * 1e9 for _ in range(3))
print(json.dumps(out))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="git revision to compare with")
    parser.add_argument("--runs", type=int, default=9, help="processes per tree")
    args = parser.parse_args()
    outputs = h.against_ref(ROOT, args.base, _CASES, args.runs)
    runs = {name: [json.loads(out) for out in outs] for name, outs in outputs.items()}
    rows = []
    for case in runs["this checkout"][0]:
        ours = h.median([run[case] for run in runs["this checkout"]])
        theirs = h.median([run[case] for run in runs[args.base]])
        rows.append([case, f"{theirs:,.1f}", f"{ours:,.1f}", f"{ours / theirs:.2f}"])
    print(h.markdown_table(["case", f"{args.base} ns", "this checkout ns", "ratio"], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
