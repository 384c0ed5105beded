"""The Flask extension through Flask's test client: app factories, several apps, config,
sync and async views, error handlers."""

from __future__ import annotations

from typing import Any

import http_sfv
import pytest
from flask import Blueprint, Flask, Request, jsonify
from werkzeug.test import TestResponse

import ratelimit as rl
from ratelimit import keys
from ratelimit.flask import FlaskRateLimit, RateLimited
from tests.support import Clock

ext = FlaskRateLimit()  # module level, as in an app factory layout
bp = Blueprint("api", __name__)


@bp.route("/items/<int:item_id>")
@ext.limit("2/minute")
def item(item_id: int) -> dict[str, int]:
    return {"id": item_id}


@bp.route("/other")
@ext.limit("2/minute")
def other() -> str:
    return "other"


@bp.route("/async")
@ext.limit("2/minute")
async def async_view() -> str:
    return "async"


@bp.route("/health")
@ext.exempt
def health() -> str:
    return "ok"


@bp.route("/free")
def free() -> str:
    return "free"


def create_app(**config: Any) -> Flask:
    app = Flask(__name__)
    app.config.update(config)
    ext.init_app(app)
    app.register_blueprint(bp)
    return app


def remaining(response: TestResponse) -> list[int]:
    parsed = http_sfv.List()
    parsed.parse(response.headers["RateLimit"].encode())
    return [item.params["r"] for item in parsed]


def test_view_limit_headers_and_denial() -> None:
    client = create_app().test_client()
    first = client.get("/items/1")
    assert first.status_code == 200
    assert first.json == {"id": 1}
    assert remaining(first) == [1]
    assert remaining(client.get("/items/2")) == [0]  # one view, one limit, whatever the item
    denied = client.get("/items/3")
    assert denied.status_code == 429
    assert denied.headers["Content-Type"] == "application/problem+json"
    assert int(denied.headers["Retry-After"]) >= 1
    assert denied.json is not None and denied.json["status"] == 429
    assert remaining(denied) == [0]
    # another view has its own count, the same client's
    assert client.get("/other").status_code == 200
    assert "RateLimit" not in client.get("/free").headers


def test_async_views() -> None:
    client = create_app().test_client()
    assert client.get("/async").text == "async"
    assert client.get("/async").status_code == 200
    assert client.get("/async").status_code == 429


def test_several_apps_keep_separate_state() -> None:
    first, second = create_app(), create_app()
    assert first.extensions["ratelimit"] is not second.extensions["ratelimit"]
    a, b = first.test_client(), second.test_client()
    a.get("/items/1")
    a.get("/items/1")
    assert a.get("/items/1").status_code == 429
    assert b.get("/items/1").status_code == 200


def test_clients_are_keyed_by_ip_with_trusted_proxies() -> None:
    app = create_app(RATELIMIT_TRUSTED_PROXIES=["10.0.0.0/8"])
    client = app.test_client()
    env = {"REMOTE_ADDR": "10.0.0.2"}
    for _ in range(2):
        client.get("/other", headers={"X-Forwarded-For": "198.51.100.1"}, environ_base=env)
    blocked = client.get("/other", headers={"X-Forwarded-For": "198.51.100.1"}, environ_base=env)
    assert blocked.status_code == 429
    fine = client.get("/other", headers={"X-Forwarded-For": "198.51.100.2"}, environ_base=env)
    assert fine.status_code == 200


