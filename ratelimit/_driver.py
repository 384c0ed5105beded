"""The Python twin of ``lua/limiter.lua``, the driver, for the memory store.

One function per entry of the script (``entries``: :func:`check`, :func:`forget`,
:func:`set_override`, :func:`acquire`, :func:`release`, :func:`renew`, :func:`settle`) and its
:func:`resolve`, in the Lua's order and with its comments, over the algorithms of
:mod:`ratelimit._algorithms`.
Where the Lua calls ``redis.call``, the twin reads and writes ``db``, the memory store's
:class:`~ratelimit.stores.memory.Keyspace`: a key's state with its expiry (``GET``/``SET PX``:
``db.get``/``db.put``), ``DEL`` (``db.drop``), ``PEXPIRE`` (the entry's expiry) and an
override key's plan (``db.override``, ``db.put_override``).
The entries take the memory store's arguments (a :class:`~ratelimit.stores.base.Plan`,
``now`` in milliseconds, ...) where the script takes ARGV text, and run under the store's
lock, as a script runs atomically; they never take it.

:func:`check_one` is :func:`check` for a plan of one policy that no override replaces, without
the reply list: the memory store's hit and peek, the hot path (change it with :func:`check`).
For speed, both read and write ``db.entries`` where the Lua calls ``read_state`` and
``write_state``, as ``db.get`` and ``db.put`` would.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeAlias

from ratelimit._algorithms import State
from ratelimit.stores.base import Plan, Reply, Step

if TYPE_CHECKING:
    from ratelimit.stores.memory import Keyspace

__all__ = ["ENTRIES", "Result", "acquire", "check", "check_one", "forget", "release", "renew",
           "resolve", "set_override", "settle"]  # fmt: skip

#: check_one's result: (allowed, remaining, reset_ms, retry_ms, the state stored or None).
Result: TypeAlias = tuple[int, int, int, int, "State | None"]


def _ttl_ms(ttl: int, unit: int, off: int) -> int:
    """A TTL of ``ttl`` ticks in milliseconds, at least 1: ``write_state`` in common.lua."""
    ttl = ttl * unit - off
    if ttl < 1:
        ttl = 1
    return ttl


# ---- Overrides --------------------------------------------------------------------------------
# An override is the plan kept at <prefix>:{<identifier>}:override; its state keys are made from
# that key's head and its plan's state ids (Plan.state_ids and Plan.tail are the Lua's `shaped`).
# A state key lives until its state is full under every policy that reads it: the override's
# (set_override extends it) and the limiter's own of the same shape (a charge under the
# override, and the settle of a lease acquired under one, write the longer time: _outlive).
# See "Overrides" in lua/limiter.lua.


def resolve(override_key: str, override: Plan) -> tuple[Plan, list[str], tuple[int, ...]]:
    """The override that applies to one identifier: ``override``, the plan kept at its
    override key ``override_key`` (read by the caller with the state keys). Returns the
    override's plan, its state keys and its plan as integers for the reply. (The Lua's
    ``false``, an override needing an algorithm the script lacks, cannot happen: the twin has
    them all.)"""
    return override, override.state_keys(override_key), override.tail


def forget(db: Keyspace, keys: Sequence[str]) -> int:
    """The ``forget`` entry (reset): deletes the state keys and, when an override is set, the
    state keys of its policies; never the override. Returns the count deleted."""
    deleted = 0
    n = len(keys)
    for i in range(n - 1):
        deleted += db.drop(keys[i])
    override = db.override(keys[n - 1], None)
    if override is not None:
        _, state, _ = resolve(keys[n - 1], override)
        for key in state:
            deleted += db.drop(key)
    return deleted


def _time_to_full(s: State, step: Step, now: int) -> int:
    """The milliseconds until the state ``s`` of the policy ``step``, loaded or charged at
    ``now`` (ms), is full again: how long its key must live for that policy (``time_to_full``
    in the Lua)."""
    (_, report, _, _, _), limit, period, rate, unit = step
    t = now
    if unit != 1:
        t = now // unit
    reset = report(s, t, limit, period, rate, 0)[2]
    if reset > 0 and unit != 1:
        reset = reset * unit - (now - t * unit)
    return reset


def _outlive(db: Keyspace, steps: Sequence[Step], keys: Sequence[str],
             states: Sequence[State | None], ttls: Sequence[int], own_steps: Sequence[Step],
             own_keys: Sequence[str], now: int) -> None:  # fmt: skip
    """After a write under an override (``steps`` on ``keys``: ``states[i]`` written to
    ``keys[i]`` with a TTL of ``ttls[i]`` ms, or None when nothing was), the state keys written
    that the limiter's own plan also reads live until full under its policy too, where that
    takes longer (``outlive`` in the Lua)."""
    for i in range(len(steps)):
        s = states[i]
        # (a slot's key lives to its latest lease, whatever the policy)
        if s is not None and not steps[i][0][4]:
            for j in range(len(own_steps)):
                if own_keys[j] == keys[i]:  # the same key: the same algorithm, period and unit
                    need = _time_to_full(s, own_steps[j], now)
                    entry = db.entries.get(keys[i])  # (None: evicted at max_keys)
                    if need > ttls[i] and entry is not None:  # longer than written
                        entry[1] = now + need  # PEXPIRE


# ---- end of Overrides -------------------------------------------------------------------------


def check(db: Keyspace, plan: Plan, keys: Sequence[str], now: int, cost: int, charge: bool,
          lease: int | None = None) -> Reply:  # fmt: skip
    """The ``check`` entry: every policy of ``plan`` (an override's when the identifier has
    one) on ``keys`` at ``now`` (ms); when ``charge`` and all allow, charges ``cost`` to every
    rate policy, and with a ``lease`` (the acquire entry) takes a slot for it in every
    Concurrency policy. Returns the script's reply."""
    # the override key is last, and usually absent (has_overrides: none anywhere)
    override = db.override(keys[-1], now) if db.has_overrides else None
    tail = None
    if override is not None:  # an override: its plan, on its own state keys
        own_steps, own_keys = plan.steps, keys
        plan, keys, tail = resolve(keys[-1], override)
    steps = plan.steps
    n = len(steps)
    entries = db.entries
    reply = [1]
    states = []
    for i in range(n):
        (load, report, _, _, slots), limit, period, rate, unit = steps[i]
        t, off = now, 0
        if unit != 1:
            t = now // unit
            off = now - t * unit
        # the key's state: db.get(keys[i], now), inlined
        entry = entries.get(keys[i])
        stored = None
        if entry is not None:
            entries.move_to_end(keys[i])
            if entry[1] >= now:
                stored = entry[0]
        s = load(stored, t, limit, period, rate)
        c = cost
        if cost > limit and not slots:  # never holdable (an override's policy):
            # as found, denied below (a Concurrency slot is one whatever the cost)
            c = 0
        allowed, remaining, reset, retry = report(s, t, limit, period, rate, c)
        if unit != 1:  # ticks to milliseconds, counted from `now`
            if reset > 0:
                reset = reset * unit - off
            if retry > 0:
                retry = retry * unit - off
        if c != cost:
            allowed, retry = 0, period * unit
        states.append(s)
        if allowed == 0:
            reply[0] = 0
        reply += (allowed, remaining, reset, retry)

    charged = reply[0] == 1 and charge and (cost > 0 or lease is not None)
    if charged:
        # charge every policy; after a charge, remaining drops by the cost and the key's TTL is
        # exactly the time back to full capacity. A lease (acquire) of cost 0 still takes its
        # Concurrency slots, in the plan that applied (the override's when there is one). A hit
        # under an override that holds a Concurrency policy is checked against the slots in
        # flight but takes none: only acquire takes (and release frees) a slot.
        for i in range(n):
            (_, _, charge_, _, slots), limit, period, rate, unit = steps[i]
            if slots:
                if lease is None:
                    continue
                spend, used = lease, 1  # the lease's id, and one slot used
            elif cost > 0:
                spend, used = cost, cost
            else:
                continue
            s = states[i]
            if unit == 1:  # (the Lua keeps each policy's tick; recomputing it costs less here)
                ttl = charge_(s, now, limit, period, rate, spend)
            else:
                t = now // unit
                ttl = _ttl_ms(charge_(s, t, limit, period, rate, spend), unit, now - t * unit)
            entry = entries.get(keys[i])
            if entry is None:
                db.put(keys[i], s, now + ttl, now)
            else:  # db.put, inlined (the entry is already the most recently used)
                entry[0] = s
                entry[1] = now + ttl
            reply[4 * i + 3] = ttl
            reply[4 * i + 2] -= used
    if tail is not None:  # overrides: say so, and which plan applied
        if charged and cost > 0:  # the charged state outlives the override
            ttls = [reply[4 * i + 3] for i in range(n)]
            _outlive(db, steps, keys, states, ttls, own_steps, own_keys, now)
        reply[0] += 2
        reply += tail
    return reply


