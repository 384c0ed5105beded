"""``examples/django_app`` runs: under gunicorn (WSGI, the memory store, as its docstring says)
and under uvicorn (ASGI, on a real Redis: the async view awaits an asyncio Redis client on the
server's loop), started on free loopback ports and hit over real sockets."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from benchmarks.bench_django import APP_DIR, ROOT, serve_example
from tests.support import free_port

STARTUP_TIMEOUT = 60.0


@pytest.fixture(scope="module")
def gunicorn_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("django-gunicorn") / "server.log"
    with serve_example(None, workers=1, log=log, default="1000/hour") as base:
        yield base


def get(base: str, path: str, ip: str) -> httpx.Response:
    return httpx.get(base + path, headers={"X-Forwarded-For": ip}, timeout=10, trust_env=False)


def test_function_view_limit_and_default(gunicorn_url: str) -> None:
    statuses = [get(gunicorn_url, "/login", "198.51.100.20").status_code for _ in range(6)]
    assert statuses == [200] * 5 + [429]
    denied = get(gunicorn_url, "/login", "198.51.100.20")
    assert int(denied.headers["Retry-After"]) >= 1
    assert denied.headers["Content-Type"] == "application/problem+json"
    # the view's limit and the app-wide default, both advertised
    ok = get(gunicorn_url, "/items/3", "198.51.100.20")
    assert ok.status_code == 200 and ok.json() == {"item": 3}
    assert '"s30.60000"' in ok.headers["RateLimit"] and '"s1000.3600000"' in ok.headers["RateLimit"]
    assert "RateLimit" not in get(gunicorn_url, "/health", "198.51.100.20").headers


def test_async_view_under_wsgi(gunicorn_url: str) -> None:
    response = get(gunicorn_url, "/search?q=x", "198.51.100.21")
    assert response.status_code == 200 and response.json() == {"q": "x"}
    assert '"s20.60000";r=19' in response.headers["RateLimit"]


def test_drf_viewset_actions_share_the_scope(gunicorn_url: str) -> None:
    ip = "198.51.100.22"
    paths = ("/api/uploads/", "/api/uploads/1/", "/api/uploads/", "/api/uploads/2/")
    statuses = [get(gunicorn_url, path, ip).status_code for path in paths]
    assert statuses == [200, 200, 200, 429]
    assert int(get(gunicorn_url, "/api/uploads/", ip).headers["Retry-After"]) >= 1


def test_manage_py_check_passes() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for name in ("DJANGO_SETTINGS_MODULE", "REDIS_URL", "WEB_CONCURRENCY", "GUNICORN_CMD_ARGS"):
        env.pop(name, None)
    done = subprocess.run([sys.executable, str(APP_DIR / "manage.py"), "check"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "no issues" in done.stdout


@pytest.mark.redis_server
def test_under_uvicorn_on_redis(tmp_path: Path, redis_server: Any) -> None:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TRUSTED_PROXIES": "127.0.0.1",
           "REDIS_URL": redis_server.url}  # fmt: skip
    log = tmp_path / "uvicorn.log"
    command = [sys.executable, "-m", "uvicorn", "asgi:application", "--app-dir", str(APP_DIR),
               "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=out)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            assert process.poll() is None, log.read_text()
            try:
                if httpx.get(base + "/health", timeout=2, trust_env=False).status_code == 200:
                    break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
        statuses = [get(base, "/search", "198.51.100.23").status_code for _ in range(21)]
        assert statuses == [200] * 20 + [429]
        assert get(base, "/login", "198.51.100.23").status_code == 200
        paths = ("/api/uploads/", "/api/uploads/1/", "/api/uploads/", "/api/uploads/2/")
        assert [get(base, p, "198.51.100.23").status_code for p in paths] == [200] * 3 + [429]
        with redis_server.client() as client:
            stored = {k.decode() for k in client.keys("ratelimit:*198.51.100.23*")}
        assert stored == {
            "ratelimit:{views.search|ip:198.51.100.23}:s60000",
            "ratelimit:{views.login|ip:198.51.100.23}:s60000",
            "ratelimit:{throttle:uploads|ip:198.51.100.23}:s60000",
            "ratelimit:{ip:198.51.100.23}:s3600000",
        }
    finally:
        process.terminate()
        process.wait(timeout=15)
