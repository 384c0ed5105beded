"""A rule limits exactly the requests that reach the view it names, in every integration:
HEAD through GET routes, templates before a trailing ``*``, Flask-style templates, the WSGI
request as Werkzeug routes it (merged slashes, upper-case methods, UTF-8 paths), mounted
FastAPI sub-applications; and one value per single-valued header when two limits answer."""

# No `from __future__ import annotations`: FastAPI resolves endpoint annotations at runtime.
from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI
from flask import Flask
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from werkzeug.test import Client, EnvironBuilder, run_wsgi_app

import ratelimit as rl
from ratelimit import ConfigurationError
from ratelimit.asgi import RateLimitMiddleware
from ratelimit.fastapi import RateLimit
from ratelimit.flask import FlaskRateLimit
from ratelimit.wsgi import Rule, WSGIRateLimitMiddleware
from tests.support import Clock
from tests.web.conftest import http_scope, run_asgi

ALL_MODES = ("ietf", "draft-6", "legacy")
SINGLE = ("ratelimit-limit", "ratelimit-remaining", "ratelimit-reset", "x-ratelimit-limit",
          "x-ratelimit-remaining", "x-ratelimit-reset", "retry-after")  # fmt: skip


def asgi_client(app: Any) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 5000))
    return httpx.AsyncClient(transport=transport, base_url="http://t")


def starlette_app(*paths: str) -> Starlette:
    async def endpoint(request: Any) -> PlainTextResponse:
        return PlainTextResponse("ok")

    return Starlette(routes=[Route(p, endpoint, methods=["GET", "POST"]) for p in paths])


def flask_app(*paths: str) -> Flask:
    app = Flask(__name__)
    for at, path in enumerate(paths):
        app.add_url_rule(path, f"v{at}", lambda **kw: "ok", methods=["GET", "POST"])
    return app


def wsgi_statuses(app: Any, requests: list[dict[str, Any]]) -> list[int]:
    """Each request's status: a Werkzeug environ with ``request``'s keys as a server sends
    them (PATH_INFO and REQUEST_METHOD raw), straight to the WSGI app."""
    statuses = []
    for request in requests:
        environ = EnvironBuilder(environ_base={"REMOTE_ADDR": "203.0.113.7"}).get_environ()
        environ.update(request)
        body, status, _headers = run_wsgi_app(app, environ)
        b"".join(body)
        getattr(body, "close", lambda: None)()
        statuses.append(int(status.split()[0]))
    return statuses


def one_value_each(headers: list[tuple[str, str]]) -> None:
    names = [name.lower() for name, _ in headers]
    for name in SINGLE:
        assert names.count(name) <= 1, (name, headers)


# --- HEAD is served through GET routes ------------------------------------------------------------


async def test_head_counts_against_a_get_rule_under_asgi() -> None:
    app = RateLimitMiddleware(
        starlette_app("/r"), rules=[rl.asgi.Rule("/r", "2/minute", methods=["GET"])]
    )
    async with asgi_client(app) as client:
        statuses = [(await client.head("/r")).status_code for _ in range(2)]
        statuses.append((await client.get("/r")).status_code)
    assert statuses == [200, 200, 429]


def test_head_counts_against_a_get_rule_under_wsgi() -> None:
    app = WSGIRateLimitMiddleware(flask_app("/r"), rules=[Rule("/r", "2/minute", methods=["GET"])])
    methods = ["HEAD", "HEAD", "GET", "POST"]
    statuses = wsgi_statuses(app, [{"PATH_INFO": "/r", "REQUEST_METHOD": m} for m in methods])
    assert statuses == [200, 200, 429, 200]


async def test_a_lower_case_method_counts_against_its_rule_under_asgi() -> None:
    # Django's ASGI handler upper-cases the method before routing; Starlette answers 405
    app = RateLimitMiddleware(
        starlette_app("/r"), rules=[rl.asgi.Rule("/r", "2/minute", methods=["POST"])]
    )
    statuses = []
    for method in ("post", "post", "POST"):
        sent = await run_asgi(app, http_scope("/r", method=method))
        statuses.append(sent[0]["status"])
    assert statuses[-1] == 429