def check_one(db: Keyspace, step: Step, key: str, now: int, cost: int, charge: bool) -> Result:
    """:func:`check` for one policy (``step``) on its ``key`` when no override applies: its
    load, report and charge, without the reply list. Returns ``(allowed, remaining, reset_ms,
    retry_ms, new_state)``; ``new_state`` is the state stored by a charge, else None. The cost
    is never above the policy's limit (the limiter refuses such costs for its own policies).

    Unlike the entries, it takes ``db.lock`` itself: it is the memory store's ``check_one``
    (the limiter's hit and peek on one policy), with nothing in between."""
    (load, report, charge_, _, slots), limit, period, rate, unit = step
    entries = db.entries
    lock = db.lock
    lock.acquire()  # (acquire and try/finally cost less than `with`: measured)
    try:
        # the key's state: db.get, inlined (a charge updates the entry in place)
        entry = entries.get(key)
        stored = None
        if entry is not None:
            entries.move_to_end(key)
            if entry[1] >= now:
                stored = entry[0]
        t = now
        if unit != 1:
            t = now // unit
        s = load(stored, t, limit, period, rate)
        allowed, remaining, reset, retry = report(s, t, limit, period, rate, cost)
        if allowed and charge and cost and not slots:
            ttl = charge_(s, t, limit, period, rate, cost)
            if unit != 1:
                ttl = _ttl_ms(ttl, unit, now - t * unit)
            if entry is None:
                db.put(key, s, now + ttl, now)
            else:  # db.put, inlined
                entry[0] = s
                entry[1] = now + ttl
            return 1, remaining - cost, ttl, 0, s
    finally:
        lock.release()
    if unit != 1:  # ticks to milliseconds, counted from `now`
        off = now - t * unit
        if reset > 0:
            reset = reset * unit - off
        if retry > 0:
            retry = retry * unit - off
    return allowed, remaining, reset, retry, None


