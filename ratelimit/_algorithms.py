"""The Python twin of the algorithm files in ``lua/``, for the memory store.

One section per Lua file, in the order of ``LUA_FILES`` (``ratelimit/scripts.py``), and in
each the functions of its Lua table, with the same names (``fixed_window.load`` is
:func:`fixed_window_load`), arguments, order and integer arithmetic (Python's ints are exact,
so ``//`` plays the part of ``floor_div`` and ``-(-a // b)`` of ``ceil_div``)::

    <algorithm>_load(s, now, limit, period, rate)          -> state
    <algorithm>_report(s, now, limit, period, rate, cost)  -> (allowed, remaining, reset, retry)
    <algorithm>_charge(s, now, limit, period, rate, cost)  -> ttl (ticks)
    <algorithm>_settle(s, now, t_acq, limit, period, rate, charged, actual)
                                                           -> (state or None, ttl, cost charged)

Where a Lua function takes a key and reads it (``read_state``) or writes it (``write_state``),
its twin takes the key's stored state (``s``: None when absent or expired) and returns what to
write: the driver (:mod:`ratelimit._driver`, the twin of ``lua/limiter.lua``) reads and writes
the memory store and turns ticks into milliseconds, as ``write_state`` and the Lua driver do.

A ``load`` never changes the stored state it is given: it returns that same list when nothing
needs to change (so that a charge, which spends in the loaded state, updates the store in
place and allocates nothing), else a new one. A ``report`` only reads. The differential tests
run the twin and the Lua on a real server side by side and demand the same decisions, and
``tests/test_twin.py`` that both have the same functions in the same order: change both or
neither.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeAlias

State: TypeAlias = list[int]
#: what a report returns: (allowed 1/0, remaining, reset_after, retry_after), in ticks
Report: TypeAlias = tuple[int, int, int, int]
#: what a settle returns: (the new state or None when unchanged, its TTL in ticks, the cost
#: now charged)
Settled: TypeAlias = tuple["State | None", int, int]

# ---- common.lua -------------------------------------------------------------------------------
# floor_div and ceil_div: Python's // on ints. read_state and write_state: the driver's reads and
# writes of the memory store (ratelimit/_driver.py). tick: the driver's (t, off).

# ---- fixed_window.lua ------------------------------------------------------------------------
# State [start, count]: the window opened at `start` (tick) and `count` units were spent in it.


def fixed_window_load(s: State | None, now: int, limit: int, period: int, rate: int) -> State:
    """The stored window while it is open, else a new one at ``now``."""
    if s is not None and now < s[0] + period:
        return s
    return [now, 0]


def fixed_window_report(s: State, now: int, limit: int, period: int, rate: int,
                        cost: int) -> Report:  # fmt: skip
    """(allowed, remaining, reset_after, retry_after for ``cost``), ticks; read-only."""
    start, count = s
    reset = 0
    if count > 0:
        reset = start + period - now
    if count + cost <= limit:
        return 1, limit - count, reset, 0
    remaining = limit - count
    if remaining < 0:  # spent more than a lowered limit (an override): none left
        remaining = 0
    return 0, remaining, reset, start + period - now


def fixed_window_charge(s: State, now: int, limit: int, period: int, rate: int, cost: int) -> int:
    """Spends ``cost`` in ``s``; returns its TTL in ticks (also reset_after after the charge)."""
    s[1] += cost
    return s[0] + period - now


# ---- sliding_window.lua ----------------------------------------------------------------------
# State [start, prev, cur]: the current window opened at `start` (tick); `cur` units were spent
# in it and `prev` in the window before. Admitted iff, with e = now - start,
#     prev * (period - e) + (cur + cost) * period <= limit * period
# compared exactly in integers.


def sliding_window_load(s: State | None, now: int, limit: int, period: int, rate: int) -> State:
    """The stored windows slid to ``now`` (a new list when they slid), else new ones."""
    if s is not None:
        start, prev, cur = s
        if now >= start + period:
            windows = (now - start) // period
            if windows == 1:
                prev, cur = cur, 0
            else:
                prev, cur = 0, 0
            start += windows * period
            s = [start, prev, cur]
        if prev > 0 or cur > 0:
            return s
    return [now, 0, 0]


def sliding_window_report(s: State, now: int, limit: int, period: int, rate: int,
                          cost: int) -> Report:  # fmt: skip
    """As :func:`fixed_window_report`."""
    start, prev, cur = s
    e = now - start
    if e < 0:
        e = 0
    remaining = limit - cur + (-(prev * (period - e)) // period)  # - ceil_div(prev * ..)
    if remaining < 0:
        remaining = 0
    reset = 0
    if cur > 0:
        reset = start + 2 * period - now
    elif prev > 0:
        reset = start + period - now
    if prev * (period - e) + (cur + cost) * period <= limit * period:
        return 1, remaining, reset, 0
    if cur + cost <= limit:
        # later in this window, once prev's weight has shrunk enough
        retry = start + period - (limit - cur - cost) * period // prev - now
    else:
        # in the next window, where cur becomes the weighted previous count
        retry = start + 2 * period - (limit - cost) * period // cur - now
    return 0, remaining, reset, retry


def sliding_window_charge(s: State, now: int, limit: int, period: int, rate: int,
                          cost: int) -> int:  # fmt: skip
    """As :func:`fixed_window_charge`."""
    s[2] += cost
    return s[0] + 2 * period - now


# ---- token_bucket.lua ------------------------------------------------------------------------
# One token is `period` units and the bucket gains `rate` units per tick; it holds `limit` (the
# burst) tokens, `limit * period` units. State [level, ts]: `level` units held at `ts` (tick). A
# missing state is a full bucket.


def token_bucket_load(s: State | None, now: int, limit: int, period: int, rate: int) -> State:
    """The stored bucket refilled up to ``now`` (a new list when it changed), else a full one."""
    capacity = limit * period
    if s is None:
        return [capacity, now]
    level = s[0]
    if now > s[1]:
        missing = capacity - level
        elapsed = now - s[1]
        if elapsed >= -(-missing // rate):
            level = capacity
        else:
            level += elapsed * rate
        s = [level, now]
    if level > capacity:  # a burst lowered since (an override): the bucket holds no more
        s = [capacity, s[1]]
    return s


def token_bucket_report(s: State, now: int, limit: int, period: int, rate: int,
                        cost: int) -> Report:  # fmt: skip
    """As :func:`fixed_window_report`."""
    level = s[0]
    capacity = limit * period
    lag = s[1] - now  # > 0 only when this caller's clock is behind the last writer's
    reset = 0
    if level < capacity:
        reset = lag - (-(capacity - level) // rate)
    if level >= cost * period:
        return 1, level // period, reset, 0
    remaining = level // period  # below 0 in debt, after a settle
    if remaining < 0:
        remaining = 0
    return 0, remaining, reset, lag - (-(cost * period - level) // rate)


def token_bucket_charge(s: State, now: int, limit: int, period: int, rate: int,
                        cost: int) -> int:  # fmt: skip
    """As :func:`fixed_window_charge`."""
    s[0] -= cost * period
    return s[1] - now - (-(limit * period - s[0]) // rate)


# ---- concurrency.lua -------------------------------------------------------------------------
# Stored: [id_1, expiry_1, id_2, expiry_2, ...] (the Lua's sorted set: member = lease id, score =
# expiry in milliseconds); a lease is in flight while its expiry > now. Unit always 1 ms.


def concurrency_load(s: State | None, now: int, limit: int, period: int, rate: int) -> State:
    """State ``[in_flight, oldest live expiry, latest live expiry]`` (0s when nothing is in
    flight; the oldest only when every slot is taken), followed by the live leases (which the
    Lua's charge reads from the key again)."""
    live: State = []
    if s:
        for at in range(0, len(s), 2):
            if s[at + 1] > now:
                live += s[at : at + 2]
    n = len(live) // 2
    if n == 0:
        return [0, 0, 0]
    expiries = live[1::2]
    return [n, min(expiries) if n >= limit else 0, max(expiries), *live]


def concurrency_report(s: State, now: int, limit: int, period: int, rate: int,
                       cost: int) -> Report:  # fmt: skip
    """As :func:`fixed_window_report`, for one slot whatever ``cost``."""
    in_flight = s[0]
    remaining = limit - in_flight
    if remaining < 0:
        remaining = 0
    reset = 0
    if in_flight > 0:
        reset = s[2] - now
    if in_flight + 1 <= limit:
        return 1, remaining, reset, 0
    return 0, remaining, reset, s[1] - now


def concurrency_charge(s: State, now: int, limit: int, period: int, rate: int,
                       lease: int) -> int:  # fmt: skip
    """Takes a slot for ``lease`` until ``now + period``: ``s`` becomes the state to store (the
    live leases and this one). The driver passes the lease being acquired where the others
    take the cost (the Lua's ``lease.id``), and counts one slot used. Returns the TTL (to the
    latest lease)."""
    latest = s[2]  # the latest live lease before this one (0: none)
    del s[:3]  # the live leases: the expired ones are gone (ZREMRANGEBYSCORE)
    s += (lease, now + period)
    if latest < now + period:
        latest = now + period
    return latest - now


# ---- settle.lua ------------------------------------------------------------------------------
# A lease charged `charged` units at tick `t_acq` turns out to have cost `actual`: the policy is
# left as if it had cost `actual` when it was charged, as far as the window it was charged in
# still counts. Each returns what to write (None: nothing) with its TTL, and the cost now charged
# (`actual`, or still `charged` when nothing could be given back).


def fixed_window_settle(s: State | None, now: int, t_acq: int, limit: int, period: int, rate: int,
                        charged: int, actual: int) -> Settled:  # fmt: skip
    """settles['f']: the fixed window."""
    if s is not None and now >= s[0] + period:  # closed: as absent (live is false)
        s = None
    if s is not None and s[0] <= t_acq:
        count = s[1] + actual - charged
        if count < 0:
            count = 0
        return [s[0], count], s[0] + period - now, actual
    if actual > charged:
        if s is not None:
            return [s[0], s[1] + actual - charged], s[0] + period - now, actual
        return [now, actual - charged], period, actual
    return None, 0, charged


def sliding_window_settle(s: State | None, now: int, t_acq: int, limit: int, period: int,
                          rate: int, charged: int, actual: int) -> Settled:  # fmt: skip
    """settles['s']: the sliding window."""
    start, prev, cur = sliding_window_load(s, now, limit, period, rate)
    live = prev > 0 or cur > 0
    delta = actual - charged
    if live and start <= t_acq:
        cur = cur + delta
        if cur < 0:
            cur = 0
    elif live and start - period <= t_acq:
        prev = prev + delta
        if prev < 0:
            prev = 0
    elif delta > 0:
        cur = cur + delta
    else:
        return None, 0, charged
    return [start, prev, cur], start + 2 * period - now, actual


def token_bucket_settle(s: State | None, now: int, t_acq: int, limit: int, period: int, rate: int,
                        charged: int, actual: int) -> Settled:  # fmt: skip
    """settles['t']: the token bucket (never above its burst; below zero in debt)."""
    level, ts = token_bucket_load(s, now, limit, period, rate)
    capacity = limit * period
    level = level + (charged - actual) * period
    if level > capacity:
        level = capacity
    return [level, ts], ts - now - (-(capacity - level) // rate), actual


Load: TypeAlias = Callable[[State | None, int, int, int, int], State]
Reporter: TypeAlias = Callable[[State, int, int, int, int, int], Report]
Charge: TypeAlias = Callable[[State, int, int, int, int, int], int]
Settle: TypeAlias = Callable[[State | None, int, int, int, int, int, int, int], Settled]


#: One algorithm, the twin of its Lua table in ``algorithms``: ``(load, report, charge, settle,
#: slots)``; ``settle`` is None for Concurrency (a lease's slot is one whatever the cost), and
#: ``slots`` is true for it alone (one slot per lease whatever the cost, as the Lua table's
#: ``slots``). A plain tuple: the driver unpacks it on every check, which is quicker than a
#: named tuple's.
Algorithm: TypeAlias = tuple[Load, Reporter, Charge, "Settle | None", bool]

#: Algorithm code (as in the scripts' ARGV) -> the algorithm: the Lua's ``algorithms`` table.
ALGORITHMS: dict[str, Algorithm] = {
    "f": (fixed_window_load, fixed_window_report, fixed_window_charge, fixed_window_settle, False),
    "s": (sliding_window_load, sliding_window_report, sliding_window_charge,
          sliding_window_settle, False),
    "t": (token_bucket_load, token_bucket_report, token_bucket_charge, token_bucket_settle,
          False),
    "c": (concurrency_load, concurrency_report, concurrency_charge, None, True),
}  # fmt: skip
