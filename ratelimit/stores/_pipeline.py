"""Automatic pipelining for an asyncio redis-py client, as ioredis's ``enableAutoPipelining``.

:class:`AutoPipeline` gives a store one coroutine, :meth:`AutoPipeline.execute_command`, that
stands in for the client's own. A command sent while none of ours is in flight goes straight
to the client, exactly as before. Commands sent while one is in flight are queued; at the next
turn of the event loop everything queued goes out in one write on one pooled connection, and
the replies are read back in order from that connection. The send runs in a task of its own,
so a caller that is cancelled while it waits only stops waiting: the batch still reads every
reply, the connection stays in step, and the other callers get theirs.

Each command keeps its own reply and its own error: an error reply (``NOSCRIPT``, a script
error, a wrong type) is raised to that command's caller only, and so is an argument redis-py
cannot encode. A connection error or timeout is raised to every caller whose reply had not been
read yet, as it would have been to each of them alone, and the connection is dropped. Every
read has the connection's own ``socket_timeout``, as a single command's has. Nothing is retried
here: a caller that wants a fallback (``EVAL`` after ``NOSCRIPT``) sends it as a new command.
A lost connection also closes the pool's other connections, which died with the server: each
would otherwise fail a later batch and re-open the breaker after the server is back.
The batcher does not look at what it sends: ``EVALSHA``, ``EVAL``, ``FCALL`` and anything
else are all one to it.

Commands are encoded with hiredis's ``pack_command`` when it is installed and the connection
encodes text as strict UTF-8 (redis-py's default): the same bytes as redis-py's own packer, in
C. Otherwise, redis-py's ``Connection.pack_command``.

Not for cluster clients (a batch would have to be split by node) nor single-connection
clients (whose one connection is shared under a lock): the store sends their commands one by
one.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Callable
from typing import Any

__all__ = ["MAX_BATCH", "AutoPipeline"]

#: Commands in one write, at most; a longer queue goes out as several batches at once.
MAX_BATCH = 256

_Item = tuple[tuple[Any, ...], "asyncio.Future[Any]"]

_hiredis_pack: Callable[[tuple[Any, ...]], bytes] | None
try:
    from hiredis import pack_command as _hiredis_pack
except ImportError:  # pragma: no cover - hiredis is in the redis extra
    _hiredis_pack = None


class AutoPipeline:
    """Batches the commands of concurrent tasks on one asyncio redis-py client.

    ``client`` is a ``redis.asyncio.Redis`` (anything with ``execute_command`` and a
    ``connection_pool``). Bound to the event loop it is first used on; used from another loop,
    it starts afresh there.
    """

    __slots__ = ("_client", "_flushing", "_inflight", "_loop", "_name_arg", "_queue", "_tasks")

    def __init__(self, client: Any) -> None:
        self._client = client
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: list[_Item] = []
        self._inflight = 0  # our requests on the wire: direct calls and batches
        self._flushing = False  # a flush is scheduled for the next turn of the loop
        self._tasks: set[asyncio.Task[None]] = set()  # batches being sent (kept referenced)
        # redis-py < 5.3 wants a command name for get_connection(); later ones warn about it.
        try:
            parameters = inspect.signature(client.connection_pool.get_connection).parameters
        except (TypeError, ValueError):  # no signature to read: assume today's redis-py
            parameters = {}  # type: ignore[assignment]
        parameter = parameters.get("command_name")
        self._name_arg = parameter is not None and parameter.default is inspect.Parameter.empty

    @staticmethod
    def supports(client: Any) -> bool:
        """Whether ``client`` can be pipelined: an asyncio redis-py client of one server with
        a connection pool, not a cluster and not a single-connection client."""
        return (
            type(client).__name__ != "RedisCluster"
            and hasattr(client, "connection_pool")
            and hasattr(client.connection_pool, "get_connection")
            and getattr(client, "connection", None) is None
            and not getattr(client, "single_connection_client", False)
        )

    async def execute_command(self, *args: Any) -> Any:
        """Send one command and return its reply.

        Awaits the server's reply. Raises what redis-py raises for this command: its error
        reply (``ResponseError``, ``NoScriptError``), ``DataError`` for an argument it cannot
        encode, or the connection's error or timeout. Cancelling the caller never disturbs the
        connection or the other callers' replies.
        """
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._start(loop)
        if not self._inflight and not self._queue:
            # Nothing of ours on the wire: no reason to wait for company.
            self._inflight += 1
            try:
                return await self._client.execute_command(*args)
            except Exception as error:
                await self._lost(error)
                raise
            finally:
                self._inflight -= 1
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append((args, future))
        if not self._flushing:
            self._flushing = True
            loop.call_soon(self._flush)
        return await future

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start on ``loop``: what was queued on another loop can never be sent from here."""
        for _, future in self._queue:
            if not future.done():
                future.cancel()
        self._loop = loop
        self._queue = []
        self._flushing = False
        self._tasks = set()

    def _flush(self) -> None:
        """Send everything queued, in batches of at most :data:`MAX_BATCH`, each in a task."""
        self._flushing = False
        queue = self._queue
        loop = self._loop
        if not queue or loop is None:
            return
        self._queue = []
        for at in range(0, len(queue), MAX_BATCH):
            task = loop.create_task(self._send(queue[at : at + MAX_BATCH]))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[_Item]) -> None:
        """One write of ``batch`` and the reading of its replies, each to its caller."""
        batch = [item for item in batch if not item[1].done()]  # cancelled before it went out
        if not batch:
            return
        self._inflight += 1
        try:
            await self._exchange(batch)
        finally:
            self._inflight -= 1

    async def _exchange(self, batch: list[_Item]) -> None:
        from redis.exceptions import ResponseError

        pool = self._client.connection_pool
        try:
            if self._name_arg:
                connection = await pool.get_connection(batch[0][0][0])
            else:
                connection = await pool.get_connection()
        except BaseException as error:  # no connection: every caller fails as it would alone
            _fail(batch, error)
            if isinstance(error, Exception):
                return
            raise
        try:
            packed, batch = _pack(connection, batch)
            if not batch:
                return
            await connection.send_packed_command(packed)
            for _, future in batch:
                try:
                    reply = await connection.read_response()
                except ResponseError as error:  # this command's error reply, only its own
                    if not future.done():
                        future.set_exception(error)
                    continue
                if not future.done():  # else its caller stopped waiting: read all the same
                    future.set_result(reply)
        except BaseException as error:
            # The replies still on the wire are lost with the connection, never read by the
            # next user of it. redis-py disconnects on a failed read; be sure of it.
            await connection.disconnect(nowait=True)
            _fail(batch, error)
            if not isinstance(error, Exception):
                raise  # this task itself was cancelled: the loop is closing
            await self._lost(error)
        finally:
            await pool.release(connection)

    async def _lost(self, error: Exception) -> None:
        """After a lost connection, close every connection of the pool: when the server went
        away they all died with it, and each would otherwise fail one more batch (and re-open
        the store's breaker) when it is next taken, long after the server is back. Those in
        use fail their batch now, within the outage already known. All reconnect when next
        used."""
        from redis.exceptions import ConnectionError as LostConnection

        if isinstance(error, LostConnection):
            # best effort: the error itself goes to the callers
            with contextlib.suppress(Exception):
                await self._client.connection_pool.disconnect(inuse_connections=True)


