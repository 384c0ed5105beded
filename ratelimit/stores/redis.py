"""Redis, Valkey and Redis Cluster, through redis-py: one ``FCALL`` (or ``EVALSHA``) per check.

redis-py is imported when a store is built, never when ``ratelimit`` is imported.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from ratelimit.breaker import CircuitBreaker
from ratelimit.errors import StoreError
from ratelimit.stores.base import AsyncScriptStore, ScriptCalls, ScriptStore

if TYPE_CHECKING:
    import redis
    import redis.asyncio
    import redis.asyncio.cluster
    import redis.cluster

__all__ = ["AsyncRedisStore", "RedisStore"]

# Limiter-grade client settings: a limiter must answer in milliseconds or step aside, and a
# script must never be sent twice because the first attempt timed out (it may have run).
_TIMEOUT = 0.05


# How long a check may wait for a free pooled connection when every one is busy (a traffic
# peak), before the store counts as failing. Waiting is queueing behind fast calls, not an
# outage, so it gets longer than a round trip; refusing at once would let on_error decide
# exactly when limiting matters most.
_POOL_WAIT = 0.5
_POOL_SIZE = 100
# Requests a cluster client may send per command: one redirection (MOVED, or ASK during a
# migration) and the command. redis-py's default of 16 retries TRYAGAIN with 50 ms sleeps for
# about 400 ms; with 2 a migrating slot costs at most two round trips and one 50 ms sleep.
_CLUSTER_REQUESTS = 2


def _cluster_grade(client: Any) -> Any:
    client.RedisClusterRequestTTL = _CLUSTER_REQUESTS
    return client


def _limiter_grade(kwargs: dict[str, Any], *, asyncio: bool = False,
                   cluster: bool = False) -> dict[str, Any]:  # fmt: skip
    from redis.backoff import NoBackoff

    if asyncio:
        from redis.asyncio.retry import Retry as AsyncRetry

        retry: Any = AsyncRetry(NoBackoff(), 0)
    else:
        from redis.retry import Retry

        retry = Retry(NoBackoff(), 0)
    settings: dict[str, Any] = {
        "socket_timeout": _TIMEOUT,
        "socket_connect_timeout": _TIMEOUT,
        "retry": retry,
        "health_check_interval": 0,
    }
    if not (asyncio and cluster):  # the asyncio RedisCluster takes no retry_on_timeout
        settings["retry_on_timeout"] = False
    if not cluster:  # a pool that waits for a free connection rather than refusing one
        settings["max_connections"] = _POOL_SIZE
        settings["timeout"] = _POOL_WAIT
    settings.update(kwargs)
    return settings


class _ClusterOnFirstUse:
    """Stands in for a sync ``RedisCluster`` that could not be built yet because no node
    answered (the application started before the cluster): builds it on the first command,
    so that checks meanwhile fail as store errors and follow ``on_error``."""

    def __init__(self, build: Any) -> None:
        self._build = build
        self._client: Any = None

    def _get(self) -> Any:
        if self._client is None:
            self._client = self._build()
        return self._client

    def execute_command(self, *args: Any, **options: Any) -> Any:
        return self._get().execute_command(*args, **options)

    def delete(self, *names: Any) -> Any:
        return self._get().delete(*names)

    def get_retry(self) -> Any:
        return None if self._client is None else self._client.get_retry()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def __getattr__(self, name: str) -> Any:
        client = self.__dict__.get("_client")
        if client is None:
            raise AttributeError(name)
        return getattr(client, name)

    def __repr__(self) -> str:
        return f"<RedisCluster, not connected yet: {self._client!r}>"


def _retries(client: Any) -> int:
    """How many times redis-py would resend a failed command on this client: its ``Retry``'s
    public ``get_retries()`` (redis-py 6 and later). The one place that reads the private
    ``_retries`` is the fallback for redis-py 5, which has no public way to ask;
    tests/test_other_libraries.py checks which of the two the installed version offers. 0 when
    the client has no ``Retry``."""
    get_retry = getattr(client, "get_retry", None)
    retry = get_retry() if callable(get_retry) else getattr(client, "retry", None)
    get_retries = getattr(retry, "get_retries", None)
    retries = get_retries() if callable(get_retries) else getattr(retry, "_retries", 0)
    return retries if isinstance(retries, int) else 0


def _is_cluster(client: Any) -> bool:
    """Whether ``client`` routes commands over a cluster's nodes (it has a slot map)."""
    return isinstance(client, _ClusterOnFirstUse) or hasattr(client, "nodes_manager")


