"""Redis over HTTP, through Upstash's REST API and the ``upstash-redis`` client: one request
per check, for serverless functions where no TCP connection survives between invocations.

:class:`UpstashStore` and :class:`AsyncUpstashStore` run the same Lua as
:class:`~ratelimit.RedisStore`, so an HTTP client and a TCP client of the same database share
keys and decisions. ``upstash_redis`` and ``httpx`` are imported when a store is built. See the
Serverless page of the docs.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, NamedTuple

from ratelimit.breaker import CircuitBreaker
from ratelimit.errors import ConfigurationError
from ratelimit.stores.base import AsyncScriptStore, ScriptCalls, ScriptStore

if TYPE_CHECKING:
    import upstash_redis
    import upstash_redis.asyncio

__all__ = ["AsyncUpstashStore", "UpstashStore"]

#: Seconds the store-built client waits to connect, send, or read a reply. Long enough for a
#: TLS handshake to a database in the function's region on a cold start; short enough that an
#: outage costs a fraction of a second per check instead of a hung function.
DEFAULT_TIMEOUT = 0.5

URL_ENV = "UPSTASH_REDIS_REST_URL"
TOKEN_ENV = "UPSTASH_REDIS_REST_TOKEN"


def _credentials(owner: str) -> tuple[str, str]:
    """``(url, token)`` from the environment; ConfigurationError naming what is missing."""
    missing = [name for name in (URL_ENV, TOKEN_ENV) if not os.environ.get(name)]
    if missing:
        raise ConfigurationError(
            f"{owner}.from_env() needs {' and '.join(missing)} in the environment "
            "(the REST URL and token from the Upstash console)"
        )
    return os.environ[URL_ENV], os.environ[TOKEN_ENV]


def _endpoint(owner: str, url: object, token: object) -> tuple[str, str]:
    """``url`` and ``token`` without the spaces and line ends around them (a pasted environment
    variable often ends in a newline). Raises ConfigurationError, naming the value, for
    anything but an ``http(s)://`` URL and a token, without spaces or control characters."""
    import re

    if not isinstance(url, str) or not isinstance(token, str):
        raise ConfigurationError(f"{owner} needs a REST URL and token as text, got {url!r}")
    url, token = url.strip(), token.strip()
    bad = re.compile(r"[\s\x00-\x1f\x7f]")
    if not re.match(r"https?://[^/?#]+", url, re.IGNORECASE | re.ASCII) or bad.search(url):
        raise ConfigurationError(
            f"{owner}: the REST URL must be http(s)://host without spaces, got {url!r}"
        )
    if not token or bad.search(token):
        raise ConfigurationError(
            f"{owner}: the REST token must be non-empty, without spaces or control characters"
        )
    return url, token


def _checked_client(owner: str, client: object) -> None:
    """Raises ConfigurationError for a client without a callable ``execute``."""
    if not callable(getattr(client, "execute", None)):
        raise ConfigurationError(
            f"{owner} needs an upstash_redis client (with execute()), got {client!r}"
        )


def _client_options(timeout: float, kwargs: dict[str, Any]) -> dict[str, Any]:
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ConfigurationError(f"timeout must be a positive number of seconds, got {timeout!r}")
    options: dict[str, Any] = {"rest_retries": 0}
    options.update(kwargs)
    return options


class _Private(NamedTuple):
    """What a store needs from an upstash-redis client that the library offers no public way
    to read or set."""

    url: str  #: the REST URL, for error messages
    retries: int  #: how often a failed request is resent, for the warning
    interval: object  #: seconds between two of them
    http: Any  #: the httpx client, the only handle on a timeout (upstash-redis sets none)


def _private(client: Any) -> _Private:
    """The one place that reads upstash-redis's private attributes (``_url``, ``_http`` and
    its ``_retries``, ``_retry_interval`` and ``_client``; see tests/upstash_notes.md): it has
    no public setting for any of them. A client that lacks one gets its fallback:
    ``"the REST endpoint"``, 0 retries, ``"?"``, None. tests/test_other_libraries.py checks that the
    installed upstash-redis still has every one, so a release that moves them fails there."""
    http = getattr(client, "_http", None)
    retries = getattr(http, "_retries", 0)
    return _Private(
        str(getattr(client, "_url", "the REST endpoint")),
        retries if isinstance(retries, int) else 0,
        getattr(http, "_retry_interval", "?"),
        getattr(http, "_client", None),
    )


