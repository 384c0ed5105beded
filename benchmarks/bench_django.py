"""Django under load: 4 gunicorn workers on one real Redis, 100 concurrent requests of one
client against a ``5/minute`` limit, three ways, printed side by side:

- ``@limit("5/minute")`` of :mod:`ratelimit.django` on a function view (``/login``);
- :class:`ratelimit.django.Throttle` on a DRF view, scope rate ``5/minute`` (``/api/ours``);
- DRF's own ``UserRateThrottle``, rate ``5/minute``, counting in Django's Redis cache backend
  (``django.core.cache.backends.redis.RedisCache``) on the same server (``/api/drf``).

::

    python benchmarks/bench_django.py [--rounds 5] [--clients 100] [--workers 4]
                                      [--out benchmarks/results/django.json]

The app is ``examples/django_app`` (REDIS_URL pointing at a server this script starts, no
app-wide default limit). Each round empties Redis, then fires ``--clients`` requests of a new
client at once (one thread each, released together by a barrier) at each path in turn and
counts the 200s;
every 429 must carry ``Retry-After``. A correct limiter admits exactly 5 every round; DRF's
throttle reads the cache, decides, then writes its list of timestamps back, so requests
that overlap all read the same list.

``serve_example`` and ``burst`` are also used by ``tests/django/test_load.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
APP_DIR = ROOT / "examples" / "django_app"
LIMIT = 5
PATHS = {
    "ratelimit @limit": "/login",
    "ratelimit Throttle (DRF)": "/api/ours",
    "DRF UserRateThrottle + RedisCache": "/api/drf",
}
STARTUP_TIMEOUT = 60.0
REQUEST_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serve_example(redis_url: str | None, workers: int = 4, log: Path | None = None,
                  default: str = "") -> Iterator[str]:  # fmt: skip
    """``examples/django_app`` under gunicorn with ``workers`` sync workers on a free
    loopback port; yields its base URL once every worker answers. ``redis_url`` None: the
    memory store. ``default``: RATELIMIT_DEFAULT ("" for none). Stops it on exit."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1",
           "RATELIMIT_DEFAULT": default, "DJANGO_SETTINGS_MODULE": "settings"}  # fmt: skip
    env.pop("REDIS_URL", None)
    env["TRUSTED_PROXIES"] = "127.0.0.1"  # we play the proxy: X-Forwarded-For names the client
    env.pop("WEB_CONCURRENCY", None)
    if redis_url is not None:
        env["REDIS_URL"] = redis_url
    command = [sys.executable, "-m", "gunicorn", "--chdir", str(APP_DIR), "wsgi:application",
               "--bind", f"127.0.0.1:{port}", "--workers", str(workers),
               "--log-level", "warning"]  # fmt: skip
    log = log or Path(tempfile.mkdtemp(prefix="rl-django-")) / "gunicorn.log"
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=out)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {process.returncode}:\n{log.read_text()}")
            try:
                if httpx.get(base + "/health", timeout=2, trust_env=False).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn did not answer in {STARTUP_TIMEOUT}s:\n"
                                   f"{log.read_text()}")  # fmt: skip
            time.sleep(0.1)
        # Every worker booted (each imports Django): a burst that only some could take would
        # test less concurrency than it claims.
        burst(base, "/health", clients=4 * workers)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


def burst(base: str, path: str, clients: int = 100,
          client_ip: str = "198.51.100.1") -> list[tuple[int, str | None]]:  # fmt: skip
    """``clients`` GET requests of ``path`` from one client (``client_ip``, sent as
    X-Forwarded-For through the trusted proxy 127.0.0.1), one thread each, sent together;
    returns each ``(status, Retry-After)``. Bounded: every request times out after 30 s."""
    barrier = threading.Barrier(clients)
    results: list[tuple[int, str | None]] = []
    lock = threading.Lock()

    def one() -> None:
        with httpx.Client(base_url=base, timeout=REQUEST_TIMEOUT, trust_env=False) as client:
            barrier.wait(timeout=REQUEST_TIMEOUT)
            try:
                response = client.get(path, headers={"X-Forwarded-For": client_ip})
                outcome = (response.status_code, response.headers.get("Retry-After"))
            except httpx.HTTPError as error:
                outcome = (0, repr(error))
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=one) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(REQUEST_TIMEOUT * 2)
    return results


def summarize(results: list[tuple[int, str | None]]) -> dict[str, int]:
    return {
        "admitted": sum(1 for s, _ in results if s == 200),
        "denied": sum(1 for s, _ in results if s == 429),
        "denied_without_retry_after": sum(1 for s, r in results if s == 429 and not r),
        "other": sum(1 for s, _ in results if s not in (200, 429)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--out", default=None, help="write the figures as JSON here")
    args = parser.parse_args()

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import _harness as h
    import redis

    pinning = h.Pinning()
    server = h.start_server(pinning)
    rows: dict[str, list[dict[str, int]]] = {name: [] for name in PATHS}
    try:
        with (
            serve_example(server.url, args.workers) as base,
            redis.Redis.from_url(server.url) as client,
        ):
            for n in range(args.rounds):
                client.flushall()
                for name, path in PATHS.items():  # a new client each round: no cached denial
                    results = burst(base, path, args.clients, client_ip=f"198.51.100.{n + 1}")
                    rows[name].append(summarize(results))
    finally:
        server.stop()

    print(f"\n{args.clients} concurrent requests of one client, limit {LIMIT}/minute, "
          f"{args.workers} gunicorn workers, one Redis; {args.rounds} rounds\n")  # fmt: skip
    table = []
    for name, runs in rows.items():
        admitted = [r["admitted"] for r in runs]
        table.append([
            name, PATHS[name], str(statistics.median(admitted)), f"{min(admitted)}-{max(admitted)}",
            str(sum(r["denied_without_retry_after"] for r in runs)),
            str(sum(r["other"] for r in runs)),
        ])  # fmt: skip
    print(h.markdown_table(
        ["limiter", "path", "admitted (median)", "admitted (range)", "429 w/o Retry-After",
         "other"], table))  # fmt: skip
    if args.out:
        versions = {d: h.version_of(d) for d in ("django", "djangorestframework", "redis")}
        h.write_json(args.out, {"machine": h.machine_info(), "clients": args.clients,
                                "workers": args.workers, "limit": LIMIT, "rounds": rows,
                                "versions": versions})  # fmt: skip


if __name__ == "__main__":
    main()
