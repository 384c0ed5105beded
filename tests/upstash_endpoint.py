"""A local stand-in for Upstash's Redis REST API, in front of a real Redis server.

`UpstashEndpoint` is a real HTTP server (stdlib `ThreadingHTTPServer` on a background thread)
that speaks the subset of the Upstash REST protocol that the `upstash-redis` client uses, and
forwards every command, unchanged, to a real Redis server through redis-py::

    with UpstashEndpoint("redis://127.0.0.1:6379/0", token="t0ken") as endpoint:
        client = upstash_redis.Redis(url=endpoint.url, token="t0ken")
        client.set("a", "1")
        assert endpoint.commands["SET"] == 1
        client.close()

Protocol spoken (see ``tests/upstash_notes.md`` for where each fact comes from):

- ``POST /`` with a JSON array ``["EVALSHA", sha, 1, "key", 10]`` runs one command; numbers are
  sent to Redis as their decimal text. ``POST /pipeline`` (one after the other) and
  ``POST /multi-exec`` (one ``MULTI``/``EXEC`` transaction) take an array of such arrays and
  answer an array with one ``{"result": ...}`` or ``{"error": ...}`` per command.
- ``Authorization: Bearer <token>`` (or a ``_token`` query parameter) is required; otherwise
  the answer is ``401 {"error": "Unauthorized"}``.
- A reply is ``200 {"result": ...}``: integers as JSON numbers, nil as ``null``, arrays as
  arrays (nested), strings as text; with ``Upstash-Encoding: base64`` every string except
  ``"OK"`` is base64 of its bytes, which is what the client's decoder expects.
- A Redis error reply is ``400 {"error": "<Redis error text>"}``, with its code prefix
  (``NOSCRIPT No matching script. Please use EVAL.``); when Redis cannot be reached the answer
  is ``503 {"error": "ERR ..."}``.

Test hooks: `requests`, `statuses` and `commands` count what arrived (`reset_counters` clears
them); `stop` makes the endpoint unreachable (connection refused; open keep-alive connections
are cut) and `start` brings it back on the same port; `reply_delay` holds every reply after
the command ran (a slow or lost reply); `fail_next` answers the next requests with a canned
non-JSON error (a proxy's 502) without touching Redis.
"""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

__all__ = ["UpstashEndpoint"]

JSONValue = Any
"""What `json.dumps` takes: the result of a command, converted."""

_SINGLE, _PIPELINE, _MULTI_EXEC = "/", "/pipeline", "/multi-exec"

# For redis-py versions whose errors lack `status_code` (before 6): the prefix that the
# parser stripped from the server's text, by exception class.
_PREFIX_BY_CLASS: dict[type[Exception], str] = {
    redis.exceptions.NoScriptError: "NOSCRIPT",
    redis.exceptions.ReadOnlyError: "READONLY",
    redis.exceptions.ExecAbortError: "EXECABORT",
    redis.exceptions.BusyLoadingError: "LOADING",
    redis.exceptions.NoPermissionError: "NOPERM",
    redis.exceptions.OutOfMemoryError: "OOM",
}


class _BadRequest(Exception):
    """The HTTP request itself is malformed: answered 400 without reaching Redis."""


class _ServerReplyError(Exception):
    """Redis answered with an error reply; the text is the server's, prefix included."""


class _RedisUnavailable(Exception):
    """Redis could not be reached or did not answer in time."""


def _redis_error_text(exc: redis.exceptions.RedisError) -> str:
    """Rebuild the server's error text (``NOSCRIPT No matching script...``).

    redis-py strips a known code prefix (``ERR``, ``NOSCRIPT``, ...) from the message and
    keeps it in ``status_code``; an unknown code stays in the message.
    """
    message = str(exc)
    code = getattr(exc, "status_code", None)
    if code:
        return f"{code} {message}"
    prefix = _PREFIX_BY_CLASS.get(type(exc))
    if prefix is not None:
        return f"{prefix} {message}"
    first = message.split(" ", 1)[0]
    if first.isalpha() and first.isupper():
        return message
    return f"ERR {message}"


def _is_error_reply(exc: redis.exceptions.RedisError) -> bool:
    """True when Redis itself answered with an error (as opposed to a network failure)."""
    if getattr(exc, "status_code", None):
        return True
    if isinstance(exc, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)):
        return False
    return isinstance(exc, redis.exceptions.ResponseError)


