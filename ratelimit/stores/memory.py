"""The in-process store: the Python twin of the scripts, under one lock."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from ratelimit._algorithms import SETTLES, Result, slots_check, take_slot
from ratelimit.errors import ConfigurationError
from ratelimit.stores.base import AsyncStore, Plan, Reply, Step, Store

__all__ = ["MemoryStore"]

_Entry = list[Any]  # [state, expires_at_ms]; changed in place by a charge


class MemoryStore(Store, AsyncStore):
    """Keeps limiter state in this process; serves :class:`Limiter` and :class:`AsyncLimiter`.

    Decisions are those of the Lua scripts, computed by their Python twin with the same integer
    arithmetic under one lock (so it is thread-safe; a check never waits on I/O and the async
    methods never block the loop for longer than that lock).

    It holds at most ``max_keys`` keys (one per identifier and policy). When a new key would
    exceed that, the least recently used key is dropped, which forgets that identifier's state
    for the policy (it starts again with a full allowance). A limiter refuses a store with fewer
    ``max_keys`` than it has policies, whose keys of one identifier would evict each other.
    Keys whose TTL has passed are dropped as writes go by. Time comes from the limiter (its
    ``clock``, else ``time.time``). Overrides (``limiter.overrides``) are kept apart, at most
    ``max_keys`` of them: expired ones go first, then the one set longest ago.

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
        # override key -> (its plan, expiry in ms or None), oldest set first
        self._overrides: OrderedDict[str, tuple[Plan, int | None]] = OrderedDict()
        #: True while any identifier may have an override here: the limiter's fast path for one
        #: policy reads it (a plain attribute: it is read on every check) and takes
        #: :meth:`evaluate` when it is true.
        self.has_overrides = False

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"MemoryStore(max_keys={self.max_keys}, keys={len(self._data)})"

    def evaluate(self, plan: Plan, keys: Sequence[str], now: int | None, cost: int,
                 charge: bool) -> Reply:  # fmt: skip
        """Run ``plan`` on ``keys`` at ``now`` (required: milliseconds). Never raises StoreError."""
        if now is None:
            raise ConfigurationError("MemoryStore needs the time from the limiter")
        if self._overrides:  # keys[-1] is the identifier's override key
            with self._lock:
                override = self._override(keys[-1], now)
                if override is not None:
                    reply = self._run(override, self._state_keys(keys[-1], override), now,
                                      cost, charge)  # fmt: skip
                    reply[0] += 2  # as the script says an override applied
                    reply += override.tail
                    return reply
        steps = plan.steps
        if len(steps) == 1:  # the common case, without the loops
            allowed, remaining, reset, retry, _ = self.check_one(steps[0], keys[0], now, cost,
                                                                 charge)  # fmt: skip
            return [allowed, allowed, remaining, reset, retry]
        with self._lock:
            return self._run(plan, keys, now, cost, charge)

    def check_one(self, step: Step, key: str, now: int, cost: int, charge: bool) -> Result:
        """One policy's ``step`` of a plan on its ``key`` at ``now`` (milliseconds), ignoring
        overrides: the check's own result, ``(allowed, remaining, reset_ms, retry_ms,
        new_state)``, with the state stored. What :meth:`evaluate` does for one policy, for a
        caller that wants the numbers without the reply list (the limiter's memory fast path)."""
        check, limit, period, rate = step
        data = self._data
        with self._lock:
            entry = data.get(key)
            if entry is None:
                result = check(None, now, limit, period, rate, cost, charge)
                new = result[4]
                if new is not None:
                    data[key] = [new, now + result[2]]
                    self._added(now)
                return result
            data.move_to_end(key)
            # an expired state is as good as absent; a charge updates the entry in place
            result = check(entry[0] if entry[1] >= now else None, now, limit, period, rate, cost,
                           charge)  # fmt: skip
            if result[4] is not None:
                entry[0] = result[4]  # the same list when it was charged in place
                entry[1] = now + result[2]
            return result

    def _run(self, plan: Plan, keys: Sequence[str], now: int, cost: int,
             charge: bool) -> Reply:  # fmt: skip
        """Several policies (or an override's): look at all of them, then charge all or none.
        A cost above a policy's limit is denied, retry_after one period. Under the lock."""
        data = self._data
        steps = plan.steps
        reply = [1]
        entries = []
        for i in range(len(steps)):
            key = keys[i]
            check, limit, period, rate = steps[i]
            entry = data.get(key)
            stored = None
            if entry is not None:
                data.move_to_end(key)
                if entry[1] >= now:
                    stored = entry[0]
            entries.append((entry, stored))
            if cost > limit and check is not slots_check:  # never holdable: as found, denied
                result = check(stored, now, limit, period, rate, 0, False)
                result = (0, result[1], result[2], plan.periods_ms[i], None)
            else:
                result = check(stored, now, limit, period, rate, cost, False)
            if not result[0]:
                reply[0] = 0
            reply += result[:4]
        if reply[0] and cost and charge:
            for i in range(len(steps)):
                key = keys[i]
                check, limit, period, rate = steps[i]
                if check is slots_check:
                    continue  # a hit is checked against the slots in flight but takes none
                entry, stored = entries[i]
                _, remaining, reset, _, new = check(stored, now, limit, period, rate, cost, True)
                reply[4 * i + 2] = remaining
                reply[4 * i + 3] = reset
                if entry is not None and data.get(key) is entry:
                    entry[0] = new
                    entry[1] = now + reset
                else:
                    data[key] = [new, now + reset]
                    self._added(now)
        return reply

    # Leases (Concurrency, settle): the twins of the acquire, release, renew and settle
    # entries of lua/limiter.lua.

    def acquire(self, plan: Plan, keys: Sequence[str], now: int | None, cost: int,
                lease: str) -> Reply:  # fmt: skip
        """Check every policy; when all allow, charge ``cost`` to the rate policies and take a
        slot for ``lease`` in each Concurrency policy. An override applies as in
        :meth:`evaluate`, its Concurrency policies taking the slots (as the script does). The reply
        is ``evaluate``'s followed by ``now``. Never raises StoreError."""
        if now is None:
            raise ConfigurationError("MemoryStore needs the time from the limiter")
        lease_number = int(lease, 16)
        with self._lock:
            override = self._override(keys[-1], now) if self._overrides else None
            if override is None:
                reply = self._take(plan, keys, now, cost, lease_number)
            else:
                state_keys = self._state_keys(keys[-1], override)
                reply = self._take(override, state_keys, now, cost, lease_number)
                reply[0] += 2  # as the script says an override applied
                reply += override.tail
            reply.append(now)
            return reply

    def _take(self, plan: Plan, keys: Sequence[str], now: int, cost: int,
              lease: int) -> Reply:  # fmt: skip
        """:meth:`acquire` on ``plan``'s keys, under the lock: all or nothing; Concurrency
        policies take a slot whatever the cost (0 included)."""
        steps = plan.steps
        reply = [1]
        stored_states = []
        for i in range(len(steps)):
            check, limit, period, rate = steps[i]
            stored = self._live(keys[i], now)
            stored_states.append(stored)
            if cost > limit and check is not slots_check:  # never holdable: denied
                result = check(stored, now, limit, period, rate, 0, False)
                result = (0, result[1], result[2], plan.periods_ms[i], None)
            else:
                result = check(stored, now, limit, period, rate, cost, False)
            if not result[0]:
                reply[0] = 0
            reply += result[:4]
        if reply[0]:
            for i in range(len(steps)):
                key = keys[i]
                check, limit, period, rate = steps[i]
                if check is slots_check:
                    new, reset = take_slot(stored_states[i], now, period, lease)
                    remaining = reply[4 * i + 2] - 1
                elif cost:
                    _, remaining, reset, _, charged = check(
                        stored_states[i], now, limit, period, rate, cost, True
                    )
                    new = charged  # type: ignore[assignment]
                else:
                    continue
                reply[4 * i + 2] = remaining
                reply[4 * i + 3] = reset
                self._put(key, new, now + reset, now)
        return reply

    def release(self, keys: Sequence[str], lease: str) -> int:
        """Free ``lease``'s slots in these Concurrency keys; returns how many were freed."""
        lease_number = int(lease, 16)
        freed = 0
        with self._lock:
            for key in keys:
                entry = self._data.get(key)
                if entry is None:
                    continue
                state = entry[0]
                for at in range(0, len(state), 2):
                    if state[at] == lease_number:
                        del state[at : at + 2]
                        freed += 1
                        break
                if not state:
                    del self._data[key]
        return freed

    def renew(self, keys: Sequence[str], now: int | None, lease: str,
              leases_ms: Sequence[int]) -> Reply:  # fmt: skip
        """Run ``lease`` until ``now + lease`` again in every key where it is still in flight.
        Returns ``[1 when all were, else 0, now]``."""
        if now is None:
            raise ConfigurationError("MemoryStore needs the time from the limiter")
        lease_number = int(lease, 16)
        renewed = 1
        with self._lock:
            for key, lease_ms in zip(keys, leases_ms, strict=True):
                state = self._live(key, now) or []
                for at in range(0, len(state), 2):
                    if state[at] == lease_number and state[at + 1] > now:
                        state[at + 1] = now + lease_ms
                        self._data[key] = [state, max(max(state[1::2]), now + 1)]
                        break
                else:
                    renewed = 0
        return [renewed, now]

    def settle(self, plan: Plan, keys: Sequence[str], now: int | None, acquired: int,
               charged: Sequence[int], actual: int) -> list[int]:  # fmt: skip
        """Leave each rate policy of ``plan`` as if the lease charged ``charged[i]`` at
        ``acquired`` had cost ``actual``; returns the cost now charged in each (see
        lua/settle.lua)."""
        if now is None:
            raise ConfigurationError("MemoryStore needs the time from the limiter")
        settled = []
        with self._lock:
            for key, policy, before in zip(keys, plan.policies, charged, strict=True):
                code, limit, period, rate, unit_text = policy._argv
                unit = int(unit_text)
                t, off = divmod(now, unit)
                new, ttl, after = SETTLES[code](self._live(key, now), t, acquired // unit,
                                                int(limit), int(period), int(rate), before,
                                                actual)  # fmt: skip
                if new is not None:
                    self._put(key, new, now + max(ttl * unit - off, 1), now)
                settled.append(after)
        return settled

    def _live(self, key: str, now: int) -> list[int] | None:
        """The state of ``key`` unless absent or expired (marks it recently used)."""
        entry = self._data.get(key)
        if entry is None:
            return None
        self._data.move_to_end(key)
        return entry[0] if entry[1] >= now else None

    def _put(self, key: str, state: list[int], expires_at: int, now: int) -> None:
        added = key not in self._data
        self._data[key] = [state, expires_at]
        if added:
            self._added(now)

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

    def _override(self, key: str, now: int) -> Plan | None:
        """The override plan at ``key``, unless absent or expired (then dropped)."""
        entry = self._overrides.get(key)
        if entry is None:
            return None
        if entry[1] is not None and entry[1] <= now:
            del self._overrides[key]
            self.has_overrides = bool(self._overrides)
            return None
        return entry[0]

    @staticmethod
    def _state_keys(override_key: str, plan: Plan) -> list[str]:
        head = override_key[: -len("override")]
        return [head + state_id for state_id in plan.state_ids]

    def delete(self, keys: Sequence[str]) -> None:
        """Forget an identifier's state (see :meth:`Store.delete`): ``keys`` are its state keys
        then its override key."""
        with self._lock:
            override = self._overrides.get(keys[-1])
            doomed = list(keys[:-1])
            if override is not None:
                doomed += self._state_keys(keys[-1], override[0])
            for key in doomed:
                self._data.pop(key, None)

    def set_override(self, key: str, plan: Plan, ttl_ms: int | None, now: int | None) -> None:
        """Keep ``plan`` as the override at ``key``, until ``now + ttl_ms`` or for good."""
        if ttl_ms is not None and now is None:
            raise ConfigurationError("MemoryStore needs the time from the limiter")
        expires = None if ttl_ms is None or now is None else now + ttl_ms
        with self._lock:
            overrides = self._overrides
            overrides.pop(key, None)
            if len(overrides) >= self.max_keys and now is not None:
                for old in [k for k, (_, at) in overrides.items() if at is not None and at <= now]:
                    del overrides[old]
            while len(overrides) >= self.max_keys:
                overrides.popitem(last=False)
            overrides[key] = (plan, expires)
            self.has_overrides = True

    def get_override(self, key: str, now: int | None) -> str | None:
        """The plan text of the override at ``key``, or None."""
        with self._lock:
            if now is None:
                entry = self._overrides.get(key)
                plan = None if entry is None else entry[0]
            else:
                plan = self._override(key, now)
            return None if plan is None else plan.spec

    def delete_override(self, key: str) -> None:
        """Forget the override at ``key``."""
        with self._lock:
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
                      charged: Sequence[int], actual: int) -> list[int]:  # fmt: skip
        """As :meth:`settle`."""
        return self.settle(plan, keys, now, acquired, charged, actual)

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