def test_a_get_rule_keeps_its_name() -> None:
    assert Rule("/r", "1/minute", methods=["GET"]).name == "GET /r"


# --- rule patterns that used to match nothing -----------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "matches", "misses"),
    [
        ("/items/{item_id}/*", ["/items/1", "/items/1/", "/items/1/x/y"], ["/items", "/items2/1"]),
        ("/items/{item_id:int}*", ["/items/1", "/items/12x"], ["/items/x"]),
        ("/items/<int:item_id>", ["/items/1", "/items/42"], ["/items/x", "/items/1/2"]),
        ("/items/<item_id>", ["/items/x"], ["/items/x/y"]),
        ("/files/<path:rest>", ["/files/a/b"], ["/files/"]),
        ("/v/<float:x>", ["/v/1.5"], ["/v/1"]),
        ("/u/<uuid:u>/*", ["/u/12345678-1234-1234-1234-123456789012/a"], ["/u/x/a"]),
    ],
)
def test_template_patterns_match_their_paths(
    pattern: str, matches: list[str], misses: list[str]
) -> None:
    selector = rl.wsgi.WSGIRateLimitMiddleware(flask_app(), rules=[Rule(pattern, "1/minute")])
    for path in matches:
        assert selector._selector.select(path, "GET") is not None, path
    for path in misses:
        assert selector._selector.select(path, "GET") is None, path


@pytest.mark.parametrize(
    "pattern",
    ["/a/*/b", "/items/<foo:x>", "/items/{x:foo}", "/items/{x", "/items/<x", "/a/*b"],
)
def test_patterns_that_cannot_match_are_refused(pattern: str) -> None:
    with pytest.raises(ConfigurationError, match="path"):
        Rule(pattern, "1/minute")


def test_a_flask_template_rule_limits_its_view_under_wsgi() -> None:
    app = WSGIRateLimitMiddleware(
        flask_app("/items/<int:item_id>"), rules=[Rule("/items/<int:item_id>", "2/minute")]
    )
    paths = ["/items/1", "/items/2", "/items/3"]
    assert wsgi_statuses(app, [{"PATH_INFO": p} for p in paths]) == [200, 200, 429]


# --- the WSGI request as Werkzeug routes it -------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "request_"),
    [
        (Rule("/login", "2/minute"), {"PATH_INFO": "//login"}),
        (Rule("/login", "2/minute"), {"PATH_INFO": "///login"}),
        (Rule("/login", "2/minute", methods=["POST"]), {"REQUEST_METHOD": "post"}),
        (Rule("/café", "2/minute"), {"PATH_INFO": "/café".encode().decode("latin-1")}),
    ],
    ids=["double-slash", "triple-slash", "lower-case-method", "utf-8-path"],
)
def test_a_wsgi_rule_limits_every_request_its_view_serves(
    rule: Rule, request_: dict[str, Any]
) -> None:
    path = rule.path
    app = WSGIRateLimitMiddleware(flask_app(path), rules=[rule])
    base = {"PATH_INFO": path.encode().decode("latin-1"), "REQUEST_METHOD": "POST"}
    statuses = wsgi_statuses(app, [base | request_] * 3)
    assert statuses == [200, 200, 429]


def test_exemptions_see_the_routed_wsgi_path_too() -> None:
    app = WSGIRateLimitMiddleware(flask_app("/health", "/r"), "1/minute", exempt=["/health"])
    assert wsgi_statuses(app, [{"PATH_INFO": "//health"}] * 3) == [200, 200, 200]


# --- mounted FastAPI sub-applications -------------------------------------------------------------


async def test_same_path_routes_of_two_mounted_sub_apps_count_apart(clock: Clock) -> None:
    shared = RateLimit(rl.AsyncLimiter("1/minute", clock=clock))

    def sub() -> FastAPI:
        app = FastAPI()

        @app.get("/items", dependencies=[Depends(shared)])
        async def items() -> dict[str, int]:
            return {"ok": 1}

        return app

    app = FastAPI()
    app.mount("/a", sub())
    app.mount("/b", sub())
    async with asgi_client(app) as client:
        statuses = [(await client.get(p)).status_code for p in ("/a/items", "/b/items", "/a/items")]
    assert statuses == [200, 200, 429]