def _encode_reply(value: object, b64: bool) -> JSONValue:
    """Convert a raw redis-py RESP2 reply into the JSON shape of Upstash's ``result``."""
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, bytes):
        if not b64:
            return value.decode("utf-8", errors="replace")
        return "OK" if value == b"OK" else base64.b64encode(value).decode("ascii")
    if isinstance(value, (list, tuple)):
        return [_encode_reply(item, b64) for item in value]
    if isinstance(value, redis.exceptions.RedisError):
        # An error nested in an array (a script's table, EXEC): report it for the whole reply.
        raise _ServerReplyError(_redis_error_text(value))
    raise TypeError(f"cannot encode a Redis reply of type {type(value).__name__}")


def _command_args(command: object) -> list[bytes]:
    """Validate one JSON command and turn it into the bytes redis-py sends."""
    if not isinstance(command, list) or not command:
        raise _BadRequest("ERR the command must be a non-empty JSON array")
    args: list[bytes] = []
    for item in command:
        if isinstance(item, str):
            args.append(item.encode())
        elif isinstance(item, int) and not isinstance(item, bool):
            args.append(str(item).encode())
        elif isinstance(item, float):
            args.append(repr(item).encode())
        else:
            raise _BadRequest(f"ERR unsupported argument type: {type(item).__name__}")
    return args


def _command_name(command: object) -> str:
    """``SET``, ``EVALSHA``...: the name a command is counted under."""
    if isinstance(command, list) and command and isinstance(command[0], str):
        return command[0].upper()
    return "?"


