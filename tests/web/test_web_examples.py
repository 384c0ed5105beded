"""The web and decorator examples, each exercised the way its docstring says to use it, and
the README's demo run as a newcomer runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx

import ratelimit as rl
from examples import fastapi_app, flask_app, starlette_app

ROOT = Path(__file__).resolve().parents[2]


def client(app: object, peer: str = "203.0.113.7") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(peer, 50000))  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


async def test_fastapi_example() -> None:
    async with client(fastapi_app.create_app(rl.MemoryStore())) as http:
        for _ in range(3):
            assert (await http.get("/search", params={"q": "x"})).status_code == 200
        denied = await http.get("/search")
        assert denied.status_code == 429
        assert denied.json()["detail"].startswith("Rate limit exceeded")
        statuses = [(await http.get(f"/items/{i}")).status_code for i in range(8)]
        # 4 requests so far, 10 per minute for every request
        assert statuses == [200] * 6 + [429] * 2
        assert (await http.get("/health")).status_code == 200


async def test_starlette_example() -> None:
    async with client(starlette_app.create_app()) as http:
        for _ in range(5):
            assert (await http.post("/login")).status_code == 200
        denied = await http.post("/login")
        assert denied.status_code == 429
        assert denied.headers["RateLimit-Limit"] == "5"
        # an API key is its own client
        assert (await http.post("/login", headers={"X-API-Key": "k"})).status_code == 200
        for i in range(20):
            assert (await http.get(f"/items/{i}")).status_code == 200
        assert (await http.get("/items/21")).status_code == 429
        assert (await http.get("/")).status_code == 200
        assert "RateLimit" not in (await http.get("/health")).headers


def test_flask_example() -> None:
    app = flask_app.create_app({"RATELIMIT_DEFAULT": "8/minute"})
    http = app.test_client()
    for _ in range(5):
        assert http.post("/login").status_code == 200
    assert http.post("/login").status_code == 429  # the view's own 5/minute
    assert http.get("/items/1").json == {"id": 1}
    assert http.get("/stream").text.count("line") == 5
    assert http.get("/").status_code == 429  # 9 requests: the app-wide 8/minute
    assert http.get("/health").status_code == 200


def test_decorator_example() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "decorator.py")],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    lines = out.splitlines()
    assert lines[0] == "sent 'hello #0' to user 42"
    assert lines[3].startswith("denied: retry in")
    assert lines[4] == "sent 'another user has their own limit' to user 7"
    assert "8 calls done" in out


def test_demo_prints_200s_turning_into_429s() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "demo.py")],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    statuses = [line.split()[1] for line in out.splitlines() if line[:2].strip().isdigit()]
    assert statuses == ["200"] * 10 + ["429"] * 3
    assert "Retry-After:" in out
    assert "uvicorn examples.fastapi_app:app" in out
