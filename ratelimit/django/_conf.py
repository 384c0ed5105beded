"""The ``RATELIMIT`` setting, read once into a :class:`State` and read again when Django's
``setting_changed`` says it changed (``override_settings`` in tests).

Pure configuration: nothing here touches the network. Stores are built on first use; a Redis
client connects on its first command.
"""

from __future__ import annotations

import asyncio
import difflib
import inspect
import ipaddress
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final

from ratelimit._logging import logger
from ratelimit._web import check_key, check_key_function, matcher
from ratelimit.cache import remember
from ratelimit.errors import ConfigurationError
from ratelimit.headers import Renderer
from ratelimit.keys import EnvironView, KeyFunc, KeyFunction, client_ip
from ratelimit.limiter import AsyncLimiter, Limiter
from ratelimit.policies import Policy, parse

if TYPE_CHECKING:
    from ratelimit.stores.base import AsyncStore, Store

__all__ = ["KNOWN", "State", "policies_of", "reset", "state"]

#: Every key the ``RATELIMIT`` dict may hold, with its default.
KNOWN: Final[Mapping[str, object]] = {
    "ENABLED": True,
    "STORE": "memory://",
    "PREFIX": "ratelimit",
    "ON_ERROR": "allow",
    "HEADERS": "ietf",
    "TRUSTED_PROXIES": (),
    "KEY": None,
    "DEFAULT": None,
    "EXEMPT": (),
    "VIEW": None,
    "PARTITION_KEY_SECRET": None,
}
_REDIS_SCHEMES: Final = ("redis://", "rediss://", "unix://")


def policies_of(limits: object, where: str) -> tuple[Policy, ...]:
    """``limits`` (text such as ``"5/minute; 100/day"``, a policy or a list of them) as
    policies. Raises ConfigurationError naming ``where`` and the value."""
    items: Iterable[object]
    if isinstance(limits, (str, Policy)):
        items = [limits]
    elif isinstance(limits, (list, tuple)):
        items = limits
    else:
        raise ConfigurationError(
            f"{where}: limits must be text such as '5/minute', a policy or a list of them, "
            f"got {limits!r}"
        )
    out: list[Policy] = []
    for item in items:
        if isinstance(item, Policy):
            out.append(item)
            continue
        try:
            out.extend(parse(item))  # type: ignore[arg-type]  # parse names a non-str itself
        except ConfigurationError as error:
            raise ConfigurationError(f"{where}: {error}") from None
    if not out:
        raise ConfigurationError(f"{where}: no limit in {limits!r}")
    return tuple(out)


def _import(value: object, name: str) -> Any:
    """A callable setting: the object itself, or imported from its dotted path."""
    if isinstance(value, str):
        from django.utils.module_loading import import_string

        try:
            value = import_string(value)
        except ImportError as error:
            raise ConfigurationError(
                f"RATELIMIT[{name!r}]: cannot import {value!r}: {error}"
            ) from None
    if not callable(value):
        raise ConfigurationError(
            f"RATELIMIT[{name!r}] must be a callable or its dotted path, got {value!r}"
        )
    return value


