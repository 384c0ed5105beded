"""One two-policy limiter, driven through every integration: the ASGI middleware, the FastAPI
dependency, the WSGI middleware, the Flask extension and the decorator. Each must report the
same thing for the same decisions: the same statuses and the same header fields, one value
per single-valued field, every policy in the IETF fields."""

# No `from __future__ import annotations`: FastAPI resolves endpoint annotations at runtime.
from collections.abc import Callable
from typing import Any

import http_sfv
import httpx
import pytest
from fastapi import Depends, FastAPI
from flask import Flask
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from werkzeug.test import Client

import ratelimit as rl
from ratelimit.asgi import RateLimitMiddleware
from ratelimit.fastapi import RateLimit
from ratelimit.flask import FlaskRateLimit
from ratelimit.headers import Renderer
from ratelimit.wsgi import WSGIRateLimitMiddleware
from tests.support import Clock

# The fixed window binds first, then the bucket, which denies the 4th request.
HITS = 4
NAMES = ("ratelimit-policy", "ratelimit", "ratelimit-limit", "ratelimit-remaining",
         "ratelimit-reset", "retry-after")  # fmt: skip
Report = list[tuple[int, dict[str, list[str]]]]


def policies() -> list[rl.Policy]:
    return [rl.FixedWindow(4, 60), rl.TokenBucket(2, 1, burst=3)]


def fields(status: int, items: Any) -> tuple[int, dict[str, list[str]]]:
    """The rate-limit fields of a response, every value of each (a repeat shows)."""
    found: dict[str, list[str]] = {}
    for name, value in items:
        if name.lower() in NAMES:
            found.setdefault(name.lower(), []).append(value)
    return status, found


async def asgi_report(modes: Any, clock: Clock) -> Report:
    async def endpoint(request: Any) -> PlainTextResponse:
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/r", endpoint)])
    limiter = rl.AsyncLimiter(policies(), clock=clock)
    wrapped = RateLimitMiddleware(app, limiter, headers=modes)
    transport = httpx.ASGITransport(app=wrapped, client=("203.0.113.7", 5000))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        return [fields(r.status_code, r.headers.multi_items())
                for r in [await client.get("/r") for _ in range(HITS)]]  # fmt: skip


async def fastapi_report(modes: Any, clock: Clock) -> Report:
    app = FastAPI()
    limit = RateLimit(rl.AsyncLimiter(policies(), clock=clock), headers=modes)

    @app.get("/r", dependencies=[Depends(limit)])
    async def endpoint() -> dict[str, str]:
        return {"ok": "yes"}

    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 5000))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        return [fields(r.status_code, r.headers.multi_items())
                for r in [await client.get("/r") for _ in range(HITS)]]  # fmt: skip


def wsgi_report(modes: Any, clock: Clock) -> Report:
    app = Flask(__name__)
    app.add_url_rule("/r", "r", lambda: "ok")
    limiter = rl.Limiter(policies(), clock=clock)
    app.wsgi_app = WSGIRateLimitMiddleware(app.wsgi_app, limiter, headers=modes)  # type: ignore[method-assign]
    client = Client(app)
    return [fields(r.status_code, r.headers.items())
            for r in [client.get("/r", environ_base={"REMOTE_ADDR": "203.0.113.7"})
                      for _ in range(HITS)]]  # fmt: skip


def flask_report(modes: Any, clock: Clock) -> Report:
    app = Flask(__name__)
    app.config["RATELIMIT_HEADERS"] = modes
    ext = FlaskRateLimit(app)
    app.add_url_rule("/r", "r", ext.limit(rl.Limiter(policies(), clock=clock))(lambda: "ok"))
    client = app.test_client()
    return [fields(r.status_code, r.headers.items())
            for r in [client.get("/r", environ_base={"REMOTE_ADDR": "203.0.113.7"})
                      for _ in range(HITS)]]  # fmt: skip


def decorator_report(modes: Any, clock: Clock) -> Report:
    """The decorator reports a denial through RateLimitExceeded's decision and an allowed
    call through nothing: its limiter's peek after the call stands for it. Rendered with the
    renderer every integration uses."""
    limiter = rl.Limiter(policies(), clock=clock)
    renderer = Renderer(modes)

    @rl.rate_limit(limiter, key="k")
    def call() -> str:
        return "ok"

    report: Report = []
    for _ in range(HITS):
        try:
            call()
        except rl.RateLimitExceeded as denied:
            status, headers, _body = renderer.deny(denied.decision)
            report.append(fields(status, headers))
        else:
            report.append(fields(200, renderer.fields(limiter.peek("k"))))
    return report


INTEGRATIONS: dict[str, Callable[[Any, Clock], Any]] = {
    "asgi": asgi_report,
    "fastapi": fastapi_report,
    "wsgi": wsgi_report,
    "flask": flask_report,
    "decorator": decorator_report,
}


@pytest.mark.parametrize("modes", ["ietf", ("ietf", "draft-6")], ids=["ietf", "ietf+draft-6"])
async def test_every_integration_reports_every_policy_alike(modes: Any) -> None:
    reports: dict[str, Report] = {}
    for name, run in INTEGRATIONS.items():
        result = run(modes, Clock())
        reports[name] = await result if not isinstance(result, list) else result
    expected = reports["decorator"]
    assert [status for status, _ in expected] == [200, 200, 200, 429]
    for status, found in expected:
        for name, values in found.items():
            assert len(values) == 1, (name, values)  # one value per field
        # both policies, in the limiter's order, in each IETF field
        for name in ("ratelimit-policy", "ratelimit"):
            parsed = http_sfv.List()
            parsed.parse(found[name][0].encode())
            assert [item.value for item in parsed] == [p.id for p in policies()]
        assert ("retry-after" in found) == (status == 429)
    for name, report in reports.items():
        assert report == expected, name