def test_a_shared_limiter_instance_and_custom_key_and_cost(clock: Clock) -> None:
    limiter = rl.Limiter(rl.FixedWindow(10, 60), clock=clock)
    local = FlaskRateLimit()
    app = Flask(__name__)
    local.init_app(app)

    def user(request: Request) -> str:
        return "user:" + request.headers.get("X-User", "-")

    @app.route("/upload", methods=["POST"])
    @local.limit(limiter, key=user, cost=lambda request: len(request.get_data()), name="upload")
    def upload() -> str:
        return "stored"

    client = app.test_client()
    assert client.post("/upload", data=b"x" * 8, headers={"X-User": "ann"}).status_code == 200
    denied = client.post("/upload", data=b"x" * 3, headers={"X-User": "ann"})
    assert denied.status_code == 429
    assert denied.headers["Retry-After"] == "60"
    assert client.post("/upload", data=b"x" * 3, headers={"X-User": "bob"}).status_code == 200
    assert limiter.peek("upload|user:ann").remaining == 2


def test_async_key_in_an_async_view(clock: Clock) -> None:
    local = FlaskRateLimit(key=keys.header("X-API-Key"))
    app = Flask(__name__)
    local.init_app(app)

    async def tenant(request: Request) -> str:
        return "tenant:" + request.headers.get("X-Tenant", "-")

    @app.route("/")
    @local.limit(rl.Limiter(rl.FixedWindow(1, 60), clock=clock), key=tenant)
    async def index() -> str:
        return "ok"

    @app.route("/by-api-key")
    @local.limit(rl.Limiter(rl.FixedWindow(1, 60), clock=clock))
    def by_api_key() -> str:
        return "ok"

    client = app.test_client()
    assert client.get("/", headers={"X-Tenant": "a"}).status_code == 200
    assert client.get("/", headers={"X-Tenant": "a"}).status_code == 429
    assert client.get("/", headers={"X-Tenant": "b"}).status_code == 200
    assert client.get("/by-api-key", headers={"X-API-Key": "k1"}).status_code == 200
    assert client.get("/by-api-key", headers={"X-API-Key": "k2"}).status_code == 200
    assert client.get("/by-api-key", headers={"X-API-Key": "k1"}).status_code == 429


def test_default_limit_and_exempt() -> None:
    app = create_app(RATELIMIT_DEFAULT="3/minute")
    client = app.test_client()
    for _ in range(3):
        assert client.get("/free").status_code == 200
    assert client.get("/free").status_code == 429
    for _ in range(5):
        assert client.get("/health").status_code == 200  # @ext.exempt


def test_disabled_and_header_modes() -> None:
    client = create_app(RATELIMIT_ENABLED=False).test_client()
    for _ in range(5):
        response = client.get("/items/1")
        assert response.status_code == 200
        assert "RateLimit" not in response.headers
    legacy = create_app(RATELIMIT_HEADERS=["legacy"]).test_client().get("/items/1")
    assert legacy.headers["X-RateLimit-Limit"] == "2"
    assert "RateLimit" not in legacy.headers


def test_error_handlers_replace_the_answer() -> None:
    app = create_app()

    @app.errorhandler(429)
    def too_many(error: RateLimited) -> tuple[Any, int, dict[str, str]]:
        retry = str(max(1, round(error.decision.retry_after)))
        return jsonify(error="slow down"), 429, {"Retry-After": retry}

    client = app.test_client()
    client.get("/other")
    client.get("/other")
    denied = client.get("/other")
    assert denied.status_code == 429
    assert denied.json == {"error": "slow down"}
    assert "Retry-After" in denied.headers


class BrokenStore(rl.MemoryStore):
    def evaluate(self, *args: Any, **kwargs: Any) -> list[int]:
        raise rl.StoreError("down")


def test_store_errors_never_429() -> None:
    client = create_app(RATELIMIT_STORE=BrokenStore()).test_client()
    for _ in range(4):
        response = client.get("/items/1")
        assert response.status_code == 200
        assert "RateLimit" not in response.headers
    app = create_app(RATELIMIT_STORE=BrokenStore(), RATELIMIT_ON_ERROR="deny")

    @app.errorhandler(429)
    def never(error: Exception) -> tuple[str, int]:  # pragma: no cover - must not be reached
        return "wrongly a 429", 429

    denied = app.test_client().get("/items/1")
    assert denied.status_code == 503
    assert int(denied.headers["Retry-After"]) >= 1