def _set_timeout(client: Any, timeout: float) -> None:
    """Sets the timeout of the httpx client under an upstash-redis client (it has no option of
    its own). Warns (RuntimeWarning) when that httpx client is not where it was: the store
    then works without a timeout."""
    import httpx

    http = _private(client).http
    if isinstance(http, (httpx.Client, httpx.AsyncClient)):
        http.timeout = httpx.Timeout(timeout)
        return
    import warnings

    warnings.warn(
        f"this upstash-redis client keeps no httpx client where ratelimit sets its timeout "
        f"(client._http._client): requests run without the timeout={timeout} asked for",
        RuntimeWarning,
        stacklevel=3,
    )


class _UpstashBase(ScriptCalls):
    """What the sync and async stores share: the checks on the client and what its errors
    mean. Does no I/O. Scripts only (``EVALSHA``): Upstash has no function libraries."""

    def __init__(self, client: Any, breaker: CircuitBreaker | bool) -> None:
        import httpx
        from upstash_redis.errors import UpstashError

        self.breaker = CircuitBreaker.for_store(breaker, type(self).__name__)
        self._client = client
        self._setup_calls()
        self._reply_errors = (UpstashError,)
        self._upstash_error: type[Exception] = UpstashError
        # What a transport error says about the check: never reached the server / sent, but
        # the reply was lost (it may have run) / anything else httpx raises.
        self._unreached: tuple[type[Exception], ...] = (httpx.ConnectError, httpx.ConnectTimeout)
        self._lost: type[Exception] = httpx.TimeoutException
        self._transport_error: type[Exception] = httpx.TransportError
        private = _private(client)
        self._url: str = private.url
        if private.retries > 0:
            self._warn_retries(
                private.retries,
                f"rest_retries={private.retries}, {private.interval} s apart",
                f"Build the client with rest_retries=0, or use {type(self).__name__}.from_env().",
            )

    @property
    def client(self) -> Any:
        """The upstash-redis client this store uses."""
        return self._client

    def _describe(self, error: BaseException) -> str:
        name = type(self).__name__
        cause = f"{type(error).__name__}: {error}"
        if isinstance(error, self._upstash_error):
            text = str(error)
            if text.startswith("Unauthorized"):
                message = (
                    f"{name}: {self._url} rejected the token (Unauthorized): check "
                    f"{TOKEN_ENV}, and that it belongs to the database at {URL_ENV}"
                )
            else:
                message = f"{name}: the server answered an error: {text}"
        elif isinstance(error, self._unreached):
            message = f"{name}: could not reach {self._url} ({cause})"
        elif isinstance(error, self._lost):
            message = (
                f"{name}: no reply from {self._url} in time ({cause}); the check may have "
                "run on the server, and was not sent again"
            )
        elif isinstance(error, self._transport_error):
            message = f"{name}: the request to {self._url} failed ({cause}); not sent again"
        elif isinstance(error, ValueError):
            message = f"{name}: {self._url} did not answer in Upstash's JSON ({cause})"
        else:
            message = f"{name} failed: {cause}"
        return message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._client!r}, url={self._url!r})"


