"""What each algorithm admits under the same bursty traffic: docs/images/algorithms.png.

Every point comes from the real limiter (``rl.Limiter`` on the memory store, whose arithmetic
the test suite checks against the Lua scripts) driven by an injected clock: nothing is drawn by
hand and nothing sleeps. The three limiters allow the same average rate, 10 requests per 10 s:
``FixedWindow(10, 10)``, ``SlidingWindow(10, 10)`` and ``TokenBucket(10, 10, burst=10)``.

    pip install -e '.[docs]'    # matplotlib comes with the docs (and bench) extra
    python docs/_scripts/plot_algorithms.py [--out docs/images/algorithms.png]

``tests/test_docs.py`` runs :func:`simulate` (not the drawing) and checks the story the picture
tells.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import ratelimit as rl

LIMIT = 10
PERIOD = 10.0
HORIZON = 60.0
BIN = 1.0
OUT = Path(__file__).resolve().parent.parent / "images" / "algorithms.png"

ALGORITHMS: dict[str, rl.Policy] = {
    "fixed window": rl.FixedWindow(LIMIT, PERIOD),
    "sliding window": rl.SlidingWindow(LIMIT, PERIOD),
    "token bucket": rl.TokenBucket(LIMIT, PERIOD, burst=LIMIT),
}


def traffic() -> list[float]:
    """Request times in seconds: one client, the same for every algorithm.

    One request at 0 s opens the fixed window; a burst of 20 just before its end (9-10 s)
    and another of 20 just after (10-11 s); a quiet spell; then a steady 2 requests per second
    from 25 s to 45 s, and a last burst of 20 at 52 s.
    """
    times = [0.0]
    times += [9.0 + i * 0.05 for i in range(20)]
    times += [10.0 + i * 0.05 for i in range(20)]
    times += [25.0 + i * 0.5 for i in range(40)]
    times += [52.0 + i * 0.05 for i in range(20)]
    return times


def _reader(box: list[float]) -> Callable[[], float]:
    """A clock reading the time the simulation put in ``box``."""
    return lambda: box[0]


def simulate() -> dict[str, list[tuple[float, bool]]]:
    """For each algorithm, every request of :func:`traffic` with whether it was admitted."""
    result: dict[str, list[tuple[float, bool]]] = {}
    for name, policy in ALGORITHMS.items():
        now = [1_000_000.0]  # any epoch: only differences matter
        limiter = rl.Limiter(policy, clock=_reader(now))
        start = now[0]
        outcome = []
        for t in traffic():
            now[0] = start + t
            outcome.append((t, limiter.hit("client").allowed))
        result[name] = outcome
    return result


def most_in_any_period(outcome: list[tuple[float, bool]]) -> int:
    """The most admitted requests in any span of PERIOD seconds (starting at a request)."""
    admitted = [t for t, ok in outcome if ok]
    return max(
        (sum(1 for u in admitted if t <= u < t + PERIOD) for t in admitted),
        default=0,
    )


def plot(out: Path) -> None:
    """Draw one panel per algorithm: offered and admitted requests per second, and the
    admitted count over the trailing period against the limit."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = simulate()
    bins = [i * BIN for i in range(int(HORIZON / BIN) + 1)]
    offered = traffic()
    colours = {"fixed window": "#d62728", "sliding window": "#1f77b4", "token bucket": "#2ca02c"}

    fig, axes = plt.subplots(len(results), 1, figsize=(10, 7.5), sharex=True)
    for ax, (name, outcome) in zip(axes, results.items(), strict=True):
        admitted = [t for t, ok in outcome if ok]
        ax.hist(offered, bins=bins, color="#cccccc", label="offered")
        ax.hist(admitted, bins=bins, color=colours[name], label="admitted")
        ax.set_ylabel("requests / s")
        ax.set_ylim(0, 21)
        trailing = ax.twinx()
        steps = [i * 0.05 for i in range(int(HORIZON / 0.05) + 1)]
        window = [sum(1 for u in admitted if s - PERIOD < u <= s) for s in steps]
        trailing.plot(steps, window, color="black", linewidth=1.2, label="admitted in last 10 s")
        trailing.axhline(LIMIT, color="black", linestyle=":", linewidth=1, label="limit (10)")
        trailing.set_ylim(0, 21)
        trailing.set_ylabel("in last 10 s")
        peak = most_in_any_period(outcome)
        ax.set_title(
            f"{name}: {len(admitted)} of {len(outcome)} admitted, at most {peak} in any 10 s",
            fontsize=10,
            loc="left",
        )
        if ax is axes[0]:
            handles = ax.get_legend_handles_labels()
            more = trailing.get_legend_handles_labels()
            ax.legend(
                handles[0] + more[0],
                handles[1] + more[1],
                loc="upper left",
                bbox_to_anchor=(0.36, 0.98),
                fontsize=8,
            )
    axes[-1].set_xlabel("seconds")
    fig.suptitle("The same bursty traffic, limit 10 per 10 s", fontsize=12)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help="PNG to write")
    args = parser.parse_args()
    plot(args.out)
    for name, outcome in simulate().items():
        admitted = sum(ok for _, ok in outcome)
        print(
            f"{name:15} admitted {admitted:3} of {len(outcome)}; "
            f"at most {most_in_any_period(outcome)} in any {PERIOD:g} s"
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
