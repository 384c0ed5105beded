"""The circuit breaker that keeps a failing store from costing a timeout per request."""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable
from typing import Literal

from ratelimit._logging import logger
from ratelimit.errors import ConfigurationError

__all__ = ["CircuitBreaker"]


State = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    """Stops calls to a store that has just failed, for a back-off that grows while it keeps
    failing, then lets one probe through.

    :attr:`state` is ``"closed"`` (every check goes to the store), ``"open"`` (after a
    failure, for ``base * 2**(failures - 1)`` seconds, at most ``cap``, stretched by up to
    ``jitter``: no check goes to the store, the limiter's ``on_error`` decides at once) or
    ``"half_open"`` (the back-off is over: one check, the probe, goes to the store and the
    others are decided by ``on_error``; the probe's success closes the breaker, its failure
    opens it again for a longer back-off). Only a probe's own answer, reported with the ticket
    :meth:`admit` gave it, closes or reopens the breaker. Logs one warning (logger
    ``"ratelimit"``) when an outage starts and one when it ends. Every remote store has one
    (``store.breaker``), shared by all limiters on that store. Thread-safe; never blocks. See
    the Failure policy page of the docs.

    :param base: the first back-off, in seconds; positive.
    :param cap: the longest back-off, in seconds; at least ``base``, finite.
    :param jitter: the largest random stretch of a back-off, as a fraction (0 to 1), so that
        many app servers do not probe in step.
    :param clock: the monotonic clock, in seconds.
    :param name: what the log lines call the store.
    :param probe_timeout: seconds after which a probe that never answered (cancelled,
        interrupted or lost) is given up and the next check probes instead; default ``cap``.
    :raises ConfigurationError: for a non-positive ``base``, a ``cap`` below it, a ``jitter``
        outside 0 to 1 or a non-positive ``probe_timeout``.
    """

    __slots__ = ("__weakref__", "_clock", "_generation", "_listeners", "_lock", "_name",
                 "_outage_started", "_probe_until", "_reopen_at", "base", "cap", "failures",
                 "jitter", "last_error", "probe_timeout", "state", "suppressed")  # fmt: skip

    def __init__(
        self,
        base: float = 0.25,
        cap: float = 5.0,
        jitter: float = 0.2,
        *,
        clock: Callable[[], float] = time.monotonic,
        name: str = "store",
        probe_timeout: float | None = None,
    ) -> None:
        numbers = (base, cap, jitter, cap if probe_timeout is None else probe_timeout)
        if (
            not all(type(n) in (int, float) for n in numbers)
            or not 0 < base <= cap < float("inf")
            or not 0 <= jitter <= 1
            or not 0 < numbers[3] < float("inf")
        ):
            raise ConfigurationError(
                f"breaker needs 0 < base <= cap and 0 <= jitter <= 1 and a finite positive "
                f"probe_timeout, got base={base!r}, cap={cap!r}, jitter={jitter!r}, "
                f"probe_timeout={probe_timeout!r}"
            )
        self.base = base
        self.cap = cap
        self.jitter = jitter
        #: Seconds after which a probe that never answered is given up.
        self.probe_timeout: float = numbers[3]
        self._clock = clock
        self._name = name
        self._lock = threading.Lock()
        self._listeners: list[_Listener] = []
        # Bumped at every change of state; a ticket is the generation that admitted the call.
        self._generation = 0
        self._probe_until = 0.0
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
        breaker = CircuitBreaker(self.base, self.cap, self.jitter, clock=self._clock, name=name,
                                 probe_timeout=self.probe_timeout)  # fmt: skip
        breaker._listeners = self._listeners
        return breaker

    def subscribe(self, listener: Callable[[str, CircuitBreaker], object]) -> None:
        """Call ``listener(event, breaker)`` with ``"open"`` when an outage starts and
        ``"closed"`` when it ends. Exceptions from listeners are logged and ignored.

        A bound method is held weakly: subscribing keeps its object alive no longer than the
        caller does (a limiter subscribes its own method, and a short-lived limiter must be
        collectable); it is dropped once its object is gone. Anything else is held strongly.
        """
        entry: _Listener
        if hasattr(listener, "__self__") and hasattr(listener, "__func__"):
            try:
                entry = weakref.WeakMethod(listener)
            except TypeError:  # an object that cannot be weakly referenced
                entry = _Strong(listener)
        else:
            entry = _Strong(listener)
        with self._lock:
            live = [e for e in self._listeners if e() is not None]
            live.append(entry)
            self._listeners[:] = live  # in place: children share the list

    @property
    def retry_after(self) -> float:
        """Seconds until the next probe may go to the store (0 when closed)."""
        if self.state == "closed":
            return 0.0
        return max(self._reopen_at - self._clock(), 0.0)

    def allow(self) -> bool:
        """May this check call the store? False while open and while a probe is out."""
        return self.admit() is not None

    def admit(self) -> int | None:
        """A ticket for one call to the store, or None when it must not call (open, or a probe
        is out). Pass the ticket to :meth:`success` or :meth:`failure` with the call's result.
        Never blocks for long (a short lock outside the closed state)."""
        if self.state == "closed":
            return self._generation
        with self._lock:
            now = self._clock()
            state: State = self.state  # read again under the lock
            if state == "closed":
                return self._generation
            if state == "open" and now >= self._reopen_at:
                self.state = "half_open"
                self._generation += 1
                self._probe_until = now + self.probe_timeout
                return self._generation
            if state == "half_open" and now >= self._probe_until:
                # The probe never answered (cancelled, interrupted, lost): probe again.
                self._probe_until = now + self.probe_timeout
                return self._generation
            self.suppressed += 1
            return None

    def success(self, ticket: int | None = None) -> None:
        """The call admitted with ``ticket`` answered. A probe's answer closes the breaker (and
        logs the end of the outage); any other call's changes nothing. Without a ticket, the
        answer counts as the probe's. Cheap when closed."""
        if self.state == "closed":
            return
        with self._lock:
            if self.state != "half_open" or ticket not in (None, self._generation):
                # open: a call sent before the breaker opened came back late; the probe, not a
                # straggler, ends the outage, so it is logged once.
                return
            took = self._clock() - self._outage_started
            suppressed = self.suppressed
            self.state = "closed"
            self._generation += 1
            self.failures = 0
            self.suppressed = 0
        logger().warning(
            "ratelimit: %s recovered after %.1fs; %d checks were decided by on_error meanwhile",
            self._name,
            took,
            suppressed,
        )
        self._emit("closed")

    def failure(self, error: BaseException, ticket: int | None = None) -> None:
        """The call admitted with ``ticket`` failed: open the breaker (closed), or reopen it
        for a longer back-off when the call was the probe (half open; without a ticket the
        failure counts as the current state's). A late failure of a call admitted before the
        last change of state only records ``error``: the back-off grows per failed probe, not
        per straggler."""
        import random  # imported on the first failure, not at cold start

        with self._lock:
            now = self._clock()
            if self.state == "open" or ticket not in (None, self._generation):
                # Open: the outage is known. An older ticket: a call admitted before the
                # last change of state (before this outage, or before the last one ended).
                self.last_error = error
                return
            starting = self.state == "closed"
            self.failures += 1
            backoff = min(self.cap, self.base * 2 ** min(self.failures - 1, 30))
            self._reopen_at = now + backoff * (1 + self.jitter * random.random())
            self.state = "open"
            self._generation += 1
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
        for entry in list(self._listeners):
            listener = entry()
            if listener is None:
                continue  # its object was collected; dropped at the next subscribe
            try:
                listener(event, self)
            except Exception:
                logger().exception("ratelimit: breaker listener %r failed", listener)


class _Strong:
    """A listener held strongly, called through the same ``entry()`` as a WeakMethod."""

    __slots__ = ("listener",)

    def __init__(self, listener: Callable[[str, CircuitBreaker], object]) -> None:
        self.listener = listener

    def __call__(self) -> Callable[[str, CircuitBreaker], object]:
        return self.listener


_Listener = Callable[[], Callable[[str, CircuitBreaker], object] | None]
