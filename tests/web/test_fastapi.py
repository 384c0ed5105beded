"""The FastAPI dependency: per route template, shared limiters, headers on every kind of
return value, denials as HTTPExceptions."""

# No `from __future__ import annotations`: FastAPI resolves endpoint annotations at runtime.
from typing import Annotated, Any

import http_sfv
import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from pydantic import BaseModel

import ratelimit as rl
from ratelimit.asgi import RateLimitMiddleware
from ratelimit.fastapi import RateLimit, RateLimited
from tests.support import Clock


class Item(BaseModel):
    id: int


def client(app: Any, peer: str = "203.0.113.7") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(peer, 50000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


def remaining(response: httpx.Response) -> list[int]:
    parsed = http_sfv.List()
    parsed.parse(response.headers["RateLimit"].encode())
    return [item.params["r"] for item in parsed]


def make_app(limit: RateLimit, *, middleware: bool = False) -> FastAPI:
    app = FastAPI()
    guard = [Depends(limit)]

    @app.get("/items/{item_id}", dependencies=guard)
    async def read_item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    @app.get("/model/{item_id}", dependencies=guard, response_model=Item)
    def read_model(item_id: int) -> Item:
        return Item(id=item_id)

    @app.get("/response", dependencies=guard)
    async def read_response() -> PlainTextResponse:
        return PlainTextResponse("built by hand")

    @app.get("/stream", dependencies=guard)
    async def read_stream() -> StreamingResponse:
        async def chunks() -> Any:
            for i in range(3):
                yield f"{i}\n".encode()

        return StreamingResponse(chunks())

    if middleware:
        app.add_middleware(RateLimitMiddleware)
    return app


async def test_one_route_template_shares_a_limit(clock: Clock) -> None:
    limit = RateLimit(rl.AsyncLimiter(rl.FixedWindow(2, 60), clock=clock))
    async with client(make_app(limit)) as http:
        assert (await http.get("/items/1")).status_code == 200
        assert (await http.get("/items/2")).status_code == 200
        denied = await http.get("/items/3")
        assert denied.status_code == 429
        # a different route using the same dependency counts on its own
        assert (await http.get("/model/1")).status_code == 200
    assert (await limit.limiter.peek("GET /items/:item_id|ip:203.0.113.7")).remaining == 0  # type: ignore[misc]


async def test_name_makes_one_limit_for_every_route(clock: Clock) -> None:
    limit = RateLimit(rl.AsyncLimiter(rl.FixedWindow(2, 60), clock=clock), name="api")
    async with client(make_app(limit)) as http:
        assert (await http.get("/items/1")).status_code == 200
        assert (await http.get("/model/1")).status_code == 200
        assert (await http.get("/response")).status_code == 429


async def test_denial_is_a_429_with_problem_json_and_retry_after(clock: Clock) -> None:
    limit = RateLimit(rl.AsyncLimiter(rl.FixedWindow(1, 30), clock=clock))
    async with client(make_app(limit)) as http:
        await http.get("/items/1")
        clock.now += 0.25
        denied = await http.get("/items/1")
    assert denied.status_code == 429
    assert denied.headers["Retry-After"] == "30"  # 29.75 rounded up
    assert denied.headers["Content-Type"] == "application/problem+json"
    assert denied.json() == {"detail": "Rate limit exceeded; retry in 30 seconds."}
    assert remaining(denied) == [0]
    assert "RateLimit-Policy" in denied.headers


async def test_headers_without_the_middleware_reach_data_returns(clock: Clock) -> None:
    limit = RateLimit(rl.AsyncLimiter(rl.FixedWindow(10, 60), clock=clock))
    async with client(make_app(limit)) as http:
        assert remaining(await http.get("/items/1")) == [9]
        assert remaining(await http.get("/model/1")) == [9]
        streamed = await http.get("/stream")
        assert streamed.text == "0\n1\n2\n"
        # FastAPI does not copy a dependency's headers onto a Response the endpoint built:
        # that is what the middleware is for (next test).
        assert "RateLimit" not in (await http.get("/response")).headers


async def test_headers_with_the_middleware_reach_every_response(clock: Clock) -> None:
    limit = RateLimit(rl.AsyncLimiter(rl.FixedWindow(10, 60), clock=clock))
    async with client(make_app(limit, middleware=True)) as http:
        for path in ("/items/1", "/model/1", "/response", "/stream"):
            response = await http.get(path)
            assert response.status_code == 200
            assert remaining(response) == [9], path
            assert len(response.headers.get_list("RateLimit")) == 1  # not twice
        assert (await http.get("/response")).text == "built by hand"


async def test_route_and_middleware_limits_together(clock: Clock) -> None:
    app = FastAPI()
    route_limit = RateLimit(rl.AsyncLimiter(rl.FixedWindow(5, 60), clock=clock), headers="draft-6")

    @app.get("/", dependencies=[Depends(route_limit)])
    async def index() -> PlainTextResponse:
        return PlainTextResponse("ok")

    global_limiter = rl.AsyncLimiter(rl.FixedWindow(100, 3600), clock=clock)
    app.add_middleware(RateLimitMiddleware, limiter=global_limiter, headers=("ietf", "draft-6"))
    async with client(app) as http:
        response = await http.get("/")
    # ietf: the middleware's policy; draft-6: one value only, the route's (more specific) one
    assert remaining(response) == [99]
    assert response.headers.get_list("RateLimit-Limit") == ["5"]
    assert response.headers.get_list("RateLimit-Remaining") == ["4"]


async def test_router_dependencies_limit_each_route(clock: Clock) -> None:
    limiter = rl.AsyncLimiter(rl.FixedWindow(1, 60), clock=clock)
    router = APIRouter(prefix="/v1", dependencies=[Depends(RateLimit(limiter))])

    @router.get("/a/{x}")
    async def a(x: str) -> dict[str, str]:
        return {"x": x}

    @router.post("/a/{x}")
    async def a_post(x: str) -> dict[str, str]:
        return {"x": x}

    app = FastAPI()
    app.include_router(router)
    async with client(app) as http:
        assert (await http.get("/v1/a/1")).status_code == 200
        assert (await http.get("/v1/a/2")).status_code == 429
        assert (await http.post("/v1/a/1")).status_code == 200
    assert (await limiter.peek("GET /v1/a/:x|ip:203.0.113.7")).remaining == 0
    assert (await limiter.peek("POST /v1/a/:x|ip:203.0.113.7")).remaining == 0


async def test_the_decision_is_the_dependency_value(clock: Clock) -> None:
    app = FastAPI()
    limit = RateLimit(rl.AsyncLimiter(rl.FixedWindow(3, 60), clock=clock))

    @app.get("/")
    async def index(decision: Annotated[rl.Decision, Depends(limit)]) -> dict[str, int]:
        return {"remaining": decision.remaining}

    async with client(app) as http:
        assert (await http.get("/")).json() == {"remaining": 2}


async def test_custom_key_and_cost_sync_and_async(clock: Clock) -> None:
    async def user(request: Request) -> str:
        return "user:" + request.headers.get("X-User", "-")

    def units(request: Request) -> int:
        return int(request.query_params.get("units", "1"))

    limiter = rl.AsyncLimiter(rl.FixedWindow(10, 60), clock=clock)
    app = FastAPI()

    @app.get("/", dependencies=[Depends(RateLimit(limiter, key=user, cost=units))])
    async def index() -> dict[str, bool]:
        return {"ok": True}

    async with client(app) as http:
        assert (await http.get("/?units=10", headers={"X-User": "ann"})).status_code == 200
        assert (await http.get("/", headers={"X-User": "ann"})).status_code == 429
        assert (await http.get("/", headers={"X-User": "bob"})).status_code == 200


async def test_a_handler_for_rate_limit_exceeded_replaces_the_answer(clock: Clock) -> None:
    limit = RateLimit(rl.AsyncLimiter(rl.FixedWindow(1, 60), clock=clock))
    app = make_app(limit)

    @app.exception_handler(rl.RateLimitExceeded)
    async def handler(request: Request, exc: rl.RateLimitExceeded) -> JSONResponse:
        assert isinstance(exc, RateLimited)
        headers = {"Retry-After": exc.headers["Retry-After"]}  # type: ignore[attr-defined]
        return JSONResponse({"wait": exc.retry_after}, status_code=429, headers=headers)

    async with client(app) as http:
        await http.get("/items/1")
        denied = await http.get("/items/1")
    assert denied.status_code == 429
    assert denied.json() == {"wait": 60.0}
    assert denied.headers["Retry-After"] == "60"


class BrokenStore(rl.MemoryStore):
    async def aevaluate(self, *args: Any, **kwargs: Any) -> list[int]:
        raise rl.StoreError("timeout")


async def test_store_errors_never_429() -> None:
    allow = RateLimit(rl.AsyncLimiter("1/minute", store=BrokenStore(), on_error="allow"))
    async with client(make_app(allow)) as http:
        for _ in range(3):
            response = await http.get("/items/1")
            assert response.status_code == 200
            assert "RateLimit" not in response.headers
    deny = RateLimit(rl.AsyncLimiter("1/minute", store=BrokenStore(), on_error="deny"))
    async with client(make_app(deny)) as http:
        response = await http.get("/items/1")
        assert response.status_code == 503
        assert int(response.headers["Retry-After"]) >= 1


async def test_text_and_sync_memory_limiters(clock: Clock) -> None:
    assert isinstance(RateLimit("5/minute").limiter, rl.AsyncLimiter)
    limit = RateLimit(rl.Limiter(rl.FixedWindow(1, 60), clock=clock))
    async with client(make_app(limit)) as http:
        assert (await http.get("/items/1")).status_code == 200
        assert (await http.get("/items/1")).status_code == 429


@pytest.mark.parametrize(
    "options",
    [{"key": "ip"}, {"cost": -1}, {"headers": "nope"}, {"name": ""}],
)
def test_bad_options(options: dict[str, Any]) -> None:
    with pytest.raises(rl.ConfigurationError):
        RateLimit("1/second", **options)


def test_openapi_shows_no_extra_parameters() -> None:
    app = make_app(RateLimit("5/minute"))
    parameters = app.openapi()["paths"]["/items/{item_id}"]["get"]["parameters"]
    assert [p["name"] for p in parameters] == ["item_id"]
