"""A Flask extension: :class:`FlaskRateLimit` (per-view limits with ``@ext.limit``, an optional
app-wide default, configuration from ``app.config``) and :class:`RateLimited`, the exception of
its denials.

The configuration keys (``RATELIMIT_STORE``, ``RATELIMIT_DEFAULT``, ...) and their defaults are
listed on the Flask page of the docs. State lives in ``app.extensions["ratelimit"]``, never on
the extension object, so one ``FlaskRateLimit`` serves any number of apps, each with its own
store and counts. A store failure never becomes a 500 unless ``RATELIMIT_ON_ERROR = "raise"``;
with ``"deny"`` the answer is ``503``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final, ParamSpec, TypeVar, cast

from flask import Flask, Response, current_app, request
from werkzeug.exceptions import TooManyRequests

from ratelimit._web import (
    Cost,
    Count,
    akey_and_cost,
    check_cost,
    check_count,
    check_key_function,
    finish,
    key_and_cost,
    merge_fields,
    uses_lease,
)
from ratelimit.errors import ConfigurationError, RateLimitExceeded
from ratelimit.headers import Renderer
from ratelimit.keys import EnvironView, KeyFunction, client_ip
from ratelimit.limiter import AsyncLimiter, Limiter
from ratelimit.stores.base import Store

if TYPE_CHECKING:
    from ratelimit.decision import Decision

__all__ = ["FlaskRateLimit", "RateLimited", "RateLimiterUnavailable"]

P = ParamSpec("P")
R = TypeVar("R")

_EXTENSION: Final = "ratelimit"
_EXEMPT: Final = "_ratelimit_exempt"
# Where a request's header fields wait for after_request: its WSGI environ (cheaper than g).
_FIELDS: Final = "ratelimit.fields"
# The leases this request holds, with their count=, and the status of its response: the
# teardown finishes them.
_LEASES: Final = "ratelimit.leases"
_STATUS: Final = "ratelimit.status"


class RateLimited(RateLimitExceeded, TooManyRequests):
    """A denied request: Werkzeug's ``TooManyRequests`` (so ``@app.errorhandler(429)``
    catches it) and a :class:`~ratelimit.RateLimitExceeded`. Raised by the views
    ``@ext.limit`` decorates and by ``RATELIMIT_DEFAULT``, never by callers.

    :param decision: the denying :class:`~ratelimit.Decision`, kept as ``decision``;
        ``retry_after`` is its ``retry_after`` in seconds, a float.
    :param response: the full answer, kept as ``response``: ``429`` with ``Retry-After``, the
        rate-limit headers and a problem+json body.
    """

    def __init__(self, decision: Decision, response: Response) -> None:
        # Cooperative: RateLimitExceeded's __init__ runs Werkzeug's with the message.
        RateLimitExceeded.__init__(self, decision)
        self.response = response

    @property  # type: ignore[override]  # seconds as a float, not Werkzeug's int/datetime
    def retry_after(self) -> float:
        return self.decision.retry_after

    @retry_after.setter
    def retry_after(self, value: object) -> None:
        """Werkzeug's constructor sets None here; the decision's value stands."""

    def __str__(self) -> str:
        return f"{self.code} {RateLimitExceeded.__str__(self)}"


class RateLimiterUnavailable(RateLimited):
    """A request denied because the store failed and ``RATELIMIT_ON_ERROR = "deny"``: code
    503 (so ``@app.errorhandler(429)`` does not catch it)."""

    code = 503


class _State:
    """One app's rate-limit state: its configuration and the limiters of text limits.

    Every setting is read and checked here, at ``init_app``: a bad one is a
    ConfigurationError naming it, never a 500 on the first limited request."""

    __slots__ = ("default", "enabled", "key", "limiters", "on_error", "prefix", "renderer",
                 "store")  # fmt: skip

    def __init__(self, app: Flask, key: KeyFunction | None) -> None:
        config = app.config
        self.enabled = _setting(
            "RATELIMIT_ENABLED", _boolean, config.get("RATELIMIT_ENABLED", True)
        )
        self.store: Store = _setting("RATELIMIT_STORE", _store, config.get("RATELIMIT_STORE"))
        self.prefix: str = config.get("RATELIMIT_PREFIX", "ratelimit")
        self.on_error = config.get("RATELIMIT_ON_ERROR", "allow")
        # the Limiter's own checks, run now rather than at the first limited request
        _setting("RATELIMIT_PREFIX", lambda prefix: Limiter("1/s", prefix=prefix), self.prefix)
        _setting("RATELIMIT_ON_ERROR", lambda value: Limiter("1/s", on_error=value), self.on_error)
        secret = config.get("RATELIMIT_PARTITION_KEY_SECRET")
        if isinstance(secret, str):  # from the environment
            secret = secret.encode("utf-8")
        _setting("RATELIMIT_PARTITION_KEY_SECRET", lambda value: Renderer(
            None, partition_key_secret=value), secret)  # fmt: skip
        headers = config.get("RATELIMIT_HEADERS", "ietf")
        self.renderer = _setting("RATELIMIT_HEADERS", lambda value: Renderer(
            value, partition_key_secret=secret), headers)  # fmt: skip
        key = config.get("RATELIMIT_KEY", key)
        if key is None:
            proxies = config.get("RATELIMIT_TRUSTED_PROXIES", ())
            if isinstance(proxies, str):  # from the environment: "10.0.0.0/8, 192.168.0.0/16"
                proxies = proxies.replace(",", " ").split()
            key = _setting("RATELIMIT_TRUSTED_PROXIES", client_ip, proxies)
        _setting("RATELIMIT_KEY", check_key_function, key)
        self.key: KeyFunction = key
        self.limiters: dict[str, Limiter] = {}
        default = config.get("RATELIMIT_DEFAULT")
        self.default = (
            None if default is None else _setting("RATELIMIT_DEFAULT", self.limiter, default)
        )

    def limiter(self, limit: str | Limiter) -> Limiter:
        """The limiter of ``limit`` for this app: text gets one on the app's store (cached)."""
        if isinstance(limit, Limiter):
            return limit
        limiter = self.limiters.get(limit)
        if limiter is None:
            limiter = Limiter(limit, store=self.store, prefix=self.prefix, on_error=self.on_error)
            self.limiters[limit] = limiter
        return limiter