def unknown_keys(config: Mapping[str, object]) -> list[str]:
    """The messages naming each key of ``config`` that is not a RATELIMIT setting."""
    messages = []
    for name in config:
        if name not in KNOWN:
            close = difflib.get_close_matches(str(name), list(KNOWN), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            messages.append(f"unknown RATELIMIT setting {name!r}{hint} (known: {', '.join(KNOWN)})")
    return messages


class State:
    """One reading of ``settings.RATELIMIT``: validated options, the stores (built on first
    use) and the limiters of text limits on them.

    Raises ConfigurationError naming the first bad or unknown setting."""

    def __init__(self, config: object) -> None:
        if not isinstance(config, Mapping):
            raise ConfigurationError(f"settings.RATELIMIT must be a dict, got {config!r}")
        unknown = unknown_keys(config)
        if unknown:
            raise ConfigurationError(unknown[0])
        get = {**KNOWN, **config}.__getitem__
        self.enabled = bool(get("ENABLED"))
        url = get("STORE")
        if not isinstance(url, str) or not (url == "memory://" or url.startswith(_REDIS_SCHEMES)):
            raise ConfigurationError(
                f"RATELIMIT['STORE'] must be 'memory://' or a redis://, rediss:// or unix:// "
                f"URL, got {url!r}"
            )
        self.url: str = url
        self.is_memory = url == "memory://"
        self.prefix = get("PREFIX")
        self.on_error = get("ON_ERROR")
        # The limiter checks prefix and on_error; build one now so a mistake shows here.
        Limiter("1/second", prefix=self.prefix, on_error=self.on_error)
        secret = get("PARTITION_KEY_SECRET")
        if isinstance(secret, str):
            secret = secret.encode("utf-8")
        try:
            self.renderer = Renderer(get("HEADERS"), partition_key_secret=secret)
        except ConfigurationError as error:
            raise ConfigurationError(f"RATELIMIT['HEADERS']: {error}") from None
        proxies = get("TRUSTED_PROXIES")
        if isinstance(proxies, str):
            proxies = [proxies]
        try:
            self.client_ip = client_ip(trusted_proxies=proxies)
        except ConfigurationError as error:
            raise ConfigurationError(f"RATELIMIT['TRUSTED_PROXIES']: {error}") from None
        self.trusted_proxies = tuple(proxies)
        key = get("KEY")
        self.key: KeyFunction = self.client_ip if key is None else _import(key, "KEY")
        check_key_function(self.key)
        self.default_is_ip = key is None
        default = get("DEFAULT")
        self.default: tuple[Policy, ...] | None = (
            None if default is None else policies_of(default, "RATELIMIT['DEFAULT']")
        )
        exempt = get("EXEMPT")
        if isinstance(exempt, str):
            exempt = [exempt]
        try:
            self.exempt = tuple(matcher(p) for p in exempt)
        except ConfigurationError as error:
            raise ConfigurationError(f"RATELIMIT['EXEMPT']: {error}") from None
        view = get("VIEW")
        self.view: Callable[..., Any] | None = None if view is None else _import(view, "VIEW")
        self._lock = threading.Lock()
        self._store: Store | None = None
        self._limiters: dict[tuple[str, ...], Limiter] = {}
        self._async_limiters: dict[tuple[str, ...], AsyncLimiter] = {}
        self._by_text: dict[str, Limiter] = {}
        # A redis.asyncio client belongs to the event loop it first ran on: one per loop.
        self._per_loop: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[tuple[str, ...], AsyncLimiter]
        ] = weakref.WeakKeyDictionary()
        self._loop_stores: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncStore] = (
            weakref.WeakKeyDictionary()
        )
        self._warned_proxy = False

    # --- stores and limiters ------------------------------------------------------------------

    def _sync_store(self) -> Store:
        if self._store is None:
            if self.is_memory:
                from ratelimit.stores.memory import MemoryStore

                self._store = MemoryStore()
            else:
                from ratelimit.stores.redis import RedisStore

                self._store = RedisStore.from_url(self.url)
        return self._store

    def limiter(self, policies: tuple[Policy, ...]) -> Limiter:
        """The sync limiter of ``policies`` on the configured store (built once)."""
        ids = tuple(p.id for p in policies)
        limiter = self._limiters.get(ids)
        if limiter is None:
            with self._lock:
                limiter = self._limiters.get(ids)
                if limiter is None:
                    limiter = Limiter(list(policies), store=self._sync_store(),
                                      prefix=self.prefix, on_error=self.on_error)  # fmt: skip
                    self._limiters[ids] = limiter
        return limiter

    def rate_limiter(self, rate: object, where: str) -> Limiter:
        """The sync limiter of a rate written as text (parsed once) or as policies.
        Raises ConfigurationError naming ``where`` when it does not parse."""
        limiter = self._by_text.get(rate) if isinstance(rate, str) else None
        if limiter is None:
            limiter = self.limiter(policies_of(rate, where))
            if isinstance(rate, str):
                remember(self._by_text, rate, limiter, 1024)
        return limiter

    def async_limiter(self, policies: tuple[Policy, ...]) -> AsyncLimiter:
        """The async limiter of ``policies`` on the configured store: the memory store is the
        one the sync limiters use (so sync and async views count together); a Redis URL gets
        one asyncio client per running event loop. Call from a coroutine."""
        ids = tuple(p.id for p in policies)
        if self.is_memory:
            cache = self._async_limiters
            store: AsyncStore | None = self._sync_store()  # type: ignore[assignment]
        else:
            loop = asyncio.get_running_loop()
            with self._lock:
                cache = self._per_loop.setdefault(loop, {})
                store = None
        limiter = cache.get(ids)
        if limiter is None:
            with self._lock:
                limiter = cache.get(ids)
                if limiter is None:
                    if store is None:
                        store = self._loop_store()
                    limiter = AsyncLimiter(list(policies), store=store, prefix=self.prefix,
                                           on_error=self.on_error)  # fmt: skip
                    cache[ids] = limiter
        return limiter

    def _loop_store(self) -> AsyncStore:
        loop = asyncio.get_running_loop()
        store = self._loop_stores.get(loop)
        if store is None:
            from ratelimit.stores.redis import AsyncRedisStore

            store = AsyncRedisStore.from_url(self.url)
            self._loop_stores[loop] = store
        return store

    # --- per request ----------------------------------------------------------------------------

    def builtin_key(self, key: KeyFunc, request: Any) -> str:
        """The key a built-in key function gives ``request`` (read through its ``META``);
        warns once when the default key meets a proxy it was not told to trust."""
        meta = request.META
        if key is self.client_ip and not self._warned_proxy and not self.trusted_proxies:
            self._warn_untrusted_proxy(meta)
        return key.from_view(EnvironView(meta))

    def _warn_untrusted_proxy(self, meta: Mapping[str, Any]) -> None:
        if "HTTP_X_FORWARDED_FOR" not in meta and "HTTP_FORWARDED" not in meta:
            return
        try:
            peer = ipaddress.ip_address(str(meta.get("REMOTE_ADDR", "")))
        except ValueError:
            return
        if peer.is_private or peer.is_loopback:
            self._warned_proxy = True
            logger().warning(
                "ratelimit: a request from %s carries X-Forwarded-For/Forwarded but "
                "RATELIMIT['TRUSTED_PROXIES'] is empty, so every client behind that proxy "
                "shares one limit. Name your proxies, e.g. RATELIMIT['TRUSTED_PROXIES'] = "
                "['%s'] (ratelimit.W002)",
                peer,
                peer,
            )

    def sync_key(self, key: KeyFunction | None, request: Any) -> str:
        """The key of ``request`` from ``key`` (None: RATELIMIT['KEY'] or the client IP).
        Raises ConfigurationError when a custom key returns anything but a str."""
        key = key or self.key
        if isinstance(key, KeyFunc):
            return self.builtin_key(key, request)
        result = key(request)
        if inspect.iscoroutine(result):
            result.close()  # never awaited: close it rather than leave a warning behind
            raise ConfigurationError(
                f"key function {key!r} is async; a sync view needs a sync key function"
            )
        return check_key(result, key)

    async def async_key(self, key: KeyFunction | None, request: Any) -> str:
        """As :meth:`sync_key`; an async key function is awaited."""
        key = key or self.key
        if isinstance(key, KeyFunc):
            return self.builtin_key(key, request)
        result = key(request)
        if inspect.isawaitable(result):
            result = await result
        return check_key(result, key)


