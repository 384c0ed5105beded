"""``rate_limit``: a decorator that limits calls of plain sync and async functions. See the
Functions (decorator) page of the docs.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast

from ratelimit.errors import ConfigurationError, RateLimitExceeded
from ratelimit.limiter import AsyncLimiter, Limiter, check_timeout, is_async_callable

if TYPE_CHECKING:
    from ratelimit.decision import Decision

__all__ = ["rate_limit"]

P = ParamSpec("P")
R = TypeVar("R")


def rate_limit(
    limiter: Limiter | AsyncLimiter | str,
    *,
    key: Callable[..., str] | str | None = None,
    cost: int | Callable[..., int] = 1,
    wait: bool = False,
    timeout: float | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Limit the calls of the decorated function; its signature and type are kept.

    ::

        @rl.rate_limit(limiter, key=lambda user_id, subject: f"user:{user_id}")
        def send_email(user_id: int, subject: str) -> None: ...

    Any callable can be decorated: a function, a method, a ``functools.partial``, an object
    with ``__call__`` (async when its ``__call__`` is), and a ``classmethod`` or
    ``staticmethod`` object (the decorator then goes inside it; a classmethod's key function
    receives the class first). Each call blocks on the limiter (a sync function) or awaits it
    (an async one) once before the function runs. A limiter with a
    :class:`~ratelimit.Concurrency` policy holds a slot for the call (``acquire``), released
    when it returns or raises.

    :param limiter: a :class:`~ratelimit.Limiter` for a sync function, an
        :class:`~ratelimit.AsyncLimiter` for an async one (a MemoryStore serves both), or text
        such as ``"10/minute"``, which builds the right one on a new MemoryStore.
    :param key: a callable receiving the call's own arguments (``self`` too, for a method) and
        returning the key; a str for one fixed key; None (the default) for one limit on every
        call of the function, keyed by its qualified name.
    :param cost: units per call, a non-negative int or a callable of the call's arguments.
    :param wait: sleep until the call is allowed instead of raising (:meth:`Limiter.wait`
        blocks the thread; :meth:`AsyncLimiter.wait` lets the event loop go on). Refused for
        a limiter with a Concurrency policy.
    :param timeout: with ``wait=True``, the longest wait in seconds; None: as long as it takes.
    :returns: the decorator.
    :raises ConfigurationError: when decorating, for a limiter that cannot serve the function
        (an AsyncLimiter on a sync function, a sync Limiter on an async one), something that
        is not callable, or a bad key, cost, ``wait`` (not a bool) or ``timeout`` (not a
        non-negative number, or given without ``wait``); at a call, when the key function
        returns anything but a str.
    :raises RateLimitExceeded: at a call, carrying the Decision, when it is denied, before the
        function runs (with ``wait=True``: when the wait would pass ``timeout``).
    :raises StoreError: at a call, when the store fails and the limiter's ``on_error`` is
        ``"raise"``.
    """
    if isinstance(key, str):
        fixed = key

        def key_of(*args: Any, **kwargs: Any) -> str:
            return fixed

        key_function: Callable[..., str] | None = key_of
    elif key is None or callable(key):
        key_function = key
    else:
        raise ConfigurationError(f"key must be a callable, a str or None, got {key!r}")
    if not callable(cost) and (isinstance(cost, bool) or not isinstance(cost, int) or cost < 0):
        raise ConfigurationError(f"cost must be a non-negative int or a callable, got {cost!r}")
    if not isinstance(wait, bool):
        raise ConfigurationError(f"wait must be True or False, got {wait!r}")
    check_timeout(timeout)
    if timeout is not None and not wait:
        raise ConfigurationError("timeout applies to wait=True only")
    if not isinstance(limiter, (Limiter, AsyncLimiter, str)):
        raise ConfigurationError(
            f"rate_limit needs a Limiter, an AsyncLimiter or text such as '10/minute', "
            f"got {limiter!r}"
        )

    def decorate(function: Callable[P, R]) -> Callable[P, R]:
        if isinstance(function, (classmethod, staticmethod)):
            # Above @classmethod/@staticmethod: limit the function inside, keep the wrapper.
            inner: Any = function.__func__
            return type(function)(decorate(inner))
        if not callable(function):
            raise ConfigurationError(f"rate_limit decorates a callable, not {function!r}")
        module, label = _named(function)
        name = f"{module}.{label}"
        is_async = is_async_callable(function)
        chosen = limiter
        if isinstance(chosen, str):
            chosen = AsyncLimiter(chosen) if is_async else Limiter(chosen)
        if is_async and not isinstance(chosen, AsyncLimiter):
            raise ConfigurationError(f"{label} is async: give it an AsyncLimiter, not {chosen!r}")
        if not is_async and not isinstance(chosen, Limiter):
            raise ConfigurationError(f"{label} is sync: give it a Limiter, not {chosen!r}")
        leased = chosen.needs_acquire
        if leased and wait:
            raise ConfigurationError(
                f"wait=True cannot wait for a slot of {chosen!r} (its Concurrency policy frees "
                "slots on release, not at a known time): leave wait off"
            )

        def identify(args: Any, kwargs: Any) -> tuple[str, int]:
            identifier = name if key_function is None else key_function(*args, **kwargs)
            if not isinstance(identifier, str):
                raise ConfigurationError(
                    f"the key function of {label} returned {identifier!r}; it must return a str"
                )
            units = cost(*args, **kwargs) if callable(cost) else cost
            return identifier, units

        if isinstance(chosen, AsyncLimiter):
            async_limiter = chosen
            coroutine_function = cast("Callable[P, Awaitable[Any]]", function)

            @functools.wraps(function)
            async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                identifier, units = identify(args, kwargs)
                if leased:  # the slot is held for the call, released however it ends
                    async with async_limiter.acquire(identifier, units):
                        return await coroutine_function(*args, **kwargs)
                if wait:
                    await async_limiter.wait(identifier, units, timeout)
                else:
                    _raise_if_denied(await async_limiter.hit(identifier, units))
                return await coroutine_function(*args, **kwargs)

            return cast("Callable[P, R]", async_wrapper)

        sync_limiter = chosen

        @functools.wraps(function)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            identifier, units = identify(args, kwargs)
            if leased:  # the slot is held for the call, released however it ends
                with sync_limiter.acquire(identifier, units):
                    return function(*args, **kwargs)
            if wait:
                sync_limiter.wait(identifier, units, timeout)
            else:
                _raise_if_denied(sync_limiter.hit(identifier, units))
            return function(*args, **kwargs)

        return wrapper

    return decorate


def _named(function: object) -> tuple[str, str]:
    """The module and qualified name of ``function`` for keys and messages; for a
    ``functools.partial``, those of what it calls; for a callable object, of its class."""
    while isinstance(function, functools.partial):
        function = function.func
    label = getattr(function, "__qualname__", None)
    if not isinstance(label, str):
        function = type(function)
        label = function.__qualname__
    module = getattr(function, "__module__", None)
    return (module if isinstance(module, str) else "", label)


def _raise_if_denied(decision: Decision) -> None:
    if not decision.allowed:
        raise RateLimitExceeded(decision)