async def test_one_sub_app_mounted_twice_counts_each_mount_apart(clock: Clock) -> None:
    shared = RateLimit(rl.AsyncLimiter("1/minute", clock=clock))
    sub = FastAPI()

    @sub.get("/items/{item_id}", dependencies=[Depends(shared)])
    async def items(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    app = FastAPI()
    app.mount("/a", sub)
    app.mount("/b", sub)
    async with asgi_client(app) as client:
        paths = ("/a/items/1", "/b/items/2", "/a/items/3", "/b/items/4")
        statuses = [(await client.get(p)).status_code for p in paths]
    assert statuses == [200, 200, 429, 429]


async def test_every_tenant_of_a_templated_mount_shares_its_limit(clock: Clock) -> None:
    shared = RateLimit(rl.AsyncLimiter("2/minute", clock=clock))
    sub = FastAPI()

    @sub.get("/items", dependencies=[Depends(shared)])
    async def items() -> dict[str, int]:
        return {"ok": 1}

    app = FastAPI()
    app.mount("/{tenant}", sub)
    async with asgi_client(app) as client:
        statuses = [(await client.get(f"/t{n}/items")).status_code for n in range(4)]
    # a fresh tenant name in the path is no fresh budget
    assert statuses == [200, 200, 429, 429]


# --- one value per single-valued header when two limits answer ------------------------------------


async def test_asgi_middleware_and_route_limit_send_one_value_each(clock: Clock) -> None:
    app = FastAPI()
    route = RateLimit(rl.AsyncLimiter("1/minute", clock=clock), headers=ALL_MODES)

    @app.get("/r", dependencies=[Depends(route)])
    async def endpoint() -> dict[str, int]:
        return {"ok": 1}

    wrapped = RateLimitMiddleware(
        app, rl.AsyncLimiter("100/minute", clock=clock), headers=ALL_MODES
    )
    async with asgi_client(wrapped) as client:
        allowed, denied = await client.get("/r"), await client.get("/r")
    assert (allowed.status_code, denied.status_code) == (200, 429)
    for response in (allowed, denied):
        one_value_each(response.headers.multi_items())
    # the route's numbers stand: it is the limit that answered
    assert denied.headers["RateLimit-Limit"] == "1"
    assert allowed.headers["X-RateLimit-Limit"] == "1"


def test_flask_default_and_view_limit_send_one_value_each(clock: Clock) -> None:
    app = Flask(__name__)
    app.config.update(RATELIMIT_DEFAULT="100/minute", RATELIMIT_HEADERS=list(ALL_MODES))
    ext = FlaskRateLimit(app)
    view = ext.limit(rl.Limiter("1/minute", clock=clock))(lambda: "ok")
    app.add_url_rule("/r", "r", view)
    client = app.test_client()
    allowed, denied = client.get("/r"), client.get("/r")
    assert (allowed.status_code, denied.status_code) == (200, 429)
    for response in (allowed, denied):
        one_value_each(list(response.headers.items()))
    assert denied.headers["RateLimit-Limit"] == "1"


def test_wsgi_middleware_around_a_limited_flask_view_sends_one_value_each(clock: Clock) -> None:
    app = Flask(__name__)
    app.config["RATELIMIT_HEADERS"] = list(ALL_MODES)
    ext = FlaskRateLimit(app)
    app.add_url_rule("/r", "r", ext.limit(rl.Limiter("1/minute", clock=clock))(lambda: "ok"))
    wrapped = WSGIRateLimitMiddleware(
        app.wsgi_app, rl.Limiter("100/minute", clock=clock), headers=ALL_MODES
    )
    client = Client(wrapped)
    allowed, denied = client.get("/r"), client.get("/r")
    assert (allowed.status_code, denied.status_code) == (200, 429)
    for response in (allowed, denied):
        one_value_each(list(response.headers.items()))
    assert denied.headers["RateLimit-Limit"] == "1"
