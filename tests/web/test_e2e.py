"""End to end: the FastAPI example under uvicorn and the Flask example under gunicorn, each
started by the test on a free loopback port and hit over real sockets with httpx (and
websockets). Statuses, headers, streaming and WebSocket denial, as a client sees them.

Clients are told apart with ``X-Forwarded-For``: the servers are started with
``TRUSTED_PROXIES=127.0.0.1``, so the test plays the trusted proxy for several clients.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import http_sfv
import httpx
import pytest

from tests.support import free_port

ROOT = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT = 30.0


def serve(command: list[str], port: int, log: Path) -> Iterator[str]:
    env = {**os.environ, "TRUSTED_PROXIES": "127.0.0.1", "PYTHONUNBUFFERED": "1"}
    env.pop("REDIS_URL", None)
    env.pop("RATELIMIT_STORE", None)
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if process.poll() is not None:
                pytest.fail(f"server exited with {process.returncode}:\n{log.read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(
                        f"server did not listen within {STARTUP_TIMEOUT}s:\n{log.read_text()}"
                    )
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - a hung server
            process.kill()
            process.wait(timeout=10)


@pytest.fixture(scope="module")
def uvicorn_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("uvicorn") / "server.log"
    command = [sys.executable, "-m", "uvicorn", "examples.fastapi_app:app",
               "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
               "--ws", "websockets"]  # fmt: skip
    yield from serve(command, port, log)


@pytest.fixture(scope="module")
def gunicorn_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("gunicorn") / "server.log"
    command = [sys.executable, "-m", "gunicorn", "examples.flask_app:app",
               "--bind", f"127.0.0.1:{port}", "--workers", "1", "--threads", "4",
               "--log-level", "warning"]  # fmt: skip
    yield from serve(command, port, log)


def as_client(ip: str) -> dict[str, str]:
    return {"X-Forwarded-For": ip}


def remaining(response: httpx.Response) -> list[int]:
    parsed = http_sfv.List()
    parsed.parse(response.headers["RateLimit"].encode())
    return [item.params["r"] for item in parsed]


def http(base: str) -> httpx.Client:
    return httpx.Client(base_url=base, timeout=10, trust_env=False)


# --- FastAPI under uvicorn ----------------------------------------------------------------------


def test_uvicorn_burst_turns_into_429s(uvicorn_url: str) -> None:
    with http(uvicorn_url) as client:
        statuses = []
        for expected in range(9, -1, -1):
            response = client.get("/", headers=as_client("198.51.100.1"))
            statuses.append(response.status_code)
            assert remaining(response) == [expected]
        assert statuses == [200] * 10
        denied = client.get("/", headers=as_client("198.51.100.1"))
        assert denied.status_code == 429
        assert int(denied.headers["Retry-After"]) >= 1
        assert denied.headers["Content-Type"] == "application/problem+json"
        assert denied.json()["status"] == 429
        policy = http_sfv.List()
        policy.parse(denied.headers["RateLimit-Policy"].encode())
        assert dict(policy[0].params) == {"q": 10, "w": 60}
        # another client, and an exempt path, are not affected
        assert client.get("/", headers=as_client("198.51.100.2")).status_code == 200
        health = client.get("/health", headers=as_client("198.51.100.1"))
        assert health.status_code == 200
        assert "RateLimit" not in health.headers


def test_uvicorn_route_dependency_shares_the_template(uvicorn_url: str) -> None:
    with http(uvicorn_url) as client:
        who = as_client("198.51.100.3")
        for q in ("a", "b", "c"):
            response = client.get("/search", params={"q": q}, headers=who)
            assert response.status_code == 200
        denied = client.get("/search", params={"q": "d"}, headers=who)
        assert denied.status_code == 429
        assert 1 <= int(denied.headers["Retry-After"]) <= 10


def test_uvicorn_streaming_is_not_buffered(uvicorn_url: str) -> None:
    arrivals: list[float] = []
    who = as_client("198.51.100.4")
    with http(uvicorn_url) as client, client.stream("GET", "/stream", headers=who) as response:
        assert response.status_code == 200
        assert remaining(response) == [9]
        started = time.monotonic()
        lines = []
        for line in response.iter_lines():
            arrivals.append(time.monotonic() - started)
            lines.append(line)
    assert lines == [f"line {i}" for i in range(5)]
    # the first line arrived long before the last one was produced (0.05 s apart)
    assert arrivals[-1] - arrivals[0] >= 0.1


def test_uvicorn_websocket_allowed_then_denied_at_the_handshake(uvicorn_url: str) -> None:
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    url = uvicorn_url.replace("http://", "ws://") + "/ws"
    who = as_client("198.51.100.5")
    with connect(url, additional_headers=who, proxy=None, open_timeout=10) as ws:
        assert ws.response is not None
        assert "RateLimit" in ws.response.headers  # on the 101 Switching Protocols
        ws.send("hi")
        assert ws.recv(timeout=10) == "echo: hi"
    with http(uvicorn_url) as client:
        for _ in range(9):
            client.get("/", headers=who)
    with pytest.raises(InvalidStatus) as denied:
        connect(url, additional_headers=who, proxy=None, open_timeout=10)
    assert denied.value.response.status_code == 429
    assert int(denied.value.response.headers["Retry-After"]) >= 1
    assert "RateLimit" in denied.value.response.headers


# --- Flask under gunicorn -----------------------------------------------------------------------


def test_gunicorn_view_limit(gunicorn_url: str) -> None:
    with http(gunicorn_url) as client:
        who = as_client("203.0.113.1")
        for _ in range(5):
            response = client.post("/login", headers=who)
            assert response.status_code == 200
            assert "RateLimit" in response.headers
        denied = client.post("/login", headers=who)
        assert denied.status_code == 429
        assert int(denied.headers["Retry-After"]) >= 1
        assert denied.headers["Content-Type"] == "application/problem+json"
        assert denied.json()["retry_after"] >= 1
        assert client.post("/login", headers=as_client("203.0.113.2")).status_code == 200


def test_gunicorn_async_view_items_share_a_limit(gunicorn_url: str) -> None:
    with http(gunicorn_url) as client:
        who = as_client("203.0.113.3")
        for i in range(10):
            assert client.get(f"/items/{i}", headers=who).status_code == 200
        assert client.get("/items/99", headers=who).status_code == 429


def test_gunicorn_streaming_and_exempt(gunicorn_url: str) -> None:
    with http(gunicorn_url) as client:
        who = as_client("203.0.113.4")
        arrivals: list[float] = []
        with client.stream("GET", "/stream", headers=who) as response:
            assert response.status_code == 200
            assert "RateLimit" in response.headers  # the app-wide default limit
            started = time.monotonic()
            lines = []
            for line in response.iter_lines():
                arrivals.append(time.monotonic() - started)
                lines.append(line)
        assert lines == [f"line {i}" for i in range(5)]
        assert arrivals[-1] - arrivals[0] >= 0.1
        for _ in range(25):
            assert client.get("/health", headers=who).status_code == 200


# --- a rule limits what reaches its view, as gunicorn and Werkzeug route it ----------------------


@pytest.fixture(scope="module")
def gunicorn_login_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("gunicorn-login") / "server.log"
    command = [sys.executable, "-m", "gunicorn", "tests.web.wsgi_login_app:app",
               "--bind", f"127.0.0.1:{port}", "--workers", "1", "--threads", "2",
               "--log-level", "warning"]  # fmt: skip
    yield from serve(command, port, log)


def raw_get(url: str, target: str) -> tuple[int, bytes]:
    """GET with the request target sent byte for byte (no client-side normalising)."""
    import http.client

    host, _, port = url.removeprefix("http://").partition(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.putrequest("GET", target, skip_accept_encoding=True)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@pytest.mark.parametrize(
    ("first", "then"),
    [
        ("/login", "//login"),
        ("/api/login", "/api//login"),
        ("/caf%C3%A9", "//caf%C3%A9"),
    ],
)
def test_a_rule_limits_every_request_that_reaches_its_view_under_gunicorn(
    gunicorn_login_url: str, first: str, then: str
) -> None:
    answers = [raw_get(gunicorn_login_url, target) for target in (first, then, then, first)]
    # the view answered the first two, whatever the slashes; the rule counted both
    assert [status for status, _ in answers] == [200, 200, 429, 429], answers
    assert answers[1][1] in (b"login", "café".encode())
