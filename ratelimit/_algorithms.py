"""The Python twin of the Lua scripts in ``lua/``, for the memory store.

Each algorithm has the same three steps as its Lua file, with the same integer arithmetic
(Python's ints are exact, so ``//`` plays the part of ``floor_div``):

- ``load(state, now, limit, period, rate) -> state``: the key's state as of ``now``, from the
  stored state (or ``None``); a new list, the stored one is never changed.
- ``report(state, now, limit, period, rate, cost) -> (allowed, remaining, reset_ms, retry_ms)``.
- ``charge(state, now, limit, period, rate, cost) -> ttl_ms``: spends ``cost`` in ``state``;
  the TTL is also the ``reset_after`` after the charge, and ``remaining`` drops by ``cost``.

The differential test runs these and the Lua on a real server side by side and demands the same
decisions; change both or neither.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeAlias

State: TypeAlias = list[int]
Report: TypeAlias = tuple[int, int, int, int]
Load: TypeAlias = Callable[[State | None, int, int, int, int], State]
ReportFn: TypeAlias = Callable[[State, int, int, int, int, int], Report]
Charge: TypeAlias = Callable[[State, int, int, int, int, int], int]


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


# Fixed window: state [start, count].
def fixed_load(s: State | None, now: int, limit: int, period: int, rate: int) -> State:
    if s is not None and now < s[0] + period:
        return [s[0], s[1]]
    return [now, 0]


def fixed_report(s: State, now: int, limit: int, period: int, rate: int, cost: int) -> Report:
    start, count = s
    reset = start + period - now if count > 0 else 0
    if count + cost <= limit:
        return 1, limit - count, reset, 0
    return 0, limit - count, reset, start + period - now


def fixed_charge(s: State, now: int, limit: int, period: int, rate: int, cost: int) -> int:
    s[1] += cost
    return s[0] + period - now


# Sliding window: state [start, prev, cur].
def sliding_load(s: State | None, now: int, limit: int, period: int, rate: int) -> State:
    if s is not None:
        start, prev, cur = s
        if now >= start + period:
            windows = (now - start) // period
            prev, cur = (cur, 0) if windows == 1 else (0, 0)
            start += windows * period
        if prev > 0 or cur > 0:
            return [start, prev, cur]
    return [now, 0, 0]


def sliding_report(s: State, now: int, limit: int, period: int, rate: int, cost: int) -> Report:
    start, prev, cur = s
    e = max(now - start, 0)
    remaining = max(limit - cur - _ceil_div(prev * (period - e), period), 0)
    if cur > 0:
        reset = start + 2 * period - now
    elif prev > 0:
        reset = start + period - now
    else:
        reset = 0
    if prev * (period - e) + (cur + cost) * period <= limit * period:
        return 1, remaining, reset, 0
    if cur + cost <= limit:
        retry = start + period - (limit - cur - cost) * period // prev - now
    else:
        retry = start + 2 * period - (limit - cost) * period // cur - now
    return 0, remaining, reset, retry


def sliding_charge(s: State, now: int, limit: int, period: int, rate: int, cost: int) -> int:
    s[2] += cost
    return s[0] + 2 * period - now


# Token bucket: state [level, ts], one token = `period` units, `rate` units per millisecond.
def bucket_load(s: State | None, now: int, limit: int, period: int, rate: int) -> State:
    capacity = limit * period
    if s is None:
        return [capacity, now]
    level, ts = s
    if now > ts:
        elapsed = now - ts
        if elapsed >= _ceil_div(capacity - level, rate):
            level = capacity
        else:
            level += elapsed * rate
        ts = now
    return [level, ts]


def bucket_report(s: State, now: int, limit: int, period: int, rate: int, cost: int) -> Report:
    level, ts = s
    lag = ts - now
    capacity = limit * period
    reset = lag + _ceil_div(capacity - level, rate) if level < capacity else 0
    if level >= cost * period:
        return 1, level // period, reset, 0
    return 0, level // period, reset, lag + _ceil_div(cost * period - level, rate)


def bucket_charge(s: State, now: int, limit: int, period: int, rate: int, cost: int) -> int:
    s[0] -= cost * period
    return s[1] - now + _ceil_div(limit * period - s[0], rate)


#: Algorithm code (as in the scripts' ARGV) -> (load, report, charge).
ALGORITHMS: dict[str, tuple[Load, ReportFn, Charge]] = {
    "f": (fixed_load, fixed_report, fixed_charge),
    "s": (sliding_load, sliding_report, sliding_charge),
    "t": (bucket_load, bucket_report, bucket_charge),
}