_state: State | None = None
_state_lock = threading.Lock()


def state() -> State:
    """The State of the current ``settings.RATELIMIT``. Raises ConfigurationError for bad
    settings (at every call until they are fixed: a bad setting never passes silently)."""
    current = _state
    if current is None:
        from django.conf import settings

        with _state_lock:
            current = _state
            if current is None:
                current = _set(State(getattr(settings, "RATELIMIT", {})))
                if current.is_memory:
                    _warn_memory_workers()
    return current


_warned_workers = False


def _warn_memory_workers() -> None:
    """ratelimit.W001 at run time, once per process: servers such as gunicorn run no checks."""
    global _warned_workers
    from ratelimit.django.checks import memory_warning, worker_count

    workers = worker_count()
    if workers > 1 and not _warned_workers:
        _warned_workers = True
        logger().warning("ratelimit: %s (ratelimit.W001)", memory_warning(workers))


def _set(value: State) -> State:
    global _state
    _state = value
    return value


def reset(**kwargs: object) -> None:
    """A ``setting_changed`` receiver: forget the State when RATELIMIT changes. (DRF's
    rates need nothing: ``Throttle`` reads them at each request, and DRF reloads them.)"""
    global _state
    if kwargs.get("setting") == "RATELIMIT":
        _state = None