def _setting(name: str, read: Callable[[Any], R], value: Any) -> R:
    """``read(value)``, with a ConfigurationError that names the setting ``name``."""
    try:
        return read(value)
    except ConfigurationError as error:
        raise ConfigurationError(f"{name}: {error}") from error


_TRUE: Final = frozenset(("1", "true", "yes", "on"))
_FALSE: Final = frozenset(("0", "false", "no", "off", ""))


def _boolean(value: object) -> bool:
    """A boolean setting: a bool, 0 or 1, or text as an environment variable holds it
    (``"false"``, ``"0"``, ``"no"``, ``"off"``; ``"true"``, ``"1"``, ``"yes"``, ``"on"``)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise ConfigurationError(f"must be a boolean (or 'true'/'false', '1'/'0'), got {value!r}")


def _store(store: object) -> Store:
    """``RATELIMIT_STORE``: a sync store, ``memory://``, a Redis URL, or None (memory)."""
    if store is None or store == "memory://":
        from ratelimit.stores.memory import MemoryStore

        return MemoryStore()
    if isinstance(store, str):
        if not store.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigurationError(
                f"a store URL must be 'memory://' or start with 'redis://', 'rediss://' or "
                f"'unix://', got {store!r}"
            )
        try:
            from ratelimit.stores.redis import RedisStore

            return RedisStore.from_url(store)
        except ImportError as error:
            raise ConfigurationError(
                f"{store!r} needs redis-py: pip install 'ratelimit-atomic[redis]'"
            ) from error
        except ValueError as error:
            raise ConfigurationError(f"cannot use store URL {store!r}: {error}") from error
    if not isinstance(store, Store):
        raise ConfigurationError(
            f"must be a sync store (MemoryStore, RedisStore, UpstashStore), 'memory://', a "
            f"redis:// URL or None, got {store!r}"
        )
    return store


