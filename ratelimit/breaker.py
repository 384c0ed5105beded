"""The circuit breaker that keeps a failing store from costing a timeout per request."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Literal

from ratelimit._logging import logger
from ratelimit.errors import ConfigurationError

__all__ = ["CircuitBreaker"]


State = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    """Stops calls to a store that has just failed, for a back-off that grows while it keeps
    failing, then lets one probe through.

    - ``closed``: every check goes to the store.
    - ``open``: after a failure, for ``base * 2**(failures - 1)`` seconds (at most ``cap``),
      stretched by up to ``jitter`` so that many app servers do not probe in step, no check goes
      to the store: the limiter's ``on_error`` decides at once.
    - ``half_open``: the back-off is over and one check (the probe) goes to the store; the others
      are decided by ``on_error`` until it answers. Success closes the breaker; failure opens it
      again for a longer back-off.

    Logs one warning (logger ``"ratelimit"``) when an outage starts and one when it ends, not one
    per request. Every remote store has one (``store.breaker``), shared by all limiters on that
    store, so an outage is noticed once. Thread-safe; never blocks.

    Raises ConfigurationError for a non-positive ``base`` or a ``cap`` below it.
    """

    __slots__ = ("_clock", "_listeners", "_lock", "_name", "_outage_started", "_reopen_at",
                 "base", "cap", "failures", "jitter", "last_error", "state",
                 "suppressed")  # fmt: skip

    def __init__(
        self,
        base: float = 0.25,
        cap: float = 5.0,
        jitter: float = 0.2,
        *,
        clock: Callable[[], float] = time.monotonic,
        name: str = "store",
    ) -> None:
        if not base > 0 or not cap >= base or not 0 <= jitter <= 1:
            raise ConfigurationError(
                f"breaker needs 0 < base <= cap and 0 <= jitter <= 1, got base={base!r}, "
                f"cap={cap!r}, jitter={jitter!r}"
            )
        self.base = base
        self.cap = cap
        self.jitter = jitter
        self._clock = clock
        self._name = name
        self._lock = threading.Lock()
        self._listeners: list[Callable[[str, CircuitBreaker], object]] = []
        #: "closed", "open" or "half_open".
        self.state: State = "closed"
        #: Failures in a row (0 while closed).
        self.failures = 0
        #: The error that opened the breaker last, if any.
        self.last_error: BaseException | None = None
        #: Checks decided by on_error without a call, in this outage.
        self.suppressed = 0
        self._reopen_at = 0.0
        self._outage_started = 0.0

    def __repr__(self) -> str:
        return f"CircuitBreaker(state={self.state!r}, failures={self.failures})"

    @classmethod
    def for_store(cls, breaker: CircuitBreaker | bool, name: str) -> CircuitBreaker | None:
        """A store's ``breaker=`` argument as its breaker: True, a new one; False, none; or the
        breaker given. Raises ConfigurationError for anything else."""
        if breaker is True:
            return cls(name=name)
        if breaker is False:
            return None
        if not isinstance(breaker, CircuitBreaker):
            raise ConfigurationError(f"breaker must be a CircuitBreaker or False, got {breaker!r}")
        return breaker

    def child(self, name: str) -> CircuitBreaker:
        """A breaker with these settings and these listeners (present and future), for one
        part of a store that fails on its own, such as one master of a cluster."""
        breaker = CircuitBreaker(self.base, self.cap, self.jitter, clock=self._clock, name=name)
        breaker._listeners = self._listeners
        return breaker

    def subscribe(self, listener: Callable[[str, CircuitBreaker], object]) -> None:
        """Call ``listener(event, breaker)`` with ``"open"`` when an outage starts and
        ``"closed"`` when it ends. Exceptions from listeners are logged and ignored."""
        self._listeners.append(listener)

    @property
    def retry_after(self) -> float:
        """Seconds until the next probe may go to the store (0 when closed)."""
        if self.state == "closed":
            return 0.0
        return max(self._reopen_at - self._clock(), 0.0)

    def allow(self) -> bool:
        """May this check call the store? False while open and while a probe is out."""
        if self.state == "closed":
            return True
        with self._lock:
            if self.state == "open" and self._clock() >= self._reopen_at:
                self.state = "half_open"
                return True
            self.suppressed += 1
            return False

    def success(self) -> None:
        """The store answered: close the breaker (logs the end of an outage). Cheap when
        already closed."""
        with self._lock:
            if self.state != "half_open":
                # closed: nothing to do. open: a call sent before the breaker opened came back
                # late; the probe, not a straggler, ends the outage, so it is logged once.
                return
            took = self._clock() - self._outage_started
            suppressed = self.suppressed
            self.state = "closed"
            self.failures = 0
            self.suppressed = 0
        logger().warning(
            "ratelimit: %s recovered after %.1fs; %d checks were decided by on_error meanwhile",
            self._name,
            took,
            suppressed,
        )
        self._emit("closed")

    def failure(self, error: BaseException) -> None:
        """The store failed: open (or re-open) the breaker for the next back-off."""
        import random  # imported on the first failure, not at cold start

        with self._lock:
            now = self._clock()
            if self.state == "open":
                # A call already on its way when the breaker opened: the outage is known. The
                # back-off grows per failed probe, not per request that was in flight.
                self.last_error = error
                return
            starting = self.state == "closed"
            self.failures += 1
            backoff = min(self.cap, self.base * 2 ** min(self.failures - 1, 30))
            self._reopen_at = now + backoff * (1 + self.jitter * random.random())
            self.state = "open"
            self.last_error = error
            if starting:
                self._outage_started = now
                self.suppressed = 0
        if starting:
            logger().warning(
                "ratelimit: %s failed (%s: %s); checks follow the limiters' on_error until it "
                "answers again",
                self._name,
                type(error.__cause__ or error).__name__,
                error.__cause__ or error,
            )
            self._emit("open")

    def _emit(self, event: str) -> None:
        for listener in self._listeners:
            try:
                listener(event, self)
            except Exception:
                logger().exception("ratelimit: breaker listener %r failed", listener)