class _RedisBase(ScriptCalls):
    """What the sync and async Redis stores share: the client's errors, the breakers, the
    function or script choice. The call itself is :class:`~ratelimit.stores.base.ScriptCalls`."""

    binary_args = True  # redis-py sends bytes arguments as they are
    int_replies = True  # and reads a script's integers as int, whatever its parser

    def __init__(self, client: Any, breaker: CircuitBreaker | bool) -> None:
        from redis.exceptions import (
            AskError,
            MovedError,
            NoScriptError,
            ResponseError,
            TryAgainError,
        )

        self.breaker = CircuitBreaker.for_store(breaker, type(self).__name__)
        #: One breaker per cluster master (by ``host:port``), made on first use.
        self.breakers: dict[str, CircuitBreaker] = {}
        self._client = client
        cluster = _is_cluster(client)
        self.per_node_breakers = self.breaker is not None and cluster
        # FCALL on redis-py's cluster clients asks a node for the keys of every call (COMMAND
        # GETKEYS, one more round trip), where EVALSHA's keys are read locally: scripts there.
        self.functions = not cluster
        name = type(self).__name__
        retries = _retries(client)
        self._warn_retries(
            retries,
            f"{retries} retries",
            f"Build the store with {name}.from_url(...), or give the client "
            "retry=Retry(NoBackoff(), 0).",
        )
        self._setup_calls()
        self._reply_errors = (ResponseError,)
        self._noscript_errors = (NoScriptError,)
        self._slot_moving: tuple[type[Exception], ...] = (AskError, MovedError, TryAgainError)

    @property
    def client(self) -> Any:
        """The redis-py client this store uses."""
        return self._client

    def breaker_for(self, keys: Sequence[str]) -> CircuitBreaker | None:
        """On a cluster, the breaker of the master that owns the slot of ``keys`` (all keys of
        one identifier share it), so that one dead master does not take the others' keys
        down; else the store's breaker. Before the client knows the slot map, the store's."""
        breaker = self.breaker
        if not self.per_node_breakers or breaker is None or breaker.state != "closed":
            return breaker  # the store's own breaker opens when no node could be asked at all
        client: Any = self._client
        try:
            name = client.nodes_manager.get_node_from_slot(client.keyslot(keys[0])).name
        except Exception:
            return breaker
        node = self.breakers.get(name)
        if node is None:
            node = self.breakers.setdefault(name, breaker.child(f"{type(self).__name__} {name}"))
        return node

    def _failed(self, error: BaseException) -> StoreError:
        failed = StoreError(self._describe(error))
        if isinstance(error, self._slot_moving) or str(error) == "TTL exhausted.":
            failed.outage = False  # the node answered: a slot is being migrated, no outage
        return failed

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._client!r})"