class UpstashStore(_UpstashBase, ScriptStore):
    """Limiter state in Redis reached over HTTP (Upstash's REST API), through a sync client.

    Each ``hit``/``peek`` is one HTTP request, an ``EVALSHA`` of the limiter script, whatever
    the number of policies; when the server does not know the script, the same call is sent
    once more as ``EVAL`` with the text, which caches it. No other error is retried. Keys and
    script are those of :class:`~ratelimit.RedisStore`. Time is the server's ``TIME`` unless
    the limiter has a ``clock=``. Calls block on the network. Close the client with
    ``store.client.close()``.

    :param client: an ``upstash_redis.Redis``. Its defaults retry every failed request once,
        three seconds later, and set no HTTP timeout: build it with ``rest_retries=0`` (else a
        ``RuntimeWarning``, once per store), or let :meth:`from_env` / :meth:`from_url` build
        one with no retries and a timeout.
    :param breaker: the store's circuit breaker, shared by every limiter on it: ``True`` (the
        default) for a new :class:`~ratelimit.breaker.CircuitBreaker`, ``False`` for none, or
        one of your own.
    :raises ConfigurationError: for an async client or a bad ``breaker``.
    :raises StoreError: from the limiter's calls, chained from the client's error
        (``UpstashError``, ``httpx.HTTPError``...), when the limiter's ``on_error`` is
        ``"raise"``.
    """

    _client: upstash_redis.Redis

    def __init__(
        self, client: upstash_redis.Redis, *, breaker: CircuitBreaker | bool = True
    ) -> None:
        import inspect

        _checked_client("UpstashStore", client)
        if inspect.iscoroutinefunction(getattr(client, "execute", None)):
            raise ConfigurationError(
                f"UpstashStore needs a sync client (upstash_redis.Redis), got {client!r}; "
                "use AsyncUpstashStore for upstash_redis.asyncio.Redis"
            )
        super().__init__(client, breaker)

    @classmethod
    def from_env(cls, *, timeout: float = DEFAULT_TIMEOUT, breaker: CircuitBreaker | bool = True,
                 **kwargs: Any) -> UpstashStore:  # fmt: skip
        """A store on a new client for the ``UPSTASH_REDIS_REST_URL`` and
        ``UPSTASH_REDIS_REST_TOKEN`` environment variables, with no retries.

        :param timeout: seconds to connect, send and read (default 0.5).
        :param breaker: as for the store.
        :param kwargs: go to ``upstash_redis.Redis`` (``allow_telemetry``...).
        :returns: the store.
        :raises ConfigurationError: when a variable is missing or, as in :meth:`from_url`,
            malformed.
        """
        url, token = _credentials(cls.__name__)
        return cls.from_url(url, token, timeout=timeout, breaker=breaker, **kwargs)

    @classmethod
    def from_url(cls, url: str, token: str, *, timeout: float = DEFAULT_TIMEOUT,
                 breaker: CircuitBreaker | bool = True, **kwargs: Any) -> UpstashStore:  # fmt: skip
        """As :meth:`from_env`, with the REST URL and token given.

        :param url: the REST URL, ``http(s)://host`` (spaces and line ends around it are
            dropped).
        :param token: the REST token (likewise).
        :param timeout: as for :meth:`from_env`.
        :param breaker: as for the store.
        :param kwargs: as for :meth:`from_env`.
        :returns: the store.
        :raises ConfigurationError: for a URL that is not ``http(s)://host`` or a token with
            spaces or control characters inside.
        """
        import upstash_redis

        url, token = _endpoint(cls.__name__, url, token)
        client = upstash_redis.Redis(url=url, token=token, **_client_options(timeout, kwargs))
        _set_timeout(client, timeout)
        return cls(client, breaker=breaker)

    def _send(self, command: list[Any]) -> Any:
        return self._client.execute(command)


class AsyncUpstashStore(_UpstashBase, AsyncScriptStore):
    """:class:`UpstashStore` for ``upstash_redis.asyncio.Redis``: the same script, request
    count, rules and arguments; calls await the network instead of blocking. Close the client
    with ``await store.client.close()``, on the event loop that used it.

    :param client: an ``upstash_redis.asyncio.Redis``.
    :param breaker: as for :class:`UpstashStore`.
    :raises ConfigurationError: for a sync client or a bad ``breaker``.
    :raises StoreError: as :class:`UpstashStore` does.
    """

    _client: upstash_redis.asyncio.Redis

    def __init__(
        self, client: upstash_redis.asyncio.Redis, *, breaker: CircuitBreaker | bool = True
    ) -> None:
        import inspect

        _checked_client("AsyncUpstashStore", client)
        if not inspect.iscoroutinefunction(getattr(client, "execute", None)):
            raise ConfigurationError(
                f"AsyncUpstashStore needs an async client (upstash_redis.asyncio.Redis), got "
                f"{client!r}; use UpstashStore for upstash_redis.Redis"
            )
        super().__init__(client, breaker)

    @classmethod
    def from_env(cls, *, timeout: float = DEFAULT_TIMEOUT, breaker: CircuitBreaker | bool = True,
                 **kwargs: Any) -> AsyncUpstashStore:  # fmt: skip
        """As :meth:`UpstashStore.from_env`, with an ``upstash_redis.asyncio.Redis``."""
        url, token = _credentials(cls.__name__)
        return cls.from_url(url, token, timeout=timeout, breaker=breaker, **kwargs)

    @classmethod
    def from_url(cls, url: str, token: str, *, timeout: float = DEFAULT_TIMEOUT,
                 breaker: CircuitBreaker | bool = True, **kwargs: Any
                 ) -> AsyncUpstashStore:  # fmt: skip
        """As :meth:`UpstashStore.from_url`, with an ``upstash_redis.asyncio.Redis``."""
        import upstash_redis.asyncio

        url, token = _endpoint(cls.__name__, url, token)
        client = upstash_redis.asyncio.Redis(
            url=url, token=token, **_client_options(timeout, kwargs)
        )
        _set_timeout(client, timeout)
        return cls(client, breaker=breaker)

    async def _send(self, command: list[Any]) -> Any:
        return await self._client.execute(command)