def test_configuration_errors() -> None:
    with pytest.raises(rl.ConfigurationError):
        ext.limit("often")
    with pytest.raises(rl.ConfigurationError, match="AsyncLimiter"):
        ext.limit(rl.AsyncLimiter("1/second"))
    with pytest.raises(rl.ConfigurationError):
        ext.limit("1/second", cost=-1)
    with pytest.raises(rl.ConfigurationError):
        create_app(RATELIMIT_STORE=object())
    with pytest.raises(rl.ConfigurationError):
        create_app(RATELIMIT_HEADERS="rfc")


def test_not_initialised_app_is_a_clear_error() -> None:
    app = Flask(__name__)
    app.register_blueprint(bp)
    app.testing = True
    with pytest.raises(rl.ConfigurationError, match="init_app"):
        app.test_client().get("/items/1")


def test_init_app_twice_rereads_config_without_doubling_hooks() -> None:
    app = create_app()
    app.config["RATELIMIT_HEADERS"] = "draft-6"
    ext.init_app(app)
    response = app.test_client().get("/items/1")
    assert response.headers.getlist("RateLimit-Limit") == ["2"]
    assert "RateLimit" not in response.headers


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("RATELIMIT_ON_ERROR", "block"),
        ("RATELIMIT_PREFIX", None),
        ("RATELIMIT_PREFIX", ""),
        ("RATELIMIT_STORE", "memcached://localhost"),
        ("RATELIMIT_STORE", object()),
        ("RATELIMIT_ENABLED", "maybe"),
        ("RATELIMIT_ENABLED", 2),
        ("RATELIMIT_HEADERS", "rfc"),
        ("RATELIMIT_PARTITION_KEY_SECRET", 42),
        ("RATELIMIT_TRUSTED_PROXIES", ["not-a-network"]),
        ("RATELIMIT_KEY", "client_ip"),
        ("RATELIMIT_DEFAULT", "often"),
    ],
)
def test_every_setting_is_checked_at_init_app_naming_it(setting: str, value: Any) -> None:
    app = Flask(__name__)
    app.config[setting] = value
    with pytest.raises(rl.ConfigurationError, match=setting):
        FlaskRateLimit(app)


def test_memory_url_is_a_memory_store() -> None:
    app = create_app(RATELIMIT_STORE="memory://")
    assert isinstance(app.extensions["ratelimit"].store, rl.MemoryStore)
    client = app.test_client()
    assert [client.get("/items/1").status_code for _ in range(3)] == [200, 200, 429]


@pytest.mark.parametrize(
    ("text", "enabled"),
    [("false", False), ("0", False), ("no", False), ("off", False), ("False", False),
     ("true", True), ("1", True), ("yes", True), ("on", True), (" TRUE ", True)],
)  # fmt: skip
def test_boolean_settings_from_the_environment_read_as_meant(text: str, enabled: bool) -> None:
    client = create_app(RATELIMIT_ENABLED=text).test_client()
    statuses = [client.get("/items/1").status_code for _ in range(3)]
    assert statuses == ([200, 200, 429] if enabled else [200, 200, 200])


def test_trusted_proxies_from_the_environment_are_a_list() -> None:
    app = create_app(RATELIMIT_TRUSTED_PROXIES="10.0.0.0/8, 192.168.0.0/16")
    client = app.test_client()
    for proxy in ("10.0.0.1", "192.168.1.1"):
        response = client.get("/items/1", headers={"X-Forwarded-For": "198.51.100.9"},
                              environ_base={"REMOTE_ADDR": proxy})  # fmt: skip
        assert response.status_code == 200
    assert client.get("/items/1", headers={"X-Forwarded-For": "198.51.100.9"},
                      environ_base={"REMOTE_ADDR": "10.0.0.2"}).status_code == 429  # fmt: skip
