"""The in-process store: the Python twin of the scripts, under one lock."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence

from ratelimit.errors import ConfigurationError
from ratelimit.stores.base import AsyncStore, Plan, Reply, Store

__all__ = ["MemoryStore"]

_Entry = tuple[list[int], int]  # (state, expires_at_ms)


class MemoryStore(Store, AsyncStore):
    """Keeps limiter state in this process; serves :class:`Limiter` and :class:`AsyncLimiter`.

    Decisions are those of the Lua scripts, computed by their Python twin with the same integer
    arithmetic under one lock (so it is thread-safe; a check never waits on I/O and the async
    methods never block the loop for longer than that lock).

    It holds at most ``max_keys`` keys (one per identifier and policy). When a new key would
    exceed that, the least recently used key is dropped, which forgets that identifier's state
    for the policy (it starts again with a full allowance). Keys whose TTL has passed are
    dropped as writes go by. Time comes from the limiter (its ``clock``, else ``time.time``).

    ::

        limiter = rl.Limiter("10/second", store=rl.MemoryStore(max_keys=50_000))

    Raises ConfigurationError for a ``max_keys`` that is not a positive integer.
    """

    needs_clock = True

    def __init__(self, max_keys: int = 100_000) -> None:
        if isinstance(max_keys, bool) or not isinstance(max_keys, int) or max_keys < 1:
            raise ConfigurationError(f"max_keys must be a positive integer, got {max_keys!r}")
        self.max_keys = max_keys
        self._data: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self._writes = 0

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"MemoryStore(max_keys={self.max_keys}, keys={len(self._data)})"

    def evaluate(self, plan: Plan, keys: Sequence[str], now: int | None, cost: int,
                 charge: bool) -> Reply:  # fmt: skip
        """Run ``plan`` on ``keys`` at ``now`` (required: milliseconds). Never raises StoreError."""
        if now is None:
            raise ConfigurationError("MemoryStore needs the time from the limiter")
        data = self._data
        steps = plan.steps
        with self._lock:
            if len(steps) == 1:  # the common case, without the loops
                key = keys[0]
                check, limit, period, rate = steps[0]
                entry = data.get(key)
                stored = None
                if entry is not None:
                    data.move_to_end(key)
                    if entry[1] >= now:  # else expired: as good as absent
                        stored = entry[0]
                allowed, remaining, reset, retry, new = check(
                    stored, now, limit, period, rate, cost, charge
                )
                if new is not None:
                    data[key] = (new, now + reset)
                    if entry is None:
                        self._added(now)
                return [allowed, allowed, remaining, reset, retry]

            # several policies: look at all of them, then charge all or none
            reply = [1]
            stored_states = []
            for i in range(len(steps)):
                key = keys[i]
                check, limit, period, rate = steps[i]
                entry = data.get(key)
                stored = None
                if entry is not None:
                    data.move_to_end(key)
                    if entry[1] >= now:
                        stored = entry[0]
                stored_states.append(stored)
                result = check(stored, now, limit, period, rate, cost, False)
                if not result[0]:
                    reply[0] = 0
                reply += result[:4]
            if reply[0] and cost and charge:
                for i in range(len(steps)):
                    key = keys[i]
                    check, limit, period, rate = steps[i]
                    _, remaining, reset, _, new = check(
                        stored_states[i], now, limit, period, rate, cost, True
                    )
                    reply[4 * i + 2] = remaining
                    reply[4 * i + 3] = reset
                    added = key not in data
                    data[key] = (new, now + reset)  # type: ignore[assignment]
                    if added:
                        self._added(now)
            return reply

    def _added(self, now: int) -> None:
        """A key was added: drop the least recently used beyond max_keys and, every so often,
        expired keys at the cold end."""
        data = self._data
        if len(data) > self.max_keys:
            data.popitem(last=False)
        self._writes += 1
        if self._writes & 63 == 0:
            for _ in range(32):
                key, (_, expires_at) = next(iter(data.items()))
                if expires_at >= now or len(data) == 1:
                    break
                del data[key]

    def delete(self, keys: Sequence[str]) -> None:
        """Forget these keys."""
        with self._lock:
            for key in keys:
                self._data.pop(key, None)

    async def aevaluate(self, plan: Plan, keys: Sequence[str], now: int | None, cost: int,
                        charge: bool) -> Reply:  # fmt: skip
        """As :meth:`evaluate`; holds the lock only for the computation."""
        return self.evaluate(plan, keys, now, cost, charge)

    async def adelete(self, keys: Sequence[str]) -> None:
        """As :meth:`delete`."""
        self.delete(keys)