class _Server(ThreadingHTTPServer):
    """A threading HTTP server that can cut its open (keep-alive) connections on stop."""

    daemon_threads = True
    request_queue_size = 128  # the default 5 resets bursts of concurrent connections

    def __init__(self, address: tuple[str, int], endpoint: UpstashEndpoint) -> None:
        self.endpoint = endpoint
        self._lock = threading.Lock()
        self._open_connections: set[socket.socket] = set()
        self._open_threads: set[threading.Thread] = set()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self._serve_connection, args=(request, client_address), daemon=True
        )
        with self._lock:
            self._open_connections.add(request)
            self._open_threads.add(thread)
        thread.start()

    def _serve_connection(self, request: Any, client_address: Any) -> None:
        try:
            self.process_request_thread(request, client_address)
        finally:
            with self._lock:
                self._open_connections.discard(request)
                self._open_threads.discard(threading.current_thread())

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Stay quiet: a connection cut by `stop` or by the client is not news."""

    def cut_connections(self, timeout: float) -> None:
        """Shut down every open connection and wait (bounded) for its thread to end."""
        with self._lock:
            connections = list(self._open_connections)
            threads = list(self._open_threads)
        for conn in connections:
            with contextlib.suppress(OSError):  # already closed by the client
                conn.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))


class _Handler(BaseHTTPRequestHandler):
    """One HTTP connection; every request is handed to the endpoint."""

    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive, as httpx expects
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms stall
    server_version = "UpstashEndpoint/1"

    def log_message(self, format: str, *args: Any) -> None:
        """No access log on stderr."""

    def do_POST(self) -> None:
        status, body, content_type = self.server.endpoint._handle(
            self.command, self.path, dict(self.headers.items()), self._read_body()
        )
        self._send(status, body, content_type)

    def do_GET(self) -> None:
        status, body, content_type = self.server.endpoint._handle(
            self.command, self.path, dict(self.headers.items()), b""
        )
        self._send(status, body, content_type)

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class UpstashEndpoint:
    """An Upstash-compatible REST endpoint on ``127.0.0.1``, backed by a real Redis.

    Usage::

        endpoint = UpstashEndpoint("redis://127.0.0.1:6400/0", token="secret").start()
        client = upstash_redis.Redis(url=endpoint.url, token="secret")
        ...
        endpoint.stop()         # connection refused from now on
        endpoint.start()        # same port, same URL

    :param redis_url: the Redis server that commands are forwarded to (redis-py URL syntax).
    :param token: the bearer token that requests must carry.
    :param host: the address to listen on.
    :param port: the port to listen on; 0 picks a free one at the first `start`, which later
        starts reuse.
    :param redis_timeout: socket timeout, in seconds, towards Redis (connect and read); a
        paused Redis then answers ``503`` instead of hanging the request for ever.

    Counters (read them from the test; `reset_counters` clears them):

    - `requests`: HTTP requests received, whatever their fate (401s and `fail_next` included).
    - `statuses`: ``Counter`` of HTTP status codes sent.
    - `commands`: ``Counter`` of commands forwarded to Redis, by upper-case name
      (``EVALSHA``, ``EVAL``, ``SCRIPT``...); each command of a pipeline counts once.
    - `last_headers`: the headers of the last request, as a dict.

    Faults:

    - `stop` / `start`: unreachable, then back on the same port.
    - `reply_delay`: seconds to wait after running a command and before answering.
    - `fail_next`: answer the next requests with a canned status and body, Redis untouched.

    Thread-safe; the counters are updated under a lock before the reply is sent.
    """

    def __init__(
        self,
        redis_url: str,
        token: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        redis_timeout: float | None = 5.0,
    ) -> None:
        self.redis_url = redis_url
        self.token = token
        self.host = host
        self._port = port
        self.redis_timeout = redis_timeout
        self.reply_delay: float = 0.0
        self.requests = 0
        self.statuses: Counter[int] = Counter()
        self.commands: Counter[str] = Counter()
        self.last_headers: dict[str, str] = {}
        self._lock = threading.Lock()
        self._failures: list[tuple[int, bytes, str]] = []
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._redis: redis.Redis | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The TCP port; 0 until the first `start` when it was left to the system."""
        return self._port

    @property
    def url(self) -> str:
        """The REST URL to give the client (``UPSTASH_REDIS_REST_URL``)."""
        if not self._port:
            raise RuntimeError("the endpoint has no port yet: call start() first")
        return f"http://{self.host}:{self._port}"

    @property
    def running(self) -> bool:
        """True between `start` and `stop`."""
        return self._server is not None

    def start(self) -> UpstashEndpoint:
        """Listen (on the same port as before, if any) and serve on a background thread.

        The socket is bound and listening when this returns, so the first request cannot be
        refused. Raises ``OSError`` when the port is taken.
        """
        if self._server is not None:
            return self
        client = redis.Redis.from_url(
            self.redis_url,
            decode_responses=False,
            socket_timeout=self.redis_timeout,
            socket_connect_timeout=self.redis_timeout,
            retry=Retry(NoBackoff(), 0),  # a retried EVALSHA would run twice
        )
        client.response_callbacks.clear()  # raw RESP2 replies: bytes, ints, lists, None
        try:
            server = _Server((self.host, self._port), self)
        except BaseException:
            client.close()
            raise
        self._redis = client
        self._server = server
        self._stopping.clear()
        self._port = server.server_address[1]
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"upstash-endpoint-{self._port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop listening and cut open connections: clients get connection errors.

        Waits at most about `timeout` seconds for in-flight requests to end. Idempotent.
        """
        server, thread, client = self._server, self._thread, self._redis
        if server is None:
            return
        self._server = self._thread = self._redis = None
        self._stopping.set()
        server.shutdown()
        server.server_close()
        server.cut_connections(timeout)
        if thread is not None:
            thread.join(timeout)
        if client is not None:
            client.close()

    def restart(self) -> UpstashEndpoint:
        """`stop`, then `start` on the same port."""
        self.stop()
        return self.start()

    def __enter__(self) -> UpstashEndpoint:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"url={self.url!r}" if self._port else "not started"
        running = "running" if self.running else "stopped"
        return f"<UpstashEndpoint {state} {running} requests={self.requests}>"

    # -- test hooks --------------------------------------------------------------------------

    def reset_counters(self) -> None:
        """Zero `requests`, `statuses` and `commands`."""
        with self._lock:
            self.requests = 0
            self.statuses.clear()
            self.commands.clear()

    def fail_next(
        self,
        times: int = 1,
        *,
        status: int = 502,
        body: bytes = b"<html><body>502 Bad Gateway</body></html>",
        content_type: str = "text/html",
    ) -> None:
        """Answer the next `times` requests with this canned response, Redis untouched.

        The default, a proxy's HTML 502, is not JSON: the client treats it like a network
        error and retries it ``rest_retries`` times.
        """
        with self._lock:
            self._failures.extend([(status, body, content_type)] * times)

    # -- request handling --------------------------------------------------------------------

    def _handle(
        self, method: str, raw_path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, bytes, str]:
        """Serve one HTTP request: returns ``(status, body, content type)``."""
        parts = urlsplit(raw_path)
        path = "/" + parts.path.strip("/")
        with self._lock:
            self.requests += 1
            self.last_headers = headers
            failure = self._failures.pop(0) if self._failures else None
        if failure is not None:
            return self._count(*failure)
        if not self._authorized(headers, parts.query):
            return self._json(HTTPStatus.UNAUTHORIZED, {"error": "Unauthorized"})
        if method != "POST" or path not in (_SINGLE, _PIPELINE, _MULTI_EXEC):
            return self._json(
                HTTPStatus.NOT_FOUND,
                {"error": f"ERR only POST to /, /pipeline or /multi-exec: {method} {path}"},
            )
        b64 = _header(headers, "Upstash-Encoding", "").lower() == "base64"
        try:
            payload = json.loads(body)
            if path == _SINGLE:
                status, answer = self._run_single(payload, b64)
            else:
                status, answer = self._run_batch(payload, b64, transaction=path == _MULTI_EXEC)
        except (ValueError, _BadRequest) as exc:  # JSONDecodeError is a ValueError
            status, answer = HTTPStatus.BAD_REQUEST, {"error": _bad_request_text(exc)}
        except _RedisUnavailable as exc:
            status, answer = HTTPStatus.SERVICE_UNAVAILABLE, {"error": str(exc)}
        except Exception as exc:  # a bug here: say so in the reply rather than drop the line
            status, answer = HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"ERR endpoint: {exc!r}"}
        if self.reply_delay > 0:
            self._stopping.wait(self.reply_delay)  # `stop` cuts the wait short
        return self._json(status, answer)

    def _authorized(self, headers: dict[str, str], query: str) -> bool:
        supplied = _header(headers, "Authorization", "")
        if supplied == f"Bearer {self.token}":
            return True
        return parse_qs(query).get("_token", [None])[0] == self.token

    def _run_single(self, command: object, b64: bool) -> tuple[int, JSONValue]:
        args = _command_args(command)
        self._count_commands([command])
        try:
            return HTTPStatus.OK, {"result": _encode_reply(self._execute(args), b64)}
        except _ServerReplyError as exc:
            return HTTPStatus.BAD_REQUEST, {"error": str(exc)}

    def _run_batch(self, commands: object, b64: bool, transaction: bool) -> tuple[int, JSONValue]:
        if not isinstance(commands, list) or not commands:
            raise _BadRequest("ERR a pipeline must be a non-empty JSON array of commands")
        batch = [_command_args(command) for command in commands]
        self._count_commands(commands)
        replies: list[object] = []
        if transaction:
            replies = self._execute_transaction(batch)
        else:
            for args in batch:
                try:
                    replies.append(self._execute(args))
                except _ServerReplyError as exc:
                    replies.append(exc)
        return HTTPStatus.OK, [_batch_entry(reply, b64) for reply in replies]

    def _execute(self, args: Sequence[bytes]) -> object:
        client = self._redis
        if client is None:
            raise _RedisUnavailable("ERR the endpoint is stopping")
        try:
            return client.execute_command(*args)  # type: ignore[no-untyped-call]
        except redis.exceptions.RedisError as exc:
            if _is_error_reply(exc):
                raise _ServerReplyError(_redis_error_text(exc)) from exc
            raise _RedisUnavailable(f"ERR Redis is unavailable: {exc}") from exc

    def _execute_transaction(self, batch: Sequence[Sequence[bytes]]) -> list[object]:
        client = self._redis
        if client is None:
            raise _RedisUnavailable("ERR the endpoint is stopping")
        try:
            with client.pipeline(transaction=True) as pipe:
                for args in batch:
                    pipe.execute_command(*args)  # type: ignore[no-untyped-call]
                return list(pipe.execute(raise_on_error=False))
        except redis.exceptions.RedisError as exc:
            if _is_error_reply(exc):
                raise _BadRequest(_redis_error_text(exc)) from exc
            raise _RedisUnavailable(f"ERR Redis is unavailable: {exc}") from exc

    def _count_commands(self, commands: Sequence[object]) -> None:
        with self._lock:
            self.commands.update(_command_name(command) for command in commands)

    def _count(self, status: int, body: bytes, content_type: str) -> tuple[int, bytes, str]:
        with self._lock:
            self.statuses[status] += 1
        return status, body, content_type

    def _json(self, status: int, answer: JSONValue) -> tuple[int, bytes, str]:
        body = json.dumps(answer, separators=(",", ":")).encode()
        return self._count(int(status), body, "application/json")


def _batch_entry(reply: object, b64: bool) -> JSONValue:
    """One element of a pipeline's answer: ``{"result": ...}`` or ``{"error": ...}``."""
    if isinstance(reply, _ServerReplyError):
        return {"error": str(reply)}
    try:
        return {"result": _encode_reply(reply, b64)}
    except _ServerReplyError as exc:
        return {"error": str(exc)}


def _header(headers: dict[str, str], name: str, default: str) -> str:
    """Case-insensitive header lookup in a plain dict."""
    lowered = name.lower()
    for key, value in headers.items():
        if key.lower() == lowered:
            return value
    return default


def _bad_request_text(exc: Exception) -> str:
    if isinstance(exc, _BadRequest):
        return str(exc)
    return f"ERR failed to parse the request body as JSON: {exc}"
