"""Load: the FastAPI example under uvicorn, on a real Redis, driven over loopback by a load
generator that speaks for many clients at once.

The example (``examples/fastapi_app.py``) is configured the way its docstring says, from the
environment: ``REDIS_URL`` (a server this test starts) and ``TRUSTED_PROXIES=127.0.0.1/32``.
The generator is that trusted proxy: each request carries its client's address in
``X-Forwarded-For`` (IPv4 addresses and IPv6 /64 networks), so the app limits hundreds of
clients although every connection comes from 127.0.0.1.

Bounded in requests (:data:`CLIENTS` x :data:`PER_CLIENT` per run) and in time (each request
times out after 10 s, each run after :data:`RUN_BUDGET` s). Figures (p50/p99 latency, requests
per second) are printed, and written to the file RATELIMIT_LOAD_RESULTS names.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.servers import Server, any_kind
from tests.support import free_port

pytestmark = [pytest.mark.redis_server, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
# Set RATELIMIT_LOAD_RESULTS=benchmarks/results/load.json to record the figures (a plain test
# run only prints them, so the suite never rewrites tracked files).
RESULTS_ENV = "RATELIMIT_LOAD_RESULTS"
CLIENTS = 200
"""Client addresses per run."""
PER_CLIENT = 15
"""Requests per client per run: the example allows 10 per minute on ``/``."""
ALLOWED = 10
CONCURRENCY = 32
"""Requests in flight at once (keep-alive connections of the generator)."""
RUN_BUDGET = 60.0
RESTART_CLIENTS = 400
"""Clients of the restart run: long enough to see the store decide again after it."""
RESTART_AT = 0.5
"""Seconds into that run when Redis is restarted (SIGKILL, then started on the same port)."""
RECOVERY_BUDGET = 2.0
"""Seconds after Redis is back within which the app must stop admitting by on_error."""
STARTUP_TIMEOUT = 30.0


@pytest.fixture(scope="module")
def redis_server() -> Iterator[Server]:
    with Server(any_kind()) as server:
        yield server


@pytest.fixture(scope="module")
def app_url(redis_server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``uvicorn examples.fastapi_app:app`` on a free loopback port, on our Redis."""
    port = free_port()
    log = tmp_path_factory.mktemp("load") / "uvicorn.log"
    env = {
        **os.environ,
        "REDIS_URL": redis_server.url,
        "TRUSTED_PROXIES": "127.0.0.1/32",
        "PYTHONUNBUFFERED": "1",
    }
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "examples.fastapi_app:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=out)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if process.poll() is not None:
                pytest.fail(f"uvicorn exited with {process.returncode}:\n{log.read_text()}")
            try:
                if httpx.get(f"{url}/health", timeout=1, trust_env=False).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"uvicorn did not answer within {STARTUP_TIMEOUT}s:\n{log.read_text()}")
            time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - a hung server
            process.kill()
            process.wait(timeout=10)
        text = log.read_text(errors="replace")
        assert "Traceback" not in text, f"the app logged an exception:\n{text}"


def clients(run: str, n: int = CLIENTS) -> list[str]:
    """``n`` client addresses: IPv4 and, one in five, an address in its own IPv6 /64."""
    prefix = {"steady": 1, "restart": 2, "warmup": 3}[run]
    out = []
    for i in range(n):
        if i % 5 == 4:
            out.append(f"2001:db8:{prefix:x}:{i:x}::{random.randrange(1, 0xFFFF):x}")
        else:
            out.append(f"10.{prefix}.{i // 256}.{i % 256}")
    return out


@dataclass
class Run:
    """What the generator saw: status per client, latency per request, 5xx bodies."""

    statuses: dict[str, Counter[int]] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    server_errors: list[tuple[str, int, str]] = field(default_factory=list)
    missing_retry_after: int = 0
    seconds: float = 0.0
    by_on_error: list[float] = field(default_factory=list)
    """When (seconds into the run) a request was admitted without rate-limit headers: decided
    by ``on_error``, not by the store."""
    by_store: dict[str, list[tuple[float, int]]] = field(default_factory=dict)
    """Per client, (seconds into the run, status) of each response the store decided."""

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]

    def figures(self) -> dict[str, Any]:
        total = Counter[int]()
        for c in self.statuses.values():
            total.update(c)
        return {
            "requests": len(self.latencies),
            "clients": len(self.statuses),
            "concurrency": CONCURRENCY,
            "seconds": round(self.seconds, 2),
            "requests_per_s": round(len(self.latencies) / self.seconds, 1),
            "p50_ms": round(self.percentile(50) * 1000, 2),
            "p99_ms": round(self.percentile(99) * 1000, 2),
            "max_ms": round(max(self.latencies) * 1000, 2),
            "statuses": {str(k): v for k, v in sorted(total.items())},
            "decided_by_on_error": len(self.by_on_error),
        }


