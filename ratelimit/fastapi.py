"""A FastAPI dependency that limits one route, or every route of a router: :class:`RateLimit`,
and :class:`RateLimited`, the exception of its denials.

The dependency runs after routing, so it counts each route under its template
(``"GET /items/:item_id"``, under the mount point of a mounted sub-application). See the
FastAPI page of the docs.
"""

# No ``from __future__ import annotations`` here: FastAPI reads the annotations of
# ``RateLimit.__call__`` at runtime to inject the Request and the Response.
from collections.abc import AsyncIterator, Callable, Iterable, MutableMapping
from typing import Any

from fastapi import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from ratelimit._web import (
    HEADERS_SCOPE_KEY,
    AnyLimiter,
    Cost,
    aacquire,
    afinish,
    akey_and_cost,
    async_hit,
    check_cost,
    matcher,
    merge_fields,
    route_path,
    template_name,
)
from ratelimit.cache import remember
from ratelimit.decision import Decision
from ratelimit.errors import ConfigurationError, RateLimitExceeded
from ratelimit.headers import PROBLEM_JSON, HeadersOption, Renderer
from ratelimit.keys import KeyFunc, KeyFunction, ScopeView, client_ip

__all__ = ["RateLimit", "RateLimited"]


def _route_prefixes(
    scope: MutableMapping[str, Any], route: object
) -> list[tuple[Callable[[str], bool], str]]:
    """Each mount template under which the app's router reaches ``route`` (``""`` at the
    top), as ``(matches the concrete mount path, counting prefix)``; one entry, without a
    mount, when the router is not known or does not hold the route."""
    path = str(getattr(route, "path_format", None) or getattr(route, "path", ""))
    methods = getattr(route, "methods", None)
    head = ",".join(sorted(methods)) + " " if methods else ""
    mounts = _mounts(getattr(scope.get("router"), "routes", ()), route, "", 0) or [""]
    return [
        (
            (lambda mounted: mounted in ("", "/")) if not mount else matcher(mount),
            head + template_name(mount + path) + "|",
        )
        for mount in mounts
    ]


def _mounts(routes: Iterable[object], route: object, mount: str, depth: int) -> list[str]:
    """The mount templates (``"/a/{tenant}"``) under which ``routes`` reach ``route``."""
    found: list[str] = []
    for candidate in routes:
        if candidate is route:
            found.append(mount)
            continue
        inner = getattr(candidate, "routes", None)
        if inner and depth < 16:  # a Mount (its path) or a Host (no path)
            prefix = mount + str(getattr(candidate, "path", "") or "").rstrip("/")
            found += _mounts(inner, route, prefix, depth + 1)
    return found


class RateLimited(RateLimitExceeded, HTTPException):
    """The request was denied: an ``HTTPException`` (and a
    :class:`~ratelimit.RateLimitExceeded`) that FastAPI answers with ``429`` (``503`` when a
    store failure denied it), ``Retry-After``, the rate-limit headers and a problem+json body.
    An exception handler registered for it (or for ``RateLimitExceeded``) replaces that
    answer. Raised by :class:`RateLimit`, never by callers.

    :param decision: the denying :class:`~ratelimit.Decision`, kept as ``decision``.
    :param status_code: ``429``, or ``503`` for a store failure.
    :param detail: the problem's ``detail`` text.
    :param headers: ``Retry-After``, the rate-limit headers and the content type.
    """

    def __init__(
        self, decision: Decision, status_code: int, detail: str, headers: dict[str, str]
    ) -> None:
        HTTPException.__init__(self, status_code=status_code, detail=detail, headers=headers)
        Exception.__init__(self, detail)
        self.decision = decision

    def __str__(self) -> str:
        return f"{self.status_code}: {self.detail}"


