"""The in-process store: keys with their states and expiries, LRU eviction and the overrides,
under one lock (:class:`Keyspace`); the Python twin of the scripts decides
(:mod:`ratelimit._driver` and :mod:`ratelimit._algorithms`)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from ratelimit import _driver
from ratelimit._algorithms import State
from ratelimit.errors import ConfigurationError
from ratelimit.stores.base import AsyncStore, Plan, Reply, Store

__all__ = ["Keyspace", "MemoryStore"]


class Keyspace:
    """What the scripts reach with ``redis.call``, for the Python twin: keys holding a state
    until an expiry, at most ``max_keys`` of them (least recently used dropped first), and the
    overrides. The driver (:mod:`ratelimit._driver`) reads and writes it under :attr:`lock`."""

    def __init__(self, max_keys: int) -> None:
        self.max_keys = max_keys
        #: key -> [state, expires_at_ms], least recently used first; a charge changes the
        #: entry in place
        self.entries: OrderedDict[str, list[Any]] = OrderedDict()
        #: held by every call of the store (the scripts' atomicity)
        self.lock = threading.Lock()
        self._writes = 0
        # override key -> (its plan, expiry in ms or None), oldest set first
        self._overrides: OrderedDict[str, tuple[Plan, int | None]] = OrderedDict()
        #: True while any identifier may have an override here: the limiter's fast path for one
        #: policy reads it (a plain attribute: it is read on every check) and takes the
        #: driver's check, which resolves overrides, when it is true.
        self.has_overrides = False

    def get(self, key: str, now: int | None) -> State | None:
        """The state at ``key`` (the stored list itself: a change to it is a write that keeps
        the expiry), None when absent or expired at ``now`` (milliseconds; None: whatever is
        kept). Marks the key recently used."""
        entry = self.entries.get(key)
        if entry is None:
            return None
        self.entries.move_to_end(key)
        return entry[0] if now is None or entry[1] >= now else None

    def put(self, key: str, state: State, expires_at: int, now: int) -> None:
        """Keep ``state`` at ``key`` until ``expires_at`` (milliseconds), as most recently used;
        a new key beyond ``max_keys`` drops the least recently used."""
        entry = self.entries.get(key)
        if entry is None:
            self.entries[key] = [state, expires_at]
            self._added(now)
        else:
            self.entries.move_to_end(key)
            entry[0] = state
            entry[1] = expires_at

    def drop(self, key: str) -> int:
        """Forget ``key``; returns 1 when it was kept, else 0 (as ``DEL``)."""
        return 0 if self.entries.pop(key, None) is None else 1

    def _added(self, now: int) -> None:
        """A key was added: drop the least recently used beyond max_keys and, every so often,
        expired keys at the cold end."""
        entries = self.entries
        if len(entries) > self.max_keys:
            entries.popitem(last=False)
        self._writes += 1
        if self._writes & 63 == 0:
            for _ in range(32):
                key, (_, expires_at) = next(iter(entries.items()))
                if expires_at >= now or len(entries) == 1:
                    break
                del entries[key]

    def put_override(self, key: str, plan: Plan, expires: int | None, now: int) -> None:
        """Keep ``plan`` as the override at ``key`` until ``expires`` (milliseconds; None: for
        good), as the one set last; beyond ``max_keys`` overrides, expired ones go first, then
        the one set longest ago."""
        overrides = self._overrides
        overrides.pop(key, None)
        if len(overrides) >= self.max_keys:
            for old in [k for k, (_, at) in overrides.items() if at is not None and at <= now]:
                del overrides[old]
        while len(overrides) >= self.max_keys:
            overrides.popitem(last=False)
        overrides[key] = (plan, expires)
        self.has_overrides = True

    def override(self, key: str, now: int | None) -> Plan | None:
        """The override plan at ``key``, unless absent or expired at ``now`` (then dropped;
        None: not checked)."""
        entry = self._overrides.get(key)
        if entry is None:
            return None
        if now is not None and entry[1] is not None and entry[1] <= now:
            del self._overrides[key]
            self.has_overrides = bool(self._overrides)
            return None
        return entry[0]


class MemoryStore(Keyspace, Store, AsyncStore):
    """Keeps limiter state in this process; serves :class:`~ratelimit.Limiter` and
    :class:`~ratelimit.AsyncLimiter`.

    Decisions are those of the Lua scripts, computed by their Python twin with the same
    integer arithmetic under one lock: thread-safe, a check never waits on I/O, and the async
    methods never block the loop for longer than that lock. Time comes from the limiter (its
    ``clock``, else ``time.time``). Keys whose TTL has passed are dropped as writes go by.

    :param max_keys: the most keys held (one per identifier and policy). A new key beyond it
        drops the least recently used one, which forgets that identifier's state for that
        policy (it starts again with a full allowance). A limiter refuses a store with fewer
        ``max_keys`` than it has policies. Overrides are kept apart, at most ``max_keys`` of
        them: expired ones go first, then the one set longest ago.
    :raises ConfigurationError: for a ``max_keys`` that is not a positive int.
    """

    needs_clock = True

    def __init__(self, max_keys: int = 100_000) -> None:
        if isinstance(max_keys, bool) or not isinstance(max_keys, int) or max_keys < 1:
            raise ConfigurationError(f"max_keys must be a positive integer, got {max_keys!r}")
        super().__init__(max_keys)

    def __len__(self) -> int:
        return len(self.entries)

    def __repr__(self) -> str:
        return f"MemoryStore(max_keys={self.max_keys}, keys={len(self.entries)})"

    # The Store methods: each runs its entry of the driver under the lock.

    def evaluate(self, plan: Plan, keys: Sequence[str], now: int | None, cost: int,
                 charge: bool) -> Reply:  # fmt: skip
        """Run ``plan`` on ``keys`` at ``now`` (required: milliseconds). Never raises StoreError."""
        now = _required(now)
        # the common case, the fast path: one policy that can hold the cost (check_one's
        # condition; a larger cost is the driver's never-holdable denial), no override
        if len(plan.steps) == 1 and not self.has_overrides and cost <= plan.steps[0][1]:
            allowed, remaining, reset, retry, _ = self.check_one(plan.steps[0], keys[0], now,
                                                                 cost, charge)  # fmt: skip
            return [allowed, allowed, remaining, reset, retry]
        lock = self.lock
        lock.acquire()  # (acquire and try/finally cost less than `with`: measured)
        try:
            return _driver.check(self, plan, keys, now, cost, charge)
        finally:
            lock.release()

    #: One policy's ``step`` of a plan on its ``key`` at ``now`` (milliseconds), ignoring
    #: overrides: ``(allowed, remaining, reset_ms, retry_ms, new_state)``, with the state
    #: stored. What :meth:`evaluate` does for one policy, for a caller that wants the numbers
    #: without the reply list (the limiter's memory fast path): the driver's own function,
    #: which takes the lock, so that nothing runs in between.
    check_one = _driver.check_one

    def delete(self, keys: Sequence[str]) -> None:
        """Forget an identifier's state (see :meth:`Store.delete`): ``keys`` are its state keys
        then its override key."""
        with self.lock:
            _driver.forget(self, keys)

    def acquire(self, plan: Plan, keys: Sequence[str], now: int | None, cost: int,
                lease: str) -> Reply:  # fmt: skip
        """Check every policy; when all allow, charge ``cost`` to the rate policies and take a
        slot for ``lease`` in each Concurrency policy (an override's when one applies). The
        reply is ``evaluate``'s followed by ``now``. Never raises StoreError."""
        with self.lock:
            return _driver.acquire(self, plan, keys, _required(now), cost, lease)

    def release(self, keys: Sequence[str], lease: str) -> int:
        """Free ``lease``'s slots in these Concurrency keys; returns how many were freed."""
        with self.lock:
            return _driver.release(self, keys, lease)

    def renew(self, keys: Sequence[str], now: int | None, lease: str,
              leases_ms: Sequence[int]) -> Reply:  # fmt: skip
        """Run ``lease`` until ``now + lease`` again in every key where it is still in flight.
        Returns ``[1 when all were, else 0, now]``."""
        with self.lock:
            return _driver.renew(self, keys, _required(now), lease, leases_ms)

    def settle(self, plan: Plan, keys: Sequence[str], now: int | None, acquired: int,
               charged: Sequence[int], actual: int, own: Plan | None = None,
               own_keys: Sequence[str] = ()) -> list[int]:  # fmt: skip
        """Leave each rate policy of ``plan`` as if the lease charged ``charged[i]`` at
        ``acquired`` had cost ``actual``, the state written under an override (``own`` and
        ``own_keys``: the limiter's plan and state keys) living until full under ``own`` too;
        returns the cost now charged in each (see lua/settle.lua)."""
        with self.lock:
            return _driver.settle(self, plan, keys, _required(now), acquired, charged, actual,
                                  own, own_keys)  # fmt: skip

    # Overrides: kept apart from the keys, at most max_keys of them.

    def set_override(self, key: str, plan: Plan, ttl_ms: int | None, now: int | None) -> None:
        """Keep ``plan`` as the override at ``key``, until ``now + ttl_ms`` or for good, and
        keep the state its policies will read until full under them (the driver's
        ``set_override``)."""
        now = _required(now)
        keys = [*plan.state_keys(key), key]
        with self.lock:
            _driver.set_override(self, plan, keys, now, ttl_ms)

    def get_override(self, key: str, now: int | None) -> str | None:
        """The plan text of the override at ``key``, or None."""
        with self.lock:
            plan = self.override(key, now)
            return None if plan is None else plan.spec

    def delete_override(self, key: str) -> None:
        """Forget the override at ``key``."""
        with self.lock:
            self._overrides.pop(key, None)
            self.has_overrides = bool(self._overrides)

    async def aevaluate(self, plan: Plan, keys: Sequence[str], now: int | None, cost: int,
                        charge: bool) -> Reply:  # fmt: skip
        """As :meth:`evaluate`; holds the lock only for the computation."""
        return self.evaluate(plan, keys, now, cost, charge)

    async def adelete(self, keys: Sequence[str]) -> None:
        """As :meth:`delete`."""
        self.delete(keys)

    async def aacquire(self, plan: Plan, keys: Sequence[str], now: int | None, cost: int,
                       lease: str) -> Reply:  # fmt: skip
        """As :meth:`acquire`."""
        return self.acquire(plan, keys, now, cost, lease)

    async def arelease(self, keys: Sequence[str], lease: str) -> int:
        """As :meth:`release`."""
        return self.release(keys, lease)

    async def arenew(self, keys: Sequence[str], now: int | None, lease: str,
                     leases_ms: Sequence[int]) -> Reply:  # fmt: skip
        """As :meth:`renew`."""
        return self.renew(keys, now, lease, leases_ms)

    async def asettle(self, plan: Plan, keys: Sequence[str], now: int | None, acquired: int,
                      charged: Sequence[int], actual: int, own: Plan | None = None,
                      own_keys: Sequence[str] = ()) -> list[int]:  # fmt: skip
        """As :meth:`settle`."""
        return self.settle(plan, keys, now, acquired, charged, actual, own, own_keys)

    async def aset_override(self, key: str, plan: Plan, ttl_ms: int | None,
                            now: int | None) -> None:  # fmt: skip
        """As :meth:`set_override`."""
        self.set_override(key, plan, ttl_ms, now)

    async def aget_override(self, key: str, now: int | None) -> str | None:
        """As :meth:`get_override`."""
        return self.get_override(key, now)

    async def adelete_override(self, key: str) -> None:
        """As :meth:`delete_override`."""
        self.delete_override(key)


def _required(now: int | None) -> int:
    """``now``, which the memory store always needs from the limiter (it has no clock)."""
    if now is None:
        raise ConfigurationError("MemoryStore needs the time from the limiter")
    return now
