"""``limit`` (a view decorator) and ``RateLimitMiddleware`` (the app-wide default), sync and
async, and the responses they write. See :mod:`ratelimit.django` for the settings."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final, TypeVar, cast

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse

from ratelimit._web import (
    Cost,
    Count,
    aacquire,
    afinish,
    check_cost,
    check_count,
    check_key_function,
    finish,
    uses_lease,
)
from ratelimit.django._conf import State, policies_of, state
from ratelimit.errors import ConfigurationError, RateLimitExceeded
from ratelimit.headers import retry_after_seconds
from ratelimit.keys import KeyFunction
from ratelimit.limiter import AsyncLimiter, Limiter

if TYPE_CHECKING:
    from ratelimit.decision import Decision
    from ratelimit.lease import AsyncLease, Lease
    from ratelimit.policies import Policy

__all__ = ["RateLimitMiddleware", "RateLimited", "limit"]

V = TypeVar("V")
Fields = list[tuple[str, str]]

# Header fields that are Structured Field Lists: a second limit's items are appended; any
# other rate-limit field keeps the first (innermost) limit's value.
_LISTS: Final = frozenset(("ratelimit-policy", "ratelimit"))


class RateLimited(RateLimitExceeded):
    """A denied request, as ``RATELIMIT['VIEW']`` receives it (``view(request, exception)``);
    never raised out of a view.

    :param decision: the denying :class:`~ratelimit.Decision`, kept as ``decision``.
    :param response: the 429 (or 503) this library would send, kept as ``response``.
    """

    def __init__(self, decision: Decision, response: HttpResponse) -> None:
        super().__init__(decision)
        self.response = response


# --- responses ----------------------------------------------------------------------------------


def add_fields(response: Any, fields: Fields) -> None:
    """Add rate-limit header fields to a Django response, merging with fields a limit
    closer to the view already set."""
    for name, value in fields:
        if name not in response:
            response[name] = value
        elif name.lower() in _LISTS:
            response[name] = f"{response[name]}, {value}"


def _default_deny(st: State, decision: Decision, identifier: str) -> HttpResponse:
    status, headers, body = st.renderer.deny(decision, identifier)
    response = HttpResponse(body, status=status)
    for name, value in headers:
        response[name] = value
    return response


def _custom_fields(st: State, decision: Decision, identifier: str) -> Fields:
    fields = st.renderer.fields(decision, identifier)
    fields.append(("Retry-After", str(retry_after_seconds(decision))))
    return fields


def deny_sync(st: State, request: Any, decision: Decision, identifier: str) -> Any:
    """The answer to a denied request: ours, or ``RATELIMIT['VIEW']``'s (429 only; a store
    failure under ``ON_ERROR='deny'`` is always our 503)."""
    response = _default_deny(st, decision, identifier)
    if st.view is None or response.status_code != 429:
        return response
    custom = st.view(request, RateLimited(decision, response))
    if inspect.isawaitable(custom):
        raise ConfigurationError(
            f"RATELIMIT['VIEW'] {st.view!r} is async; a sync view needs a sync one"
        )
    add_fields(custom, _custom_fields(st, decision, identifier))
    return custom


async def deny_async(st: State, request: Any, decision: Decision, identifier: str) -> Any:
    """As :func:`deny_sync`; an async ``RATELIMIT['VIEW']`` is awaited."""
    response = _default_deny(st, decision, identifier)
    if st.view is None or response.status_code != 429:
        return response
    custom = st.view(request, RateLimited(decision, response))
    if inspect.isawaitable(custom):
        custom = await custom
    add_fields(custom, _custom_fields(st, decision, identifier))
    return custom


# --- the decorator ------------------------------------------------------------------------------


class _Spec:
    """What ``@limit`` recorded: the limits (policies, or the user's limiter), key, cost, name."""

    __slots__ = ("async_limiter", "cost", "count", "key", "name", "policies", "sync_limiter")

    def __init__(self, limits: object, key: KeyFunction | None, cost: Cost,
                 name: str | None, count: Count | None = None) -> None:  # fmt: skip
        self.sync_limiter: Limiter | None = None
        self.async_limiter: AsyncLimiter | None = None
        self.policies: tuple[Policy, ...] = ()
        if isinstance(limits, Limiter):
            self.sync_limiter = limits
        elif isinstance(limits, AsyncLimiter):
            self.async_limiter = limits
        else:
            self.policies = policies_of(limits, "limit()")
            Limiter(list(self.policies))  # repeated policies and the like: named here
        if key is not None:
            check_key_function(key)
        check_cost(cost)
        check_count(count)
        self.count = count
        if name is not None and (not isinstance(name, str) or not name):
            raise ConfigurationError(f"name must be non-empty text, got {name!r}")
        self.key = key
        self.cost = cost
        self.name = name

    def check_mode(self, is_async: bool, what: str) -> None:
        if is_async and self.sync_limiter is not None:
            raise ConfigurationError(
                f"{what} is async: give it an AsyncLimiter or text, not {self.sync_limiter!r} "
                "(a sync limiter would block the event loop)"
            )
        if not is_async and self.async_limiter is not None:
            raise ConfigurationError(
                f"{what} is sync: give it a Limiter or text, not {self.async_limiter!r}"
            )


def _request_of(args: tuple[Any, ...]) -> Any:
    """The request among a view's positional arguments: the first for a function view, the
    second for a method (``self`` first). DRF's ``Request`` counts as a request."""
    for arg in args[:2]:
        if isinstance(arg, HttpRequest) or isinstance(getattr(arg, "_request", None), HttpRequest):
            return arg
    raise TypeError(
        f"@limit found no request among the view's arguments {args[:2]!r}: decorate a view "
        "function, a class-based view, or a view method"
    )


def _check_sync(spec: _Spec, name: str, request: Any) -> tuple[Any, Fields, Lease | None]:
    """Charge ``request`` to the limit: (the deny response or None, header fields, the lease
    to finish after the view when the limit takes one)."""
    st = state()
    if not st.enabled:
        return None, [], None
    key = st.sync_key(spec.key, request)
    cost = spec.cost if isinstance(spec.cost, int) else spec.cost(request)
    identifier = f"{name}|{key}"
    limiter = spec.sync_limiter or st.limiter(spec.policies)
    lease = limiter.acquire(identifier, cost) if uses_lease(limiter, spec.count) else None
    decision = limiter.hit(identifier, cost) if lease is None else lease.decision
    if not decision.allowed:
        return deny_sync(st, request, decision, identifier), [], None
    return None, st.renderer.fields(decision, identifier), lease


async def _check_async(
    spec: _Spec, name: str, request: Any
) -> tuple[Any, Fields, Lease | AsyncLease | None]:
    """As :func:`_check_sync`, awaiting the AsyncLimiter (and an async key or cost)."""
    st = state()
    if not st.enabled:
        return None, [], None
    key = await st.async_key(spec.key, request)
    cost: Any = spec.cost
    if not isinstance(cost, int):
        cost = cost(request)
        if inspect.isawaitable(cost):
            cost = await cost
    identifier = f"{name}|{key}"
    limiter = spec.async_limiter or st.async_limiter(spec.policies)
    leased = uses_lease(limiter, spec.count)
    lease = await aacquire(limiter, identifier, cost) if leased else None
    decision = await limiter.hit(identifier, cost) if lease is None else lease.decision
    if not decision.allowed:
        return await deny_async(st, request, decision, identifier), [], None
    return None, st.renderer.fields(decision, identifier), lease


def _wrap(spec: _Spec, name: str, function: Callable[..., Any], is_async: bool) -> Any:
    """``function`` (a view, a method or ``dispatch``) checked against ``spec`` first. A
    limit that takes a lease (a Concurrency policy, or ``count=``) holds it for the call and
    finishes it with the response's status (``500`` when the view raised)."""
    if is_async:

        @functools.wraps(function)
        async def async_view(*args: Any, **kwargs: Any) -> Any:
            request = _request_of(args)
            denied, fields, lease = await _check_async(spec, name, request)
            if denied is not None:
                return denied
            status: int | None = 500
            try:
                response = function(*args, **kwargs)
                if inspect.isawaitable(response):  # dispatch() of an async class returns one
                    response = await response
                status = getattr(response, "status_code", None)
            finally:
                if lease is not None:
                    await afinish(lease, spec.count, status)
            add_fields(response, fields)
            return response

        return async_view

    @functools.wraps(function)
    def view(*args: Any, **kwargs: Any) -> Any:
        request = _request_of(args)
        denied, fields, lease = _check_sync(spec, name, request)
        if denied is not None:
            return denied
        if lease is None:
            response = function(*args, **kwargs)
        else:
            status: int | None = 500
            try:
                response = function(*args, **kwargs)
                status = getattr(response, "status_code", None)
            finally:
                finish(lease, spec.count, status)
        add_fields(response, fields)
        return response

    return view


def limit(
    limits: str | Policy | list[str | Policy] | Limiter | AsyncLimiter,
    *,
    key: KeyFunction | None = None,
    cost: Cost = 1,
    name: str | None = None,
    count: Count | None = None,
) -> Callable[[V], V]:
    """Decorate a Django view with a rate limit: a function view (sync or async), a
    class-based view (the class: every method it serves shares one count), or one method of a
    class.

    A denied request gets the 429 (``Retry-After``, rate-limit headers, problem+json), or
    ``RATELIMIT['VIEW']``'s response; an allowed one gets the headers on the view's response.
    Blocks (sync views) or awaits (async views) the store once per request.

    :param limits: text such as ``"5/minute; 100/day"`` or policies, counted in
        ``RATELIMIT['STORE']``; or a :class:`~ratelimit.Limiter` (sync views) /
        :class:`~ratelimit.AsyncLimiter` (async views, awaited on the event loop).
    :param key: a callable of the request returning a str (an async view may use an async
        one); default ``RATELIMIT['KEY']``, else the client IP with
        ``RATELIMIT['TRUSTED_PROXIES']``.
    :param cost: units per request, an int or a callable of the request.
    :param name: count under this name; default the view's dotted name, so each decorated
        view counts on its own and views given one name share a count.
    :param count: a callable of the response status; False gives the request's cost back
        (``count=lambda status: status >= 400`` limits failed logins only). A limiter with a
        :class:`~ratelimit.Concurrency` policy holds its slot for the view's call.
    :returns: the decorator.
    :raises ConfigurationError: when decorating, for a bad limit, key or cost, or a limiter
        of the wrong kind; per request, for bad settings and when a key returns no str.
    """
    spec = _Spec(limits, key, cost, name, count)

    def decorate(view: V) -> V:
        if isinstance(view, type):
            return cast(V, _decorate_class(spec, view))
        if not callable(view):
            raise ConfigurationError(f"@limit decorates views, not {view!r}")
        is_async = iscoroutinefunction(view)
        label = f"{getattr(view, '__module__', '')}.{getattr(view, '__qualname__', view)}"
        spec.check_mode(is_async, label)
        wrapped = _wrap(spec, spec.name or label, view, is_async)
        return cast(V, wrapped)

    return decorate


def _decorate_class(spec: _Spec, cls: type) -> type:
    """A class-based view: its ``dispatch`` runs the check (one count for every method)."""
    dispatch = getattr(cls, "dispatch", None)
    if dispatch is None:
        raise ConfigurationError(f"@limit on a class needs a Django View, got {cls!r}")
    is_async = bool(getattr(cls, "view_is_async", False))
    label = f"{cls.__module__}.{cls.__qualname__}"
    spec.check_mode(is_async, label)
    cls.dispatch = _wrap(spec, spec.name or label, dispatch, is_async)  # type: ignore[attr-defined]
    return cls


# --- the middleware -----------------------------------------------------------------------------


class RateLimitMiddleware:
    """Django middleware (in ``MIDDLEWARE``) applying ``RATELIMIT['DEFAULT']`` (such as
    ``"1000/hour"``) to every request, per client (``RATELIMIT['KEY']``, else the client IP),
    except paths in ``RATELIMIT['EXEMPT']``; without ``DEFAULT`` it passes every request
    through.

    Sync and async capable: under ASGI with async middleware around it the check awaits an
    AsyncLimiter on the event loop; under WSGI it blocks once per request.

    :param get_response: the next handler, as Django gives it.
    :raises ConfigurationError: per request, while the settings are bad or a custom key
        returns no str.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __repr__(self) -> str:
        return f"RateLimitMiddleware(async={self.is_async})"

    def __call__(self, request: Any) -> Any:
        if self.is_async:
            return self.__acall__(request)
        st = state()
        if not st.enabled or st.default is None or _exempt(st, request):
            return self.get_response(request)
        key = st.sync_key(None, request)
        decision = st.limiter(st.default).hit(key)
        if not decision.allowed:
            return deny_sync(st, request, decision, key)
        response = self.get_response(request)
        add_fields(response, st.renderer.fields(decision, key))
        return response

    async def __acall__(self, request: Any) -> Any:
        get_response = cast("Callable[[Any], Awaitable[Any]]", self.get_response)
        st = state()
        if not st.enabled or st.default is None or _exempt(st, request):
            return await get_response(request)
        key = await st.async_key(None, request)
        decision = await st.async_limiter(st.default).hit(key)
        if not decision.allowed:
            return await deny_async(st, request, decision, key)
        response = await get_response(request)
        add_fields(response, st.renderer.fields(decision, key))
        return response


def _exempt(st: State, request: Any) -> bool:
    if not st.exempt:
        return False
    path = request.path_info or "/"
    return any(match(path) for match in st.exempt)
