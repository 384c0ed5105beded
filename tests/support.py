"""What many test files share: the fake clock that tests step instead of sleeping, and the
free loopback ports for the servers they start. One copy of each (tests/django included)."""

from __future__ import annotations

import socket
import threading

__all__ = ["HOST", "START", "Clock", "free_port"]

HOST = "127.0.0.1"
START = 1_700_000_000.0  # the fake clock's first reading, seconds
_BUS_PORT_OFFSET = 10000  # a cluster node's bus port is its port + 10000


class Clock:
    """A clock for ``clock=``: reads seconds as ``time.time`` does; tests step it instead of
    sleeping. It keeps whole milliseconds (``ms``), so steps add up exactly.

    ``advance(ms)`` and ``set(ms_from_start)`` step in milliseconds; ``now`` reads and sets
    seconds (``clock.now += 0.5``). ``sleep`` and ``asleep`` stand in for a limiter's sleep:
    they record each wait in ``slept`` and move the clock by it.
    """

    def __init__(self, start: float = START) -> None:
        self.ms = round(start * 1000)
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.ms / 1000

    @property
    def now(self) -> float:
        return self.ms / 1000

    @now.setter
    def now(self, seconds: float) -> None:
        self.ms = round(seconds * 1000)

    def advance(self, ms: int) -> None:
        self.ms += ms

    def set(self, ms_from_start: int) -> None:
        self.ms = round(START * 1000) + ms_from_start

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds

    async def asleep(self, seconds: float) -> None:
        self.sleep(seconds)


_ports_lock = threading.Lock()
_ports_given: set[int] = set()


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def free_port(*, with_bus: bool = False) -> int:
    """A port of 127.0.0.1 that is free now and not handed out before by this process.

    The OS picks it (bind to port 0). With `with_bus`, ``port + 10000`` (a cluster node's bus
    port) must be free too. Another process may still grab it before the server binds; `Server`
    then retries with a new port. Raises OSError when no port is found in 200 tries.
    """
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((HOST, 0))
            port = int(sock.getsockname()[1])
        with _ports_lock:
            if port in _ports_given or (port - _BUS_PORT_OFFSET) in _ports_given:
                continue
            if with_bus:
                bus = port + _BUS_PORT_OFFSET
                if bus > 65535 or bus in _ports_given or not _bindable(bus):
                    continue
            _ports_given.add(port)
            return port
    raise OSError(f"found no free port on {HOST} (with_bus={with_bus})")