class _Limit:
    """What ``@ext.limit`` recorded about a view."""

    __slots__ = ("cost", "count", "key", "limit", "name")

    def __init__(self, limit: str | Limiter, key: KeyFunction | None, cost: Cost,
                 name: str | None, count: Count | None = None) -> None:  # fmt: skip
        if isinstance(limit, AsyncLimiter):
            raise ConfigurationError(
                f"{limit!r} is an AsyncLimiter; Flask views call the limiter synchronously: "
                "use Limiter"
            )
        if isinstance(limit, str):
            Limiter(limit)  # check the text now, where the mistake is
        elif not isinstance(limit, Limiter):
            raise ConfigurationError(
                f"limit must be text such as '5/minute' or a Limiter, got {limit!r}"
            )
        if key is not None:
            check_key_function(key)
        check_cost(cost)
        check_count(count)
        self.count = count
        if name is not None and (not isinstance(name, str) or not name):
            raise ConfigurationError(f"name must be non-empty text, got {name!r}")
        self.limit = limit
        self.key = key
        self.cost = cost
        self.name = name


class FlaskRateLimit:
    """Rate limits for Flask apps: ``FlaskRateLimit(app)``, or ``FlaskRateLimit()`` then
    :meth:`init_app` for each app (factories, several apps in one process).

    :param app: an app to set up at once, as :meth:`init_app` does.
    :param key: the default key function when ``RATELIMIT_KEY`` is not configured, a callable
        of the Flask request; default :func:`ratelimit.keys.client_ip` with
        ``RATELIMIT_TRUSTED_PROXIES``.
    :raises ConfigurationError: for a key that is not a key function, and as :meth:`init_app`
        does.
    """

    def __init__(self, app: Flask | None = None, *, key: KeyFunction | None = None) -> None:
        if key is not None:
            check_key_function(key)
        self._key = key
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Read ``app``'s ``RATELIMIT_*`` configuration into ``app.extensions["ratelimit"]``
        and register the hooks that add headers and apply ``RATELIMIT_DEFAULT``. Calling it
        again re-reads the configuration.

        :param app: the Flask app.
        :raises ConfigurationError: naming the bad setting, for any configuration key that
            does not check out.
        """
        first = _EXTENSION not in app.extensions
        app.extensions[_EXTENSION] = _State(app, self._key)
        if first:  # calling init_app again re-reads the configuration, hooks stay single
            app.before_request(_apply_default)
            app.after_request(_add_headers)
            app.teardown_request(_finish_leases)

    def limit(
        self,
        limit: str | Limiter,
        *,
        key: KeyFunction | None = None,
        cost: Cost = 1,
        name: str | None = None,
        count: Count | None = None,
    ) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """Decorate a view (sync or async) with a limit, counted per view (its endpoint) and
        client key. Put ``@ext.limit`` below ``@app.route``; stacking several adds several
        limits, each counted on its own. The decorated view blocks on the limiter's store once
        per request (an async view: the same call, from its coroutine) and raises
        :class:`RateLimited` when denied.

        :param limit: text such as ``"5/minute; 100/day"``, which becomes a
            :class:`~ratelimit.Limiter` per app on the app's store, built on first use; or a
            Limiter, shared by every app that uses the view. A limiter with a
            :class:`~ratelimit.Concurrency` policy holds its slot for the request, released at
            teardown.
        :param key: the client's key function, called with the Flask ``request`` (an async
            view may use an async one); default the app's.
        :param cost: units per request, an int or a callable of the request.
        :param name: count under this name instead of the view's endpoint, so views given the
            same name share one count.
        :param count: a callable of the response status; False gives the request's cost back
            (``count=lambda status: status >= 400`` limits failed logins only).
        :returns: the decorator.
        :raises ConfigurationError: for a bad limit (an AsyncLimiter included), key, cost,
            name or count.
        """
        spec = _Limit(limit, key, cost, name, count)

        def decorate(view: Callable[P, R]) -> Callable[P, R]:
            if inspect.iscoroutinefunction(view):
                coroutine_view = cast("Callable[P, Awaitable[Any]]", view)

                @functools.wraps(view)
                async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                    state = _state()
                    if state.enabled:
                        environ = EnvironView(request.environ)
                        key, cost = await akey_and_cost(
                            spec.key or state.key, spec.cost, environ, _request
                        )
                        _check(state, spec, key, cost)
                    return await coroutine_view(*args, **kwargs)

                return cast("Callable[P, R]", async_wrapper)

            @functools.wraps(view)
            def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
                state = _state()
                if state.enabled:
                    environ = EnvironView(request.environ)
                    key, cost = key_and_cost(spec.key or state.key, spec.cost, environ, _request)
                    _check(state, spec, key, cost)
                return view(*args, **kwargs)

            return wrapper

        return decorate

    def exempt(self, view: Callable[P, R]) -> Callable[P, R]:
        """Mark a view as exempt from ``RATELIMIT_DEFAULT``; its own ``@ext.limit`` still
        applies.

        :param view: the view function.
        :returns: the same view, marked.
        """
        setattr(view, _EXEMPT, True)
        return view


# --- per request --------------------------------------------------------------------------------


def _state() -> _State:
    try:
        return cast(_State, current_app.extensions[_EXTENSION])
    except KeyError:
        raise ConfigurationError(
            f"FlaskRateLimit is not initialised on app {current_app.name!r}: call ext.init_app(app)"
        ) from None


def _request() -> Any:
    """Flask's request, for custom key and cost callables."""
    return request


