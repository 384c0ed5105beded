"""Web benchmark: the per-request overhead of each integration, in process.

::

    python benchmarks/bench_web.py [--quick] [--out benchmarks/results/web.json]

ASGI: one FastAPI app with one route, called directly with a prepared scope (no network, no
server), bare and limited by our ``RateLimitMiddleware``, our ``RateLimit`` dependency, slowapi
(its ``@limiter.limit`` decorator, and its ASGI middleware with a default limit) and
fastapi-limiter (its ``RateLimiter`` dependency). WSGI: one Flask app, called directly as a
WSGI callable, bare and limited by our ``FlaskRateLimit``, our ``WSGIRateLimitMiddleware`` and
Flask-Limiter. Every limiter keeps its state in process memory (our ``MemoryStore``, ``limits``'
``MemoryStorage`` under slowapi and Flask-Limiter, pyrate-limiter's in-memory bucket under
fastapi-limiter), keys by the client address, and allows every request of the run (a fixed
window of 10 million per minute).

Overheads are small differences between large times (a bare FastAPI request is tens of
microseconds), so contenders are paired finely: every round calls each of them once (a batch of
a few requests), in alternating order, and a contender's overhead is the median over rounds of
its time minus the bare app's in the same round. The report gives, per contender, the medians
over several such runs of the time per request and of the overhead, and each overhead against
slowapi's (Flask-Limiter's for WSGI). Our headers are on (``"ietf"``, the default); slowapi's
and Flask-Limiter's are off (their default) and fastapi-limiter has none, so ours does strictly
more work per request.
Prints a Markdown table, writes JSON.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations at runtime.
import argparse
import asyncio
import gc
import os
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)  # measure this checkout's ratelimit, not an installed copy
sys.path.insert(0, HERE)

import _harness as h  # noqa: E402

LIMIT = 10_000_000  # per minute: every request of the run is allowed
TEXT = f"{LIMIT}/minute"
TARGET = 0.20  # our ASGI middleware's overhead / slowapi's, at most
BARE_ASGI = "FastAPI, bare"
BARE_WSGI = "Flask, bare"
OURS_ASGI = "ratelimit RateLimitMiddleware"
SLOWAPI = "slowapi @limiter.limit"


@dataclass
class Settings:
    seconds: float  # timed seconds per contender per run
    warmup: float  # untimed seconds per contender per run
    batch: int  # requests per timed call
    runs: int  # whole runs; the report takes the median over them


FULL = Settings(seconds=3.0, warmup=0.3, batch=5, runs=3)
QUICK = Settings(seconds=0.3, warmup=0.05, batch=5, runs=1)


# --- ASGI ---------------------------------------------------------------------------------------


def asgi_apps() -> dict[str, Any]:
    """The FastAPI apps, each serving ``GET /`` with the same plain-text endpoint."""
    from fastapi import Depends, FastAPI, Request
    from fastapi.responses import PlainTextResponse

    import ratelimit as rl
    from ratelimit.asgi import RateLimitMiddleware
    from ratelimit.fastapi import RateLimit

    def app_with(dependencies: list[Any] | None = None) -> FastAPI:
        app = FastAPI()

        @app.get("/", dependencies=dependencies or [])
        async def index(request: Request) -> PlainTextResponse:
            return PlainTextResponse("ok")

        return app

    apps: dict[str, Any] = {BARE_ASGI: app_with()}

    ours = app_with()
    ours.add_middleware(
        RateLimitMiddleware, limiter=rl.AsyncLimiter(rl.FixedWindow(LIMIT, 60)), headers="ietf"
    )
    apps[OURS_ASGI] = ours
    apps["ratelimit RateLimit dependency"] = app_with(
        [Depends(RateLimit(rl.AsyncLimiter(rl.FixedWindow(LIMIT, 60))))]
    )

    try:
        from slowapi import Limiter, _rate_limit_exceeded_handler
        from slowapi.errors import RateLimitExceeded
        from slowapi.middleware import SlowAPIASGIMiddleware
        from slowapi.util import get_remote_address
    except ImportError:
        print("slowapi not installed: skipped", file=sys.stderr)
    else:
        limiter = Limiter(key_func=get_remote_address, storage_uri="memory://")
        decorated = FastAPI()
        decorated.state.limiter = limiter
        decorated.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)  # type: ignore[arg-type]

        @decorated.get("/")
        @limiter.limit(TEXT)
        async def index(request: Request) -> PlainTextResponse:
            return PlainTextResponse("ok")

        apps[SLOWAPI] = decorated

        default_limiter = Limiter(
            key_func=get_remote_address, storage_uri="memory://", default_limits=[TEXT]
        )
        middleware = app_with()
        middleware.state.limiter = default_limiter
        middleware.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)  # type: ignore[arg-type]
        middleware.add_middleware(SlowAPIASGIMiddleware)
        apps["slowapi SlowAPIASGIMiddleware"] = middleware

    try:
        from fastapi_limiter.depends import RateLimiter
        from pyrate_limiter import Duration, Rate
        from pyrate_limiter import Limiter as PyrateLimiter
    except ImportError:
        print("fastapi-limiter not installed: skipped", file=sys.stderr)
    else:
        pyrate = PyrateLimiter(Rate(LIMIT, Duration.MINUTE))
        apps["fastapi-limiter RateLimiter"] = app_with([Depends(RateLimiter(limiter=pyrate))])
    return apps


def asgi_caller(app: Any, batch: int) -> Callable[[Any], object]:
    """A callable running ``batch`` requests ``GET /`` through ``app`` on its own loop."""
    loop = asyncio.new_event_loop()
    template: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/",
        "raw_path": b"/",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver"), (b"user-agent", b"bench")],
        "client": ("203.0.113.7", 50000),
        "server": ("testserver", 80),
    }
    request = {"type": "http.request", "body": b"", "more_body": False}
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return request

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    async def run() -> None:
        for _ in range(batch):
            await app(dict(template), receive, send)

    def call(_: Any) -> object:
        loop.run_until_complete(run())
        if statuses[-1] != 200:
            raise RuntimeError(f"a request was answered {statuses[-1]}")
        statuses.clear()
        return None

    return call


# --- WSGI ---------------------------------------------------------------------------------------


def wsgi_apps() -> dict[str, Any]:
    """The Flask apps (as WSGI callables), each serving ``GET /`` with the same view."""
    from flask import Flask

    import ratelimit as rl
    from ratelimit.flask import FlaskRateLimit
    from ratelimit.wsgi import WSGIRateLimitMiddleware

    def bare() -> Flask:
        app = Flask(__name__)

        @app.get("/")
        def index() -> str:
            return "ok"

        return app

    apps: dict[str, Any] = {BARE_WSGI: bare().wsgi_app}

    ours = Flask(__name__)
    ext = FlaskRateLimit(ours)

    @ours.get("/")
    @ext.limit(rl.Limiter(rl.FixedWindow(LIMIT, 60)))
    def index() -> str:
        return "ok"

    apps["ratelimit FlaskRateLimit"] = ours.wsgi_app
    wrapped = bare()
    wrapped.wsgi_app = WSGIRateLimitMiddleware(  # type: ignore[method-assign]
        wrapped.wsgi_app, limiter=rl.Limiter(rl.FixedWindow(LIMIT, 60))
    )
    apps["ratelimit WSGIRateLimitMiddleware"] = wrapped.wsgi_app

    try:
        from flask_limiter import Limiter
        from flask_limiter.util import get_remote_address
    except ImportError:
        print("Flask-Limiter not installed: skipped", file=sys.stderr)
    else:
        theirs = Flask(__name__)
        limiter = Limiter(get_remote_address, app=theirs, storage_uri="memory://")

        @theirs.get("/")
        @limiter.limit(TEXT)
        def their_index() -> str:
            return "ok"

        apps["Flask-Limiter @limiter.limit"] = theirs.wsgi_app
    return apps


def wsgi_caller(app: Any, batch: int) -> Callable[[Any], object]:
    """A callable running ``batch`` WSGI requests ``GET /`` through ``app``."""
    from werkzeug.test import EnvironBuilder

    template = EnvironBuilder(path="/", environ_base={"REMOTE_ADDR": "203.0.113.7"}).get_environ()
    statuses: list[str] = []

    def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
        statuses.append(status)
        return None

    def call(_: Any) -> object:
        for _ in range(batch):
            body = app(dict(template), start_response)
            for _chunk in body:
                pass
            close = getattr(body, "close", None)
            if close is not None:
                close()
        if not statuses[-1].startswith("200"):
            raise RuntimeError(f"a request was answered {statuses[-1]}")
        statuses.clear()
        return None

    return call


# --- the run ------------------------------------------------------------------------------------


def paired_samples(callers: dict[str, Callable[[Any], object]], s: Settings
                   ) -> dict[str, list[int]]:  # fmt: skip
    """Times every contender once per round, in alternating order, for ``s.seconds`` of rounds
    per contender: each round's calls are a few hundred microseconds apart, so a drift of the
    machine (a neighbour's load, the clock frequency) lands on all of them alike, and the
    per-round difference to the bare app cancels it. The garbage collector runs between
    rounds every 64 rounds, and inside a call only when its own allocations trigger it."""
    names = list(callers)
    clock = time.perf_counter_ns
    for name in names:  # warm up: first calls build caches, routes, limiter state
        end = clock() + int(s.warmup * 1e9)
        while clock() < end:
            callers[name](None)
    samples: dict[str, list[int]] = {name: [] for name in names}
    end = clock() + int(s.seconds * len(names) * 1e9)
    r = 0
    while clock() < end or r < 16:
        if r % 64 == 0:
            gc.collect()
        for name in names if r % 2 == 0 else names[::-1]:
            t0 = clock()
            callers[name](None)
            samples[name].append(clock() - t0)
        r += 1
    return samples


def measure(make_callers: Callable[[], dict[str, Callable[[Any], object]]], bare: str,
            s: Settings) -> list[dict[str, Any]]:  # fmt: skip
    """``s.runs`` runs of :func:`paired_samples`. Per run and contender: the median time per
    request, and the overhead: the median over rounds of its time minus the bare app's in the
    same round. Reported: the medians over runs."""
    per_run: dict[str, list[float]] = {}
    overheads: dict[str, list[float]] = {}
    for _ in range(s.runs):
        samples = paired_samples(make_callers(), s)
        base = samples[bare]
        for name, values in samples.items():
            per_run.setdefault(name, []).append(h.median(values) / 1000 / s.batch)
            diffs = [a - b for a, b in zip(values, base, strict=True)]
            overheads.setdefault(name, []).append(h.median(diffs) / 1000 / s.batch)
    return [
        {
            "name": name,
            "us_per_request": round(h.median(values), 2),
            "overhead_us": round(h.median(overheads[name]), 2),
            "runs_us_per_request": [round(v, 2) for v in values],
            "runs_overhead_us": [round(v, 2) for v in overheads[name]],
        }
        for name, values in per_run.items()
    ]


def versions() -> dict[str, str | None]:
    names = ["fastapi", "starlette", "flask", "werkzeug", "slowapi", "fastapi-limiter",
             "flask-limiter", "limits", "pyrate-limiter"]  # fmt: skip
    return {name: h.version_of(name) for name in names}


def table(rows: list[dict[str, Any]], reference: str) -> str:
    ref = next((r for r in rows if r["name"] == reference), None)
    body = []
    for row in rows:
        ratio = "-"
        if ref is not None and ref["overhead_us"] > 0 and row["overhead_us"] > 0:
            ratio = f"{row['overhead_us'] / ref['overhead_us']:.2f}"
        body.append([row["name"], f"{row['us_per_request']:.1f}", f"{row['overhead_us']:.1f}",
                     ratio])  # fmt: skip
    head = ["integration", "µs / request", "overhead µs", f"overhead / {reference}'s"]
    return h.markdown_table(head, body)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs (a smoke test)")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "web.json"))
    args = parser.parse_args(argv)
    s = QUICK if args.quick else FULL
    pinning = h.Pinning()
    h.pin_process(pinning)
    warnings.simplefilter("ignore")  # peers' deprecation warnings are not what we measure

    asgi_rows = measure(
        lambda: {name: asgi_caller(app, s.batch) for name, app in asgi_apps().items()},
        BARE_ASGI,
        s,
    )
    wsgi_rows = measure(
        lambda: {name: wsgi_caller(app, s.batch) for name, app in wsgi_apps().items()},
        BARE_WSGI,
        s,
    )

    ours = next(r for r in asgi_rows if r["name"] == OURS_ASGI)
    slow = next((r for r in asgi_rows if r["name"] == SLOWAPI), None)
    target: dict[str, Any] = {"name": f"{OURS_ASGI} overhead / {SLOWAPI} overhead",
                              "at_most": TARGET}  # fmt: skip
    if slow is not None and slow["overhead_us"] > 0:
        ratio = ours["overhead_us"] / slow["overhead_us"]
        target.update(measured=round(ratio, 3), met=ratio <= TARGET)

    report = {
        "machine": h.machine_info(),
        "pinning": pinning.as_dict(),
        "versions": versions(),
        "settings": vars(s),
        "limit": TEXT,
        "asgi": asgi_rows,
        "wsgi": wsgi_rows,
        "target": target,
    }
    h.write_json(args.out, report)
    print(f"## ASGI (FastAPI), in process\n\n{table(asgi_rows, SLOWAPI)}\n")
    print(f"## WSGI (Flask), in process\n\n{table(wsgi_rows, 'Flask-Limiter @limiter.limit')}\n")
    if "measured" in target:
        verdict = "met" if target["met"] else "NOT met"
        print(f"target: {target['name']} <= {TARGET}: {target['measured']:.3f} ({verdict})")
    print(f"\n{pinning.describe()}; medians of {s.runs} runs of {s.seconds:g} s per "
          f"contender; JSON: {args.out}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
