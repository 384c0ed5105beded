"""The Python twin of the Lua scripts in ``lua/``, for the memory store.

One function per algorithm does what its Lua file's ``load``, ``report`` and ``charge`` do
together, with the same integer arithmetic (Python's ints are exact, so ``//`` plays the part
of ``floor_div``)::

    check(stored, now, limit, period, rate, cost, charge)
        -> (allowed, remaining, reset_ms, retry_ms, new_state)

``stored`` is the key's state or None. When ``charge`` is true, ``cost`` is positive and the
policy allows it, ``new_state`` is the state after the charge (else None): ``stored`` itself,
updated in place, or a new list when ``stored`` is None, so that a charge allocates nothing for
a key that exists. Otherwise ``stored`` is left as it is. ``remaining`` and ``reset_ms``
describe the state after the charge, and ``reset_ms`` is also the key's TTL. The differential
test runs these and the Lua on a real server side by side and demands the same decisions:
change both or neither.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeAlias

State: TypeAlias = list[int]
Result: TypeAlias = tuple[int, int, int, int, "State | None"]
Check: TypeAlias = Callable[[State | None, int, int, int, int, int, bool], Result]
# A settle's (new state or None when unchanged, its TTL in ticks, the cost now charged)
Settled: TypeAlias = tuple["State | None", int, int]


def fixed_check(s: State | None, now: int, limit: int, period: int, rate: int, cost: int,
                charge: bool) -> Result:  # fmt: skip
    """Fixed window; state ``[start, count]``. See lua/fixed_window.lua."""
    if s is None or now >= s[0] + period:
        start, count = now, 0
    else:
        start, count = s
    end = start + period - now
    if count + cost > limit:  # remaining 0 when a lowered limit (an override) is overspent
        return 0, max(limit - count, 0), end if count > 0 else 0, end, None
    if charge and cost:
        if s is None:
            return 1, limit - count - cost, end, 0, [start, count + cost]
        s[0] = start
        s[1] = count + cost
        return 1, limit - count - cost, end, 0, s
    return 1, limit - count, end if count > 0 else 0, 0, None


def sliding_check(s: State | None, now: int, limit: int, period: int, rate: int, cost: int,
                  charge: bool) -> Result:  # fmt: skip
    """Weighted two-window counter; state ``[start, prev, cur]``. See lua/sliding_window.lua."""
    start, prev, cur = now, 0, 0
    if s is not None:
        a, b, c = s
        if now >= a + period:
            windows = (now - a) // period
            b, c = (c, 0) if windows == 1 else (0, 0)
            a += windows * period
        if b > 0 or c > 0:
            start, prev, cur = a, b, c
    e = now - start if now > start else 0
    weighted = prev * (period - e)
    remaining = limit - cur + (-weighted // period)  # limit - cur - ceil(weighted / period)
    if remaining < 0:
        remaining = 0
    allowed = 1
    retry = 0
    if weighted + (cur + cost) * period <= limit * period:
        if charge and cost:
            if s is None:
                return 1, remaining - cost, start + 2 * period - now, 0, [start, prev, cur + cost]
            s[0] = start
            s[1] = prev
            s[2] = cur + cost
            return 1, remaining - cost, start + 2 * period - now, 0, s
    elif cur + cost <= limit:  # later in this window, once prev's weight has shrunk enough
        allowed, retry = 0, start + period - (limit - cur - cost) * period // prev - now
    else:  # in the next window, where cur becomes the weighted previous count
        allowed, retry = 0, start + 2 * period - (limit - cost) * period // cur - now
    if cur > 0:
        reset = start + 2 * period - now
    elif prev > 0:
        reset = start + period - now
    else:
        reset = 0
    return allowed, remaining, reset, retry, None


def _bucket_load(s: State | None, now: int, capacity: int, rate: int) -> tuple[int, int]:
    """A bucket's ``(level, ts)`` refilled up to ``now``, as lua/token_bucket.lua's load: a
    missing state is a full bucket; never above ``capacity`` (a burst lowered since, by an
    override)."""
    if s is None:
        return capacity, now
    level, ts = s
    if now > ts:
        elapsed = now - ts
        if elapsed >= -(-(capacity - level) // rate):
            level = capacity
        else:
            level += elapsed * rate
        ts = now
    if level > capacity:
        level = capacity
    return level, ts


def bucket_check(s: State | None, now: int, limit: int, period: int, rate: int, cost: int,
                 charge: bool) -> Result:  # fmt: skip
    """Token bucket; state ``[level, ts]``, one token = ``period`` units, ``rate`` units per
    millisecond. See lua/token_bucket.lua."""
    capacity = limit * period
    level, ts = _bucket_load(s, now, capacity, rate)
    lag = ts - now  # > 0 only when this caller's clock is behind the last writer's
    need = cost * period
    allowed = 1
    retry = 0
    if level >= need:
        if charge and cost:
            level -= need
            reset = lag - (-(capacity - level) // rate)
            if s is None:
                return 1, level // period, reset, 0, [level, ts]
            s[0] = level
            s[1] = ts
            return 1, level // period, reset, 0, s
    else:
        allowed, retry = 0, lag - (-(need - level) // rate)
    reset = lag - (-(capacity - level) // rate) if level < capacity else 0
    return allowed, max(level // period, 0), reset, retry, None  # level < 0: a settled debt


def slots_check(s: State | None, now: int, limit: int, period: int, rate: int, cost: int,
                charge: bool) -> Result:  # fmt: skip
    """Concurrency; state ``[id_1, expiry_1, id_2, expiry_2, ...]``, a lease in flight while
    its expiry > now; one slot per lease whatever the cost. Never charges here: a slot is
    taken by :func:`take_slot`. See lua/concurrency.lua."""
    live = [e for e in s[1::2] if e > now] if s else []
    n = len(live)
    remaining = limit - n if n < limit else 0
    reset = max(live) - now if n else 0
    if n + 1 <= limit:
        return 1, remaining, reset, 0, None
    return 0, remaining, reset, min(live) - now, None


def take_slot(s: State | None, now: int, period: int, lease: int) -> tuple[State, int]:
    """``s`` with its expired leases dropped and ``lease`` added until ``now + period``; and
    the key's TTL (to its latest lease), as ``concurrency.charge`` does."""
    new: State = []
    latest = now + period
    if s:
        for at in range(0, len(s), 2):
            if s[at + 1] > now:
                new += s[at : at + 2]
                latest = max(latest, s[at + 1])
    new += [lease, now + period]
    return new, latest - now