class Connection:
    """One keep-alive HTTP/1.1 connection speaking just enough of the protocol for GET
    requests (the generator must not be the bottleneck: httpx's AsyncClient costs about ten
    times the app's own time per request here, and would be what the figures measure)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def get(self, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, *fields = head.decode("latin-1").split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        got = {}
        for line in fields:
            if line:
                name, _, value = line.partition(":")
                got[name.strip().lower()] = value.strip()
        if got.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
                chunk = await self.reader.readexactly(size + 2)
                if size == 0:
                    break
                body += chunk[:-2]
        else:
            body = await self.reader.readexactly(int(got.get("content-length", "0")))
        return status, got, body

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


async def drive(url: str, addresses: list[str], *, during: Any = None) -> Run:
    """Send :data:`PER_CLIENT` requests for every address, shuffled, over :data:`CONCURRENCY`
    keep-alive connections; ``during`` (an async callable) runs alongside, for faults."""
    port = int(url.rsplit(":", 1)[1])
    work = [a for a in addresses for _ in range(PER_CLIENT)]
    random.shuffle(work)
    result = Run(statuses={a: Counter() for a in addresses})
    started = time.perf_counter()

    async def worker() -> None:
        connection = await Connection.open(port)
        try:
            while work:
                address = work.pop()
                start = time.perf_counter()
                status, headers, body = await connection.get("/", {"X-Forwarded-For": address})
                result.latencies.append(time.perf_counter() - start)
                result.statuses[address][status] += 1
                if status >= 500:
                    result.server_errors.append((address, status, body.decode(errors="replace")))
                if status == 429 and "retry-after" not in headers:
                    result.missing_retry_after += 1
                if status == 200 and "ratelimit" not in headers:
                    result.by_on_error.append(start - started)
                else:
                    result.by_store.setdefault(address, []).append((start - started, status))
                if headers.get("connection", "").lower() == "close":
                    await connection.close()
                    connection = await Connection.open(port)
        finally:
            await connection.close()

    tasks = [worker() for _ in range(CONCURRENCY)]
    if during is not None:
        tasks.append(during())
    await asyncio.wait_for(asyncio.gather(*tasks), RUN_BUDGET)
    result.seconds = time.perf_counter() - started
    return result


async def warm_up(url: str) -> None:
    """Open the app's pooled Redis connections a few at a time (a cold pool that opens dozens
    of connections at once can miss the 50 ms connect timeout; see the README), on keys the
    runs never use, then give a breaker tripped meanwhile time to close."""
    port = int(url.rsplit(":", 1)[1])
    addresses = clients("warmup", 64)
    connections = [await Connection.open(port) for _ in range(CONCURRENCY)]
    try:
        for width in (1, 2, 4, 8, 16, 24, CONCURRENCY):
            await asyncio.gather(
                *(
                    c.get("/", {"X-Forwarded-For": a})
                    for c, a in zip(connections[:width], addresses[:width], strict=True)
                )
            )
        await asyncio.sleep(0.6)
        for a in addresses[:3]:
            await connections[0].get("/", {"X-Forwarded-For": a})
    finally:
        for c in connections:
            await c.close()


def record(name: str, figures: dict[str, Any]) -> None:
    """Print the figures and, when RATELIMIT_LOAD_RESULTS names a file, merge them into it."""
    print(f"\n[load] {name}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))
    if not os.environ.get(RESULTS_ENV):
        return
    results = ROOT / os.environ[RESULTS_ENV]
    data: dict[str, Any] = {}
    if results.exists():
        try:
            data = json.loads(results.read_text())
        except ValueError:
            data = {}
    data["about"] = (
        "tests/test_load.py: examples/fastapi_app.py under uvicorn (one worker) on a real Redis, "
        "keep-alive HTTP/1.1 over loopback, X-Forwarded-For clients"
    )
    data[name] = {**figures, "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]}}
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(data, indent=2) + "\n")


async def test_each_client_is_admitted_exactly_as_its_limit_allows(app_url: str) -> None:
    await warm_up(app_url)
    run = await drive(app_url, clients("steady"))
    record("steady", run.figures())
    assert not run.server_errors, run.server_errors[:5]
    assert run.missing_retry_after == 0
    wrong = {
        a: dict(c)
        for a, c in run.statuses.items()
        if c != Counter({200: ALLOWED, 429: PER_CLIENT - ALLOWED})
    }
    assert not wrong, f"{len(wrong)} clients not admitted exactly {ALLOWED} times: " + str(
        dict(list(wrong.items())[:5])
    )


async def test_redis_restarted_mid_run_never_causes_a_5xx(
    app_url: str, redis_server: Server
) -> None:
    """``on_error="allow"`` (the example's default): during the restart the app admits by
    policy, afterwards it limits again; no request ever sees a 5xx."""
    await warm_up(app_url)
    restart: list[float] = []
    began = time.perf_counter()

    async def restart_mid_run() -> None:
        await asyncio.sleep(RESTART_AT)
        restart.append(time.perf_counter() - began)
        await asyncio.to_thread(redis_server.restart)
        restart.append(time.perf_counter() - began)

    run = await drive(app_url, clients("restart", RESTART_CLIENTS), during=restart_mid_run)
    figures = run.figures()
    assert len(restart) == 2, "the run ended before the restart"
    down, up = restart
    figures["redis_down_s"] = [round(down, 3), round(up, 3)]
    if run.by_on_error:
        figures["on_error_window_s"] = [
            round(min(run.by_on_error), 3),
            round(max(run.by_on_error), 3),
        ]
    record("redis_restarted", figures)
    assert not run.server_errors, run.server_errors[:5]
    assert run.missing_retry_after == 0
    statuses = Counter[int]()
    for c in run.statuses.values():
        statuses.update(c)
    assert set(statuses) <= {200, 429}, statuses
    # on_error decided only around the restart, and the store decided again soon after.
    assert run.by_on_error, "the restart went unnoticed: was Redis restarted at all?"
    assert min(run.by_on_error) >= down - 0.1, figures
    assert max(run.by_on_error) <= up + RECOVERY_BUDGET, (
        f"the app still admitted by on_error {max(run.by_on_error) - up:.2f}s after Redis "
        f"was back: {figures}"
    )
    # Once back, the store enforced the limit again: the restart lost every count, so a
    # client may be admitted up to its limit afresh, never more.
    for address, decided in run.by_store.items():
        after = [status for t, status in decided if t > up]
        assert after.count(200) <= ALLOWED, (address, decided)
