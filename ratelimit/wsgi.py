"""WSGI rate-limit middleware for Flask, Django, Pyramid, Bottle or any WSGI application:
:class:`WSGIRateLimitMiddleware` and its :class:`Rule`.

Rules, exemptions, keys and headers work as in :mod:`ratelimit.asgi`; rules and exemptions see
the request as Werkzeug (Flask) routes it: the path decoded as UTF-8 with runs of slashes
merged, the method in upper case. See the WSGI page of the docs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeAlias

from ratelimit._web import (
    AnyLimiter,
    Cost,
    Exempt,
    Rule,
    Selector,
    finish,
    key_and_cost,
    merge_fields,
    wsgi_method,
    wsgi_path,
)
from ratelimit.errors import ConfigurationError
from ratelimit.headers import HeadersOption, Renderer, retry_after_seconds
from ratelimit.keys import EnvironView, KeyFunction, client_ip
from ratelimit.limiter import AsyncLimiter, Limiter

if TYPE_CHECKING:
    from collections.abc import Iterator

    from ratelimit._web import Count
    from ratelimit.decision import Decision
    from ratelimit.lease import Lease

__all__ = ["Rule", "WSGIRateLimitMiddleware"]

Environ: TypeAlias = dict[str, Any]
ExcInfo: TypeAlias = "tuple[type[BaseException], BaseException, TracebackType | None]"
Headers: TypeAlias = list[tuple[str, str]]
StartResponse: TypeAlias = Callable[..., Callable[[bytes], object]]
WSGIApp: TypeAlias = Callable[[Environ, StartResponse], Iterable[bytes]]
Hit: TypeAlias = Callable[[str, int], "Decision"]
#: ``deny=``: a callable of (environ, decision) returning a WSGI app that answers the request.
Deny: TypeAlias = Callable[[Environ, "Decision"], WSGIApp]

_REASONS = {429: "429 Too Many Requests", 503: "503 Service Unavailable"}


def sync_hit(limiter: AnyLimiter) -> tuple[Limiter, Hit]:
    """The :class:`Limiter` ``limiter`` names (text builds one on a MemoryStore) and its hit.

    Raises ConfigurationError for an AsyncLimiter (WSGI cannot await) or anything else."""
    if isinstance(limiter, str):
        limiter = Limiter(limiter)
    if isinstance(limiter, Limiter):
        return limiter, limiter.hit
    if isinstance(limiter, AsyncLimiter):
        raise ConfigurationError(
            f"{limiter!r} is an AsyncLimiter; WSGI code is sync: use Limiter (with RedisStore "
            "rather than AsyncRedisStore)"
        )
    raise ConfigurationError(
        f"limiter must be a Limiter or text such as '10/minute', got {limiter!r}"
    )


def route_path(environ: Environ) -> str:
    """The path the application's routes see: :func:`ratelimit._web.wsgi_path`."""
    return wsgi_path(environ)


