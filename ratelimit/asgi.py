"""Pure ASGI rate-limit middleware for Starlette, FastAPI and any ASGI application:
:class:`RateLimitMiddleware` and its :class:`Rule`.

``lifespan`` and unknown scope types pass straight through; ``http`` requests and
``websocket`` handshakes are limited, the body stream is never touched. A rule's path is a
template matched against the request path by the middleware itself, since Starlette routes a
request only after the middleware stack; for a limit on one route as the router sees it, use
:class:`ratelimit.fastapi.RateLimit`. See the ASGI and Starlette page of the docs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import TYPE_CHECKING, Any, TypeAlias

from ratelimit._web import (
    HEADERS_SCOPE_KEY,
    AnyLimiter,
    Cost,
    Exempt,
    Hit,
    Rule,
    Selector,
    aacquire,
    afinish,
    akey_and_cost,
    async_hit,
    call,
    merge_fields,
    route_path,
)
from ratelimit.errors import ConfigurationError
from ratelimit.headers import HeadersOption, Renderer, retry_after_seconds
from ratelimit.keys import KeyFunction, ScopeView, client_ip

if TYPE_CHECKING:
    from ratelimit._web import Count
    from ratelimit.decision import Decision
    from ratelimit.lease import AsyncLease, Lease

__all__ = ["HEADERS_SCOPE_KEY", "RateLimitMiddleware", "Rule"]

Scope: TypeAlias = MutableMapping[str, Any]
Message: TypeAlias = MutableMapping[str, Any]
Receive: TypeAlias = Callable[[], Awaitable[Message]]
Send: TypeAlias = Callable[[Message], Awaitable[None]]
ASGIApp: TypeAlias = Callable[[Scope, Receive, Send], Awaitable[None]]

#: ``deny=``: a callable of (request, decision), sync or async, returning an ASGI app (such as
#: a Starlette ``Response``) that answers the denied request.
Deny: TypeAlias = Callable[[Any, "Decision"], Any]


# --- the middleware -----------------------------------------------------------------------------


class RateLimitMiddleware:
    """Limits ``http`` requests and ``websocket`` handshakes of an ASGI app; pure ASGI.

    The first :class:`Rule` whose path and method match picks the limiter, else ``limiter``
    does; requests that nothing picks, and exempt ones, pass through. An allowed request goes
    on with the rate-limit headers added to its ``http.response.start`` (or its
    ``websocket.accept``); a denied one is answered here: ``429`` with ``Retry-After``, the
    headers and a problem+json body, or ``deny``'s response (``503`` when a store failure
    denied it). A limiter with a :class:`~ratelimit.Concurrency` policy, or a rule with
    ``count=``, takes a lease held until the response's last body message is sent. With
    neither ``limiter`` nor ``rules`` it limits nothing and only writes the headers that
    FastAPI :class:`ratelimit.fastapi.RateLimit` dependencies decided. See the ASGI and
    Starlette page of the docs.

    Awaits the limiter once per limited request (no I/O on a MemoryStore).

    :param app: the ASGI app to wrap.
    :param limiter: the limit of every request no rule matches: an
        :class:`~ratelimit.AsyncLimiter`, a :class:`~ratelimit.Limiter` on a MemoryStore, or
        text such as ``"100/minute"`` (an AsyncLimiter on a new MemoryStore); None limits only
        what ``rules`` match.
    :param key: the client's key function, sync or async, called with a Starlette ``Request``
        (or ``WebSocket``); built-in keys read the scope directly. Default
        :func:`ratelimit.keys.client_ip`.
    :param rules: :class:`Rule` objects, first match wins.
    :param exempt: path patterns (as :class:`Rule` paths), or a callable of the request (sync
        or async) returning True for requests never limited.
    :param headers: ``"ietf"`` (default), ``"draft-6"``, ``"legacy"``, a tuple of them, or None
        (see :mod:`ratelimit.headers`).
    :param cost: units per request, an int or a callable of the request (sync or async).
    :param deny: a callable of ``(request, decision)``, sync or async, returning the ASGI app
        (such as a Starlette ``Response``) that answers a denied HTTP request; ``Retry-After``
        and the rate-limit headers are added unless it sets them.
    :param partition_key_secret: bytes; adds a hashed ``pk`` to the ``RateLimit`` field.
    :raises ConfigurationError: at construction, for a bad option (a sync limiter on a remote
        store included); per request, when a key function returns something other than a str.
        Otherwise a request raises only what the app, a custom key, cost, exempt or deny
        callable, or a limiter with ``on_error="raise"`` raises.
    """

    def __init__(
        self,
        app: ASGIApp,
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
            async_hit, limiter, key, rules, exempt, cost, client_ip
        )
        default = self._selector.default
        self.limiter = default.limiter if default else None
        self.rules = self._selector.rules
        if deny is not None and not callable(deny):
            raise ConfigurationError(f"deny must be a callable, got {deny!r}")
        self._deny = deny

    def __repr__(self) -> str:
        return (
            f"RateLimitMiddleware(limiter={self.limiter!r}, rules={list(self.rules)!r}, "
            f"headers={self.renderer.modes!r})"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            await self.app(scope, receive, send)
            return

        extra: list[tuple[bytes, bytes]] = []
        selector = self._selector
        target = None
        if selector.needs_path:
            # upper case: Django's ASGI handler routes "post" to a POST view
            target = selector.select(route_path(scope), scope.get("method", "GET").upper())
        else:
            target = selector.default
        connection: list[Any] = []  # the framework's request, built once if ever needed

        def request() -> Any:
            if not connection:
                connection.append(_connection(scope, receive, send))
            return connection[0]

        exempt_call = selector.exempt_call
        if target is not None and exempt_call is not None and await call(exempt_call, request()):
            target = None
        if target is not None:
            key, cost = await akey_and_cost(target.key, target.cost, ScopeView(scope), request)
            identifier = target.prefix + key if target.prefix else key
            if target.leased:
                lease = await aacquire(target.limiter, identifier, cost)
                decision = lease.decision
            else:
                decision = await target.hit(identifier, cost)
            if not decision.allowed:
                if kind == "http":
                    await self._deny_http(scope, receive, send, decision, identifier)
                else:
                    await self._deny_websocket(scope, send, decision, identifier)
                return
            extra = self.renderer.raw_fields(decision, identifier)
            if target.leased:
                scope[HEADERS_SCOPE_KEY] = extra
                await _hold(self.app, scope, receive, send, extra, lease, target.count)
                return

        scope[HEADERS_SCOPE_KEY] = extra
        start = "http.response.start" if kind == "http" else "websocket.accept"

        async def send_with_headers(message: Message) -> None:
            if message["type"] == start and extra:
                message = dict(message)
                headers = list(message.get("headers", ()))
                message["headers"] = headers + merge_fields(headers, extra)
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _deny_headers(
        self, decision: Decision, identifier: str
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        status, fields, body = self.renderer.deny(decision, identifier)
        raw = [(n.lower().encode("latin-1"), v.encode("latin-1")) for n, v in fields]
        return status, raw, body

    async def _deny_http(
        self, scope: Scope, receive: Receive, send: Send, decision: Decision, identifier: str
    ) -> None:
        if self._deny is None:
            status, headers, body = self._deny_headers(decision, identifier)
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        response = await call(self._deny, _connection(scope, receive, send), decision)
        fields = self.renderer.raw_fields(decision, identifier)
        fields.append((b"retry-after", str(retry_after_seconds(decision)).encode("ascii")))

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = dict(message)
                headers = list(message.get("headers", ()))
                present = {name.lower() for name, _ in headers}
                message["headers"] = headers + [f for f in fields if f[0] not in present]
            await send(message)

        await response(scope, receive, send_with_headers)

    async def _deny_websocket(
        self, scope: Scope, send: Send, decision: Decision, identifier: str
    ) -> None:
        status, headers, body = self._deny_headers(decision, identifier)
        if "websocket.http.response" in (scope.get("extensions") or {}):
            start = {"type": "websocket.http.response.start", "status": status, "headers": headers}
            await send(start)
            await send({"type": "websocket.http.response.body", "body": body})
        else:
            seconds = retry_after_seconds(decision)
            reason = f"rate limit exceeded; retry in {seconds} s"
            await send({"type": "websocket.close", "code": 1013, "reason": reason})


async def _hold(app: ASGIApp, scope: Scope, receive: Receive, send: Send,
                extra: list[tuple[bytes, bytes]], lease: Lease | AsyncLease,
                count: Count | None) -> None:  # fmt: skip
    """Run ``app`` holding ``lease``: it is finished (``count`` of the status, then released)
    once, at the first of: the response's last body message sent, the client's disconnect,
    the app raising or returning (a WebSocket: until it closes). A streaming response holds
    it while it streams. An app that raised before it started a response counts as ``500``."""
    start = "http.response.start" if scope["type"] == "http" else "websocket.accept"
    status: int | None = None
    finished = False

    async def finish() -> None:
        nonlocal finished
        if not finished:
            finished = True
            await afinish(lease, count, status)

    async def send_holding(message: Message) -> None:
        nonlocal status
        kind = message["type"]
        if kind == start:
            if extra:
                message = dict(message)
                headers = list(message.get("headers", ()))
                message["headers"] = headers + merge_fields(headers, extra)
            if kind == "http.response.start":
                status = message["status"]
        await send(message)
        if kind == "http.response.body" and not message.get("more_body", False):
            await finish()

    async def receive_holding() -> Message:
        message = await receive()
        if message["type"] in ("http.disconnect", "websocket.disconnect"):
            await finish()
        return message

    try:
        await app(scope, receive_holding, send_holding)
    except BaseException:
        if status is None and scope["type"] == "http":
            status = 500
        raise
    finally:
        await finish()


def _connection(scope: Scope, receive: Receive, send: Send) -> Any:
    """The framework's request for custom callables: a Starlette ``Request`` or ``WebSocket``
    (the scope itself when Starlette is not installed)."""
    try:
        if scope["type"] == "websocket":
            from starlette.websockets import WebSocket

            return WebSocket(scope, receive, send)
        from starlette.requests import Request

        return Request(scope, receive, send)
    except ImportError:  # pragma: no cover - Starlette is in the web extra
        return scope