def _fail(batch: list[_Item], error: BaseException) -> None:
    """Every caller in ``batch`` still waiting gets ``error`` (or is cancelled with it)."""
    for _, future in batch:
        if not future.done():
            if isinstance(error, Exception):
                future.set_exception(error)
            else:
                future.cancel()


def _pack(connection: Any, batch: list[_Item]) -> tuple[list[bytes], list[_Item]]:
    """The bytes of ``batch``'s commands, and the commands that made it: one that cannot be
    encoded fails its own caller and is left out."""
    encoder = getattr(connection, "encoder", None)
    fast: Callable[[tuple[Any, ...]], bytes] | None = None
    if (
        _hiredis_pack is not None
        and getattr(encoder, "encoding", None) in ("utf-8", "utf8")
        and getattr(encoder, "encoding_errors", None) == "strict"
    ):
        fast = _hiredis_pack
    packed: list[bytes] = []
    sent: list[_Item] = []
    for item in batch:
        args = item[0]
        try:
            first = args[0]
            # a name such as "SCRIPT LOAD" is split by redis-py's packer, not by hiredis's
            if fast is not None and type(first) is str and " " not in first:
                packed.append(fast(args))
            else:
                packed.extend(connection.pack_command(*args))
        except Exception:
            try:  # redis-py's packer says what is wrong (DataError), in its own words
                packed.extend(connection.pack_command(*args))
            except Exception as error:
                if not item[1].done():
                    item[1].set_exception(error)
                continue
        sent.append(item)
    return packed, sent