class WSGIRateLimitMiddleware:
    """Limits the requests of a WSGI application.

    The first :class:`Rule` whose path and method match picks the limiter, else ``limiter``
    does; requests that nothing picks, and exempt ones, go straight to the application. An
    allowed request goes on with the rate-limit headers added to those its application passes
    to ``start_response`` (each call, so an error page sent with ``exc_info`` gets them too);
    the application's iterable is returned as it is. A denied request is answered here:
    ``429`` with ``Retry-After``, the headers and a problem+json body, or ``deny``'s response
    (``503`` when a store failure denied it). A limiter with a
    :class:`~ratelimit.Concurrency` policy, or a rule with ``count=``, takes a lease released
    when the server closes the response iterable. See the WSGI page of the docs.

    Blocks on the limiter's store once per limited request.

    :param app: the WSGI application to wrap.
    :param limiter: the limit of every request no rule matches: a :class:`~ratelimit.Limiter`,
        or text such as ``"100/minute"`` (a Limiter on a new MemoryStore); None limits only
        what ``rules`` match.
    :param key: the client's key function, called with the WSGI ``environ``; default
        :func:`ratelimit.keys.client_ip`.
    :param rules: :class:`Rule` objects, first match wins.
    :param exempt: path patterns (as :class:`Rule` paths), or a callable of the environ
        returning True for requests never limited.
    :param headers: ``"ietf"`` (default), ``"draft-6"``, ``"legacy"``, a tuple of them, or None
        (see :mod:`ratelimit.headers`).
    :param cost: units per request, an int or a callable of the environ.
    :param deny: a callable of ``(environ, decision)`` returning the WSGI app that answers a
        denied request (such as a Werkzeug ``Response``); ``Retry-After`` and the rate-limit
        headers are added unless it sets them.
    :param partition_key_secret: bytes; adds a hashed ``pk`` to the ``RateLimit`` field.
    :raises ConfigurationError: at construction, for a bad option; per request, when a key
        function returns something other than a str. Otherwise a request raises only what the
        application, a custom callable, or a limiter with ``on_error="raise"`` raises.
    """

    def __init__(
        self,
        app: WSGIApp,
        limiter: AnyLimiter | None = None,
        *,
        key: KeyFunction | None = None,
        rules: Iterable[Rule] = (),
        exempt: Exempt = (),
        headers: HeadersOption = "ietf",
        cost: Cost = 1,
        deny: Deny | None = None,
        partition_key_secret: bytes | None = None,
    ) -> None:
        self.app = app
        self.renderer = Renderer(headers, partition_key_secret=partition_key_secret)
        self._selector: Selector[Hit] = Selector(
            sync_hit, limiter, key, rules, exempt, cost, client_ip
        )
        default = self._selector.default
        self.limiter: Limiter | None = default.limiter if default else None
        self.rules = self._selector.rules
        if deny is not None and not callable(deny):
            raise ConfigurationError(f"deny must be a callable, got {deny!r}")
        self._deny = deny

    def __repr__(self) -> str:
        return (
            f"WSGIRateLimitMiddleware(limiter={self.limiter!r}, rules={list(self.rules)!r}, "
            f"headers={self.renderer.modes!r})"
        )

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        selector = self._selector
        if selector.needs_path:
            target = selector.select(wsgi_path(environ), wsgi_method(environ))
        else:
            target = selector.default
        if target is None or (selector.exempt_call is not None and selector.exempt_call(environ)):
            return self.app(environ, start_response)

        key, cost = key_and_cost(target.key, target.cost, EnvironView(environ), lambda: environ)
        identifier = target.prefix + key if target.prefix else key
        if target.leased:
            lease = target.limiter.acquire(identifier, cost)
            decision = lease.decision
        else:
            decision = target.hit(identifier, cost)
        if not decision.allowed:
            return self._denied(environ, start_response, decision, identifier)

        extra = self.renderer.fields(decision, identifier)
        if target.leased:
            return _hold(self.app, environ, start_response, extra, lease, target.count)
        if not extra:
            return self.app(environ, start_response)

        def start_with_headers(
            status: str, headers: Headers, exc_info: ExcInfo | None = None
        ) -> Callable[[bytes], object]:
            return start_response(status, [*headers, *merge_fields(headers, extra)], exc_info)

        return self.app(environ, start_with_headers)

    def _denied(
        self,
        environ: Environ,
        start_response: StartResponse,
        decision: Decision,
        identifier: str,
    ) -> Iterable[bytes]:
        if self._deny is None:
            status, headers, body = self.renderer.deny(decision, identifier)
            start_response(_REASONS[status], headers)
            return [body]
        fields = self.renderer.fields(decision, identifier)
        fields.append(("Retry-After", str(retry_after_seconds(decision))))
        response = self._deny(environ, decision)

        def start_with_headers(
            status: str, headers: Headers, exc_info: ExcInfo | None = None
        ) -> Callable[[bytes], object]:
            present = {name.lower() for name, _ in headers}
            added = [f for f in fields if f[0].lower() not in present]
            return start_response(status, [*headers, *added], exc_info)

        return response(environ, start_with_headers)


class _Holding:
    """A response iterable that holds a lease until the server closes it (PEP 3333: the
    server calls ``close`` once the response is sent, or the client went away)."""

    __slots__ = ("_close", "_iterable")

    def __init__(self, iterable: Iterable[bytes], close: Callable[[], None]) -> None:
        self._iterable = iterable
        self._close = close

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._iterable)

    def close(self) -> None:
        try:
            close = getattr(self._iterable, "close", None)
            if close is not None:
                close()
        finally:
            self._close()


def _hold(app: WSGIApp, environ: Environ, start_response: StartResponse, extra: Headers,
          lease: Lease, count: Count | None) -> Iterable[bytes]:  # fmt: skip
    """Run ``app`` holding ``lease`` until the server closes the response iterable (or the app
    raises, counted as ``500``); then ``count`` of the status, and the release."""
    status: list[int] = []

    def start_holding(
        line: str, headers: Headers, exc_info: ExcInfo | None = None
    ) -> Callable[[bytes], object]:
        status[:] = [int(line.split(None, 1)[0])]
        return start_response(line, [*headers, *merge_fields(headers, extra)], exc_info)

    try:
        iterable = app(environ, start_holding)
    except BaseException:
        finish(lease, count, 500)
        raise
    return _Holding(iterable, lambda: finish(lease, count, status[0] if status else None))