def fixed_settle(s: State | None, now: int, t_acq: int, limit: int, period: int, rate: int,
                 charged: int, actual: int) -> Settled:  # fmt: skip
    """The fixed window as if the lease charged ``charged`` at ``t_acq`` had cost ``actual``:
    the new state (None when nothing changes), its TTL in ticks, and the cost now charged
    (``charged`` when nothing could be given back). See lua/settle.lua."""
    live = s is not None and now < s[0] + period
    if s is not None and live and s[0] <= t_acq:
        return [s[0], max(s[1] + actual - charged, 0)], s[0] + period - now, actual
    if actual > charged:
        if s is not None and live:
            return [s[0], s[1] + actual - charged], s[0] + period - now, actual
        return [now, actual - charged], period, actual
    return None, 0, charged


def sliding_settle(s: State | None, now: int, t_acq: int, limit: int, period: int, rate: int,
                   charged: int, actual: int) -> Settled:  # fmt: skip
    """As :func:`fixed_settle`, for the sliding window."""
    start, prev, cur = now, 0, 0
    if s is not None:
        a, b, c = s
        if now >= a + period:
            windows = (now - a) // period
            b, c = (c, 0) if windows == 1 else (0, 0)
            a += windows * period
        if b > 0 or c > 0:
            start, prev, cur = a, b, c
    live = prev > 0 or cur > 0
    delta = actual - charged
    if live and start <= t_acq:
        cur = max(cur + delta, 0)
    elif live and start - period <= t_acq:
        prev = max(prev + delta, 0)
    elif delta > 0:
        cur += delta
    else:
        return None, 0, charged
    return [start, prev, cur], start + 2 * period - now, actual


def bucket_settle(s: State | None, now: int, t_acq: int, limit: int, period: int, rate: int,
                  charged: int, actual: int) -> Settled:  # fmt: skip
    """As :func:`fixed_settle`, for the token bucket (never above its burst; below zero in
    debt)."""
    capacity = limit * period
    level, ts = _bucket_load(s, now, capacity, rate)
    level = min(level + (charged - actual) * period, capacity)
    return [level, ts], ts - now - (-(capacity - level) // rate), actual


Settle: TypeAlias = Callable[[State | None, int, int, int, int, int, int, int], Settled]

#: Algorithm code (as in the scripts' ARGV) -> its check.
ALGORITHMS: dict[str, Check] = {"f": fixed_check, "s": sliding_check, "t": bucket_check,
                                "c": slots_check}  # fmt: skip
#: Rate algorithm code -> its settle.
SETTLES: dict[str, Settle] = {"f": fixed_settle, "s": sliding_settle, "t": bucket_settle}