def _check(state: _State, spec: _Limit, key: str, cost: int) -> None:
    """Hit the view's limiter; record the headers or raise RateLimited."""
    name = spec.name if spec.name is not None else request.endpoint or request.path
    _hit(state, state.limiter(spec.limit), f"{name}|{key}", cost, spec.count)


def _hit(state: _State, limiter: Limiter, identifier: str, cost: int,
         count: Count | None = None) -> None:  # fmt: skip
    if uses_lease(limiter, count):
        lease = limiter.acquire(identifier, cost)
        decision = lease.decision
        if decision.allowed:
            request.environ.setdefault(_LEASES, []).append((lease, count))
    else:
        decision = limiter.hit(identifier, cost)
    if not decision.allowed:
        status, headers, body = state.renderer.deny(decision, identifier)
        response = Response(body, status=status, headers=headers)
        if status == 503:
            raise RateLimiterUnavailable(decision, response)
        raise RateLimited(decision, response)
    fields = state.renderer.fields(decision, identifier)
    if fields:
        environ = request.environ
        recorded: list[tuple[str, str]] | None = environ.get(_FIELDS)
        if recorded is None:
            environ[_FIELDS] = fields
        else:
            # the view's single-valued fields replace the app-wide default's
            recorded[:] = [*merge_fields(fields, recorded), *fields]


def _apply_default() -> None:
    """``before_request``: the app-wide ``RATELIMIT_DEFAULT``, per client."""
    state = _state()
    if not state.enabled or state.default is None:
        return
    endpoint = request.endpoint
    view = current_app.view_functions.get(endpoint) if endpoint else None
    if view is not None and getattr(view, _EXEMPT, False):
        return
    key, _ = key_and_cost(state.key, 1, EnvironView(request.environ), _request)
    _hit(state, state.default, key, 1)


def _add_headers(response: Response) -> Response:
    """``after_request``: add the rate-limit headers recorded for this request."""
    request.environ[_STATUS] = response.status_code
    fields: list[tuple[str, str]] | None = request.environ.get(_FIELDS)
    if fields:  # a view's denial carries its own single-valued fields: they stand
        for name, value in merge_fields(response.headers.items(), fields):
            response.headers.add(name, value)
    return response


def _finish_leases(error: BaseException | None) -> None:
    """``teardown_request``: the leases this request took are finished (their ``count`` of
    the response status, ``500`` after an unhandled error) and released."""
    leases: list[tuple[Any, Count | None]] | None = request.environ.pop(_LEASES, None)
    if not leases:
        return
    status = 500 if error is not None else request.environ.get(_STATUS)
    for lease, count in leases:
        finish(lease, count, status)
