"""Pure ASGI rate-limit middleware for Starlette, FastAPI and any ASGI application.

::

    import ratelimit as rl
    from ratelimit import keys
    from ratelimit.asgi import RateLimitMiddleware, Rule

    app.add_middleware(
        RateLimitMiddleware,
        limiter=rl.AsyncLimiter("100/minute"),           # every request, per client
        key=keys.client_ip(),
        rules=[Rule("/login", "5/minute", methods=["POST"]),
               Rule("/items/{item_id}", "20/minute")],   # /items/1 and /items/2 share it
        exempt=["/health", "/static/*"],
        headers="ietf",
    )

How a request is limited: ``lifespan`` and unknown scope types pass straight through. An
``http`` or ``websocket`` scope that is exempt passes through. Otherwise the first
:class:`Rule` whose path and method match picks the limiter, else ``limiter`` (when given)
does; requests that nothing picks are not limited. The key function names the client; the
limiter is hit once. An allowed request goes on with the rate-limit headers added to its
``http.response.start`` (or to the ``websocket.accept``); the body stream is never touched.
A single-valued header (``RateLimit-Limit``, ``Retry-After``, ...) the app's response already
carries, such as a FastAPI route limit's denial, is not added again: the route's value stands.
A limiter with a ``Concurrency`` policy, or a rule with ``count=``, takes a lease instead of
a hit: held from before the app runs until the response's last body message is sent, the app
raises, or the client disconnects (a WebSocket holds it until it closes); then, when the
rule's ``count`` returns False for the status, the request's cost is given back.
A denied request is answered here: ``429`` with ``Retry-After``, the headers and a
problem+json body (or the ``deny`` callable's response). A denied WebSocket handshake is
answered ``429`` with headers through the ``websocket.http.response`` extension where the
server offers it, else closed before it is accepted (the server then answers ``403``).

Why rules match their own path templates: Starlette routes a request only *after* the
middleware stack, so ``scope["route"]`` is not known here. Re-running the router per request
would cost a scan of every route and depend on router internals. A rule's path is itself a
template (``/items/{item_id}``, ``{rest:path}``, ``/static/*``, ``*``), matched against the
request path, and its limit is counted under that template, so every concrete path of it
shares one limit. For a limit on exactly one route as the router sees it, use the FastAPI
dependency :class:`ratelimit.fastapi.RateLimit`, which runs after routing.

Failure policy: the limiter never raises for a store failure unless its ``on_error`` is
``"raise"``; a store-error decision that allowed passes without rate-limit headers, and one
that denied (``on_error="deny"``) is answered ``503`` with ``Retry-After``, never ``429``.
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

    ``limiter``: the limit of every request not matched by a rule (an :class:`AsyncLimiter`,
    a :class:`Limiter` on a MemoryStore, or text such as ``"100/minute"``); None limits only
    what ``rules`` match. ``key``: the client's key function, sync or async, called with a
    Starlette ``Request`` (or ``WebSocket``); built-in keys read the scope directly; default
    ``keys.client_ip()``. ``rules``: :class:`Rule` list, first match wins. ``exempt``: path
    patterns (as :class:`Rule` paths) or a callable of the request (sync or async) returning
    True for requests never limited. ``headers``: ``"ietf"`` (default), ``"draft-6"``,
    ``"legacy"``, a tuple, or None. ``cost``: units per request (or a callable of the request).
    ``deny``: a callable of ``(request, decision)`` (sync or async) returning the ASGI app that
    answers a denied HTTP request (for example a Starlette ``Response``); ``Retry-After`` and
    the rate-limit headers are added to it unless it sets them. ``partition_key_secret``:
    bytes; adds a hashed ``pk`` to the ``RateLimit`` field (see :mod:`ratelimit.headers`).

    With neither ``limiter`` nor ``rules`` it limits nothing and only writes the headers that
    FastAPI :class:`ratelimit.fastapi.RateLimit` dependencies decided, onto any response.

    Awaits the limiter once per limited request (no I/O for a MemoryStore). Raises
    ConfigurationError at construction for bad options. Per request it raises only what the
    app, a custom key/cost/exempt/deny callable, or a limiter with ``on_error="raise"``
    raises (and ConfigurationError when a key function returns something other than a str).
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