def _keep(db: Keyspace, plan: Plan, keys: Sequence[str], now: int) -> None:
    """Each state key of ``plan`` (``keys[i]`` for its policy i) lives at least until its state
    is full under that policy at ``now``: an override's state before its first check (``keep``
    in the Lua)."""
    for i, step in enumerate(plan.steps):
        (load, _, _, _, slots), limit, period, rate, unit = step
        if slots:
            continue
        t = now
        if unit != 1:
            t = now // unit
        need = _time_to_full(load(db.get(keys[i], now), t, limit, period, rate), step, now)
        if need > 0:  # 0: full, or no state (nothing to keep)
            entry = db.entries.get(keys[i])
            if entry is not None and entry[1] < now + need:  # PEXPIRE GT
                entry[1] = now + need


def set_override(db: Keyspace, plan: Plan, keys: Sequence[str], now: int,
                 ttl_ms: int | None) -> None:  # fmt: skip
    """The ``set_override`` entry: keeps ``plan`` as the override at ``keys[-1]`` (until ``now
    + ttl_ms``, or for good), and makes each of its state keys (``keys[:-1]``, as
    :func:`resolve` names them) live until its state is full under the override's policy."""
    db.put_override(keys[-1], plan, None if ttl_ms is None else now + ttl_ms, now)
    _keep(db, plan, keys, now)