class RateLimit:
    """A FastAPI dependency limiting the routes it is attached to
    (``dependencies=[Depends(RateLimit("5/minute"))]``).

    The dependency's value is the :class:`~ratelimit.Decision` (``decision =
    Depends(limit)``). One ``RateLimit`` on several routes counts each route separately (its
    methods and template), unless given a ``name``. On a limiter with a
    :class:`~ratelimit.Concurrency` policy it is a dependency with ``yield``: the request's slot
    is held while the route runs and released after it, however it ends. Headers reach every
    response when the app also runs :class:`ratelimit.asgi.RateLimitMiddleware`; without it
    they go through FastAPI's injected ``Response``, which FastAPI does not copy onto a
    ``Response`` object the endpoint returns. Awaits the limiter once per request.

    :param limit: text such as ``"5/minute"`` (an :class:`~ratelimit.AsyncLimiter` on its own
        MemoryStore), an AsyncLimiter (sharing its store, such as Redis), or a
        :class:`~ratelimit.Limiter` on a MemoryStore.
    :param key: the client's key function, sync or async, called with the ``Request``; default
        :func:`ratelimit.keys.client_ip`.
    :param cost: units per request, an int or a callable of the request (sync or async).
    :param headers: ``"ietf"`` (default), ``"draft-6"``, ``"legacy"``, a tuple of them, or None.
    :param name: count every route using this dependency under this one name.
    :param partition_key_secret: bytes; adds a hashed ``pk`` to the ``RateLimit`` field.
    :raises ConfigurationError: at construction, for a bad option.
    :raises RateLimited: per request, when it is denied. Otherwise a request raises only what a
        custom key or cost callable, or a limiter with ``on_error="raise"``, raises.
    """

    def __init__(
        self,
        limit: AnyLimiter,
        *,
        key: KeyFunction | None = None,
        cost: Cost = 1,
        headers: HeadersOption = "ietf",
        name: str | None = None,
        partition_key_secret: bytes | None = None,
    ) -> None:
        self.limiter, self._hit = async_hit(limit)
        if key is None:
            key = client_ip()
        elif not callable(key):
            raise ConfigurationError(f"key must be a callable of the request, got {key!r}")
        self.key = key
        self._builtin = key if isinstance(key, KeyFunc) else None
        check_cost(cost)
        self.cost = cost
        self.renderer = Renderer(headers, partition_key_secret=partition_key_secret)
        if name is not None and (not isinstance(name, str) or not name):
            raise ConfigurationError(f"name must be non-empty text, got {name!r}")
        self._prefix = None if name is None else name + "|"
        self._route_prefixes: dict[int, tuple[object, list[tuple[Callable[[str], bool], str]]]] = {}
        if self.limiter.needs_acquire:  # a slot held for the request: a dependency with yield
            self.__class__ = _LeasedRateLimit

    def __repr__(self) -> str:
        return f"RateLimit({self.limiter!r}, key={self.key!r})"

    def _route_prefix(self, scope: MutableMapping[str, Any]) -> str:
        """The text this route's limit is counted under, with its separator: its methods and
        its template, under the template of the mount point of a mounted sub-application, so
        same-path routes of apps mounted at ``/a`` and ``/b`` count apart while every tenant
        of ``Mount("/{tenant}", ...)`` shares one limit."""
        route = scope.get("route")
        if route is None:  # not routed (should not happen in FastAPI): the concrete path
            return template_name(route_path(scope)) + "|"
        # Routes are not hashable; the cache holds the route itself so its id stays its own.
        cached = self._route_prefixes.get(id(route))
        if cached is None or cached[0] is not route:
            cached = (route, _route_prefixes(scope, route))
            remember(self._route_prefixes, id(route), cached, 10_000)
        candidates = cached[1]
        if len(candidates) == 1:
            return candidates[0][1]
        # one route reachable under several mounts: the one this request came through
        root: str = scope.get("root_path", "")
        app_root: str = scope.get("app_root_path", "")
        mounted = root[len(app_root) :] if root.startswith(app_root) else root
        for matches, prefix in candidates:
            if matches(mounted):
                return prefix
        return candidates[0][1]

    async def __call__(self, request: Request, response: Response) -> Decision:
        """Hit the limiter for this request; FastAPI calls it.

        :param request: the request, injected by FastAPI.
        :param response: the response FastAPI builds from returned data, injected.
        :returns: the :class:`~ratelimit.Decision`.
        :raises RateLimited: when the request is denied.
        """
        identifier, cost = await self._identify(request)
        decision = await self._hit(identifier, cost)
        self._allowed(request, response, decision, identifier)
        return decision

    async def _identify(self, request: Request) -> tuple[str, int]:
        scope = request.scope
        key, cost = await akey_and_cost(self.key, self.cost, ScopeView(scope), lambda: request)
        return (self._prefix or self._route_prefix(scope)) + key, cost

    def _allowed(self, request: Request, response: Response, decision: Decision,
                 identifier: str) -> None:  # fmt: skip
        """Raises RateLimited for a denial; else records the headers for the response."""
        scope = request.scope
        if not decision.allowed:
            raise self._denial(decision, identifier)
        fields = self.renderer.raw_fields(decision, identifier)
        if fields:
            shared: list[tuple[bytes, bytes]] | None = scope.get(HEADERS_SCOPE_KEY)
            if shared is not None:
                # this route's single-valued fields replace the middleware's
                shared[:] = [*merge_fields(fields, shared), *fields]
            else:  # FastAPI copies these onto the response it builds from returned data
                response.headers.raw.extend(fields)

    def _denial(self, decision: Decision, identifier: str) -> RateLimited:
        status, problem = self.renderer.problem(decision)
        headers = dict(self.renderer.fields(decision, identifier))
        headers["Retry-After"] = str(problem["retry_after"])
        headers["Content-Type"] = PROBLEM_JSON
        return RateLimited(decision, status, str(problem["detail"]), headers)


class _LeasedRateLimit(RateLimit):
    """:class:`RateLimit` on a limiter with a ``Concurrency`` policy: a dependency with
    ``yield`` that holds the request's slot while the route runs and releases it when
    FastAPI closes the dependency, however the route ended."""

    async def __call__(  # type: ignore[override]
        self, request: Request, response: Response
    ) -> AsyncIterator[Decision]:
        """Acquire a slot for this request; yields the Decision or raises RateLimited."""
        identifier, cost = await self._identify(request)
        lease = await aacquire(self.limiter, identifier, cost)
        self._allowed(request, response, lease.decision, identifier)
        try:
            yield lease.decision
        finally:
            await afinish(lease, None, None)