class RedisStore(_RedisBase, ScriptStore):
    """Limiter state in Redis or Valkey (7 or later), single node or cluster, through a sync
    redis-py client.

    Each ``hit``/``peek`` is one call whatever the number of policies: ``FCALL`` of the
    limiter's function library on a single node, ``EVALSHA`` of the limiter script on a cluster
    or where the server cannot load functions. When the server does not know the function
    (restart, ``FUNCTION FLUSH``) one ``FUNCTION LOAD`` precedes the same call again; when it
    does not know the script (``SCRIPT FLUSH``) the call is sent once more as ``EVAL``. No other
    error is retried: a hit is not idempotent. All keys of one identifier share one hash tag,
    so one call touches one cluster slot. Calls block on the network. See the Stores page of
    the docs.

    :param client: a ``redis.Redis`` (Sentinel's master client too) or
        ``redis.cluster.RedisCluster``. A client that retries failed commands gets a
        ``RuntimeWarning``, once per store; :meth:`from_url` builds one that does not.
    :param breaker: the store's circuit breaker, shared by every limiter on it: ``True`` (the
        default) for a new :class:`~ratelimit.breaker.CircuitBreaker` (one per master on a
        cluster), ``False`` for none, or one of your own.
    :raises ConfigurationError: for a ``breaker`` that is none of those.
    :raises StoreError: from the limiter's calls, chained from redis-py's error, when the
        limiter's ``on_error`` is ``"raise"``.
    """

    _client: redis.Redis | redis.cluster.RedisCluster

    def __init__(
        self,
        client: redis.Redis | redis.cluster.RedisCluster,
        *,
        breaker: CircuitBreaker | bool = True,
    ) -> None:
        super().__init__(client, breaker)

    @classmethod
    def from_url(cls, url: str, *, cluster: bool = False, **kwargs: Any) -> RedisStore:
        """A store on a new client for ``url`` with limiter-grade settings: 50 ms socket and
        connect timeouts, no automatic retries, a blocking pool of 100 connections (0.5 s wait
        for a free one; not on a cluster).

        :param url: a ``redis://``, ``rediss://`` or ``unix://`` URL.
        :param cluster: build a ``RedisCluster`` (which connects on first use when no node
            answers yet).
        :param kwargs: override the settings above and go to redis-py.
        :returns: the store.
        """
        if cluster:
            from redis.cluster import RedisCluster
            from redis.exceptions import RedisClusterException

            settings = _limiter_grade(kwargs, cluster=True)
            try:
                return cls(_cluster_grade(RedisCluster.from_url(url, **settings)))
            except RedisClusterException:  # no node answers yet: connect on first use
                pending: Any = _ClusterOnFirstUse(
                    lambda: _cluster_grade(RedisCluster.from_url(url, **settings))
                )
                return cls(pending)
        import redis

        pool = redis.BlockingConnectionPool.from_url(url, **_limiter_grade(kwargs))
        return cls(redis.Redis.from_pool(pool))

    def _send(self, command: list[Any]) -> Any:
        execute: Any = self._client.execute_command
        return execute(*command)


#: Commands whose replies redis-py hands back as the server sent them: these may share a write.
_PIPELINED: Final = frozenset(("FCALL", "EVALSHA", "EVAL"))


class AsyncRedisStore(_RedisBase, AsyncScriptStore):
    """:class:`RedisStore` for ``redis.asyncio.Redis`` and
    ``redis.asyncio.cluster.RedisCluster``: the same script, rules and arguments; calls await
    the network instead of blocking.

    Checks that concurrent tasks issue while one is in flight go out together in one write
    (automatic pipelining), each still its own script call with its own reply and error; not on
    a cluster client, whose checks go one by one.

    :param client: a ``redis.asyncio.Redis`` or ``redis.asyncio.cluster.RedisCluster``.
    :param breaker: as for :class:`RedisStore`.
    :raises ConfigurationError: for a bad ``breaker``.
    :raises StoreError: as :class:`RedisStore` does.
    """

    _client: redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster

    def __init__(
        self,
        client: redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster,
        *,
        breaker: CircuitBreaker | bool = True,
    ) -> None:
        super().__init__(client, breaker)
        # redis-py's asyncio RedisCluster breaks when many first commands race before it has
        # read the slot map; its initialize() is locked, so every first caller awaits it.
        self._uninitialized: bool = _is_cluster(client) and hasattr(client, "initialize")
        # Checks of concurrent tasks share writes and reads (stores/_pipeline.py); a cluster
        # client sends each check on its own.
        from ratelimit.stores._pipeline import AutoPipeline

        self._pipelined: Any = (
            AutoPipeline(client).execute_command if AutoPipeline.supports(client) else None
        )

    @classmethod
    def from_url(cls, url: str, *, cluster: bool = False, **kwargs: Any) -> AsyncRedisStore:
        """As :meth:`RedisStore.from_url`, with an asyncio client."""
        if cluster:
            from redis.asyncio.cluster import RedisCluster

            return cls(_cluster_grade(RedisCluster.from_url(url, **_limiter_grade(
                kwargs, asyncio=True, cluster=True))))  # fmt: skip
        import redis.asyncio

        pool = redis.asyncio.BlockingConnectionPool.from_url(
            url, **_limiter_grade(kwargs, asyncio=True)
        )
        return cls(redis.asyncio.Redis.from_pool(pool))

    async def _send(self, command: list[Any]) -> Any:
        """Send one command and await its reply: the one place an async Redis store talks to
        its client. Script and function calls of concurrent tasks go out together through the
        auto-pipeliner (replies as the server sends them, which is how redis-py returns these
        commands too); other commands, whose replies redis-py post-processes, go one by one."""
        if self._uninitialized:
            await self._client.initialize()
            self._uninitialized = False
        if self._pipelined is not None and command[0] in _PIPELINED:
            return await self._pipelined(*command)
        return await self._client.execute_command(*command)