# ---- Leases (Concurrency, settle) ------------------------------------------------------------


def acquire(db: Keyspace, plan: Plan, keys: Sequence[str], now: int, cost: int,
            lease: str) -> Reply:  # fmt: skip
    """The ``acquire`` entry: :func:`check` with a charge, where every Concurrency policy also
    takes a slot for ``lease`` (an id in hex). Returns check's reply followed by ``now``."""
    reply = check(db, plan, keys, now, cost, True, int(lease, 16))
    reply.append(now)
    return reply


def release(db: Keyspace, keys: Sequence[str], lease: str) -> int:
    """The ``release`` entry: frees ``lease``'s own slot in each Concurrency key (idempotent).
    Returns the slots freed."""
    lease_id = int(lease, 16)
    freed = 0
    for key in keys:
        state = db.get(key, None)
        if state is None:
            continue
        for at in range(0, len(state), 2):
            if state[at] == lease_id:
                del state[at : at + 2]  # ZREM, in place: the key keeps its expiry
                freed += 1
                break
        if not state:  # a sorted set without members is no key
            db.drop(key)
    return freed


def renew(db: Keyspace, keys: Sequence[str], now: int, lease: str,
          leases_ms: Sequence[int]) -> Reply:  # fmt: skip
    """The ``renew`` entry: a slot of ``lease`` still held (expiry > now) runs until ``now +
    leases_ms[i]`` again; an expired or released one is not taken back. Returns ``[1 when every
    slot was renewed, else 0, now]``."""
    lease_id = int(lease, 16)
    every = 1
    for key, lease_ms in zip(keys, leases_ms, strict=True):
        state = db.get(key, now) or []
        for at in range(0, len(state), 2):
            if state[at] == lease_id and state[at + 1] > now:
                state[at + 1] = now + lease_ms
                # expire_with_leases: the key lives until its latest lease, at least 1 ms
                db.put(key, state, max(max(state[1::2]), now + 1), now)
                break
        else:
            every = 0
    return [every, now]


def settle(db: Keyspace, plan: Plan, keys: Sequence[str], now: int, acquired: int,
           charged: Sequence[int], actual: int, own: Plan | None = None,
           own_keys: Sequence[str] = ()) -> list[int]:  # fmt: skip
    """The ``settle`` entry: each rate policy of ``plan`` (keys in its order) as if the lease
    charged ``charged[i]`` at ``acquired`` (ms) had cost ``actual`` (the algorithms' settle).
    A lease acquired under an override also gives the limiter's own plan ``own`` on its state
    keys ``own_keys`` (the Lua's argv[6] and trailing keys): the state settled outlives the
    override (:func:`_outlive`). Returns the cost now charged in each (the script's reply
    without its leading ``now``)."""
    settled = []
    states: list[State | None] = []
    ttls = []
    for i in range(len(charged)):
        (_, _, _, settle_one, _), limit, period, rate, unit = plan.steps[i]
        t, off, t_acq = now, 0, acquired
        if unit != 1:
            t = now // unit
            off = now - t * unit
            t_acq = acquired // unit
        if settle_one is None:  # as the Lua errs: only rate policies settle
            raise TypeError(f"a policy of code {plan.spec.split()[5 * i]!r} has no settle")
        new, ttl, after = settle_one(db.get(keys[i], now), t, t_acq, limit, period, rate,
                                     charged[i], actual)  # fmt: skip
        if new is not None:
            ttl = _ttl_ms(ttl, unit, off)
            db.put(keys[i], new, now + ttl, now)
        states.append(new)
        ttls.append(ttl)
        settled.append(after)
    if own is not None:  # acquired under an override: the state settled outlives it
        _outlive(db, plan.steps, keys, states, ttls, own.steps, own_keys, now)
    return settled


#: The entries, as the Lua's ``entries`` table names them.
ENTRIES: dict[str, Callable[..., object]] = {
    "check": check, "forget": forget, "set_override": set_override, "acquire": acquire,
    "release": release, "renew": renew, "settle": settle,
}  # fmt: skip
