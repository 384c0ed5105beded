"""The limiters: :class:`Limiter` (sync) and :class:`AsyncLimiter` (async).

Everything that does no I/O lives in :class:`_LimiterBase`: turning a key and a cost into store
keys, reading the clock, turning the store's reply into a :class:`Decision`, and the failure
policy. The two public classes only differ in how they call the store.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextvars import ContextVar
from types import MethodType
from typing import ClassVar, Final, Literal, TypeVar

from ratelimit._logging import logger
from ratelimit._tasks import spawn
from ratelimit.breaker import CircuitBreaker
from ratelimit.cache import DeniedCache, remember
from ratelimit.decision import Decision
from ratelimit.errors import ConfigurationError, RateLimitExceeded, StoreError
from ratelimit.events import PARTS, Event, EventKind, EventParts
from ratelimit.lease import Acquiring, AsyncLease, Lease, new_lease_id
from ratelimit.overrides import AsyncOverrides, Overrides, check_fits, plan_from_reply
from ratelimit.policies import Concurrency, Policy, parse
from ratelimit.stores.base import AsyncStore, Plan, Reply, Step, Store
from ratelimit.stores.memory import MemoryStore

__all__ = ["AsyncLimiter", "Limiter"]

OnError = Literal["allow", "deny", "raise"]
# A call the breaker let through: the store keys, the breaker that admitted it, its ticket,
# and the local clock's milliseconds when the check started (0 without a cache of denials).
_Admitted = tuple[list[str], CircuitBreaker | None, int, int]
L = TypeVar("L", Lease, AsyncLease)
Limits = str | Policy | Iterable[str | Policy]

#: Identifiers longer than this are hashed, so a key stays short whatever the caller sends.
MAX_IDENTIFIER: Final = 200
# A character that would break the {hash tag}, a control character, or a leading "#" (which
# marks a hashed identifier, so a plain one can never equal a hashed one).
_UNSAFE: Final = re.compile(r"[{}\x00-\x1f\x7f-\x9f]|\A#")
_PREFIX_UNSAFE: Final = re.compile(r"[{}\x00-\x1f\x7f-\x9f]")
# How long a store-error denial asks clients to wait at least, in seconds.
_ERROR_RETRY: Final = 1.0
# The cost check of a limiter made of Concurrency policies alone: nothing to charge it to.
_ANY_COST: Final = 2**53
# Store keys remembered per limiter, so a hot identifier is escaped once, not per check.
_KEY_CACHE: Final = 4096
_time_ns: Final = time.time_ns
#: Denied keys a limiter on a remote store remembers by default.
DENY_CACHE_SIZE: Final = 10_000
#: Seconds between two store calls a limiter with an ``on_event`` listener times (for
#: ``Event.duration``): every call at low traffic, about 100 a second at most under load.
TIME_EVERY: float = 0.01
# When the store call being timed started (perf_counter), or 0.0: per thread and per asyncio
# task, so concurrent checks never mix. Set for timed calls only (a set costs a Token).
_STARTED: ContextVar[float] = ContextVar("ratelimit_started", default=0.0)


def identifier(key: str) -> str:
    """The form of ``key`` used inside the ``{hash tag}`` of store keys.

    Plain text is kept as it is. An empty key, one longer than :data:`MAX_IDENTIFIER`, one with
    ``{``, ``}``, control characters or text that is not valid Unicode, or one starting with
    ``#`` becomes ``#`` and 32 hex digits of its SHA-256: it cannot break the cluster slot rule
    and cannot collide with another identifier. Raises ConfigurationError for a non-str key.
    """
    if type(key) is not str:
        if isinstance(key, str):
            key = str(key)
        else:
            raise ConfigurationError(f"a rate-limit key must be a str, got {key!r}")
    if key and len(key) <= MAX_IDENTIFIER and _UNSAFE.search(key) is None:
        if key.isascii():
            return key
        try:
            key.encode("utf-8")
        except UnicodeEncodeError:
            pass
        else:
            return key
    import hashlib

    return "#" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def check_timeout(timeout: object) -> float | None:
    """``timeout`` of a wait, checked: None or a non-negative int or float (``inf``: None).

    Raises ConfigurationError for anything else (NaN, a bool or text included).
    """
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout >= 0:
        raise ConfigurationError(
            f"timeout must be None or a non-negative number of seconds, got {timeout!r}"
        )
    return None if timeout == float("inf") else timeout


def deadline_of(timeout: float | None) -> float | None:
    """The ``time.monotonic()`` instant a wait of ``timeout`` real seconds ends (None: never).
    Raises ConfigurationError as :func:`check_timeout` does."""
    seconds = check_timeout(timeout)
    return None if seconds is None else time.monotonic() + seconds


def is_async_callable(function: object) -> bool:
    """True for an ``async def`` function, a ``functools.partial`` of one, or an object whose
    ``__call__`` is one."""
    import inspect

    return inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(
        getattr(function, "__call__", None)  # noqa: B004
    )


def _listener(on_event: object, is_async: bool) -> Callable[[Event], object]:
    """``on_event`` as a limiter calls it. An async listener (``async def``, or an object
    whose ``__call__`` is one) is run as a task of the running event loop on an AsyncLimiter,
    each event once; on a sync Limiter nothing would ever await it, so it is refused. Raises
    ConfigurationError for a non-callable or an async listener on a sync limiter."""
    if not callable(on_event):
        raise ConfigurationError(f"on_event must be a callable, got {on_event!r}")
    if not is_async_callable(on_event):
        # An object whose class defines __call__ in Python (ratelimit.otel.Metrics): its bound
        # method, which CPython calls with less work per event than the object itself.
        call = getattr(on_event, "__call__", None)  # noqa: B004
        own = getattr(type(on_event), "__call__", None)  # noqa: B004
        if type(call) is MethodType and call.__self__ is on_event and call.__func__ is own:
            return call
        return on_event
    if not is_async:
        raise ConfigurationError(
            f"on_event {on_event!r} is async: a sync Limiter cannot await it; give it a plain "
            "function, or use an AsyncLimiter"
        )
    listener: Callable[[Event], Awaitable[object]] = on_event

    def emit(event: Event) -> None:
        import asyncio

        coroutine = listener(event)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # an event outside any loop: nothing could ever await it
            close = getattr(coroutine, "close", None)
            if close is not None:
                close()
            logger().warning("ratelimit: async on_event listener called outside an event loop")
            return
        spawn(loop, coroutine, "on_event listener failed")  # type: ignore[arg-type]

    return emit


def _policies(limits: Limits) -> tuple[Policy, ...]:
    items: Iterable[str | Policy] = [limits] if isinstance(limits, (str, Policy)) else limits
    try:
        iterator = iter(items)
    except TypeError:
        raise ConfigurationError(
            f"limits must be text such as '10/second', a policy or a list of them, not {limits!r}"
        ) from None
    policies: list[Policy] = []
    for item in iterator:
        if isinstance(item, str):
            policies.extend(parse(item))
        elif isinstance(item, Policy):
            policies.append(item)
        else:
            raise ConfigurationError(f"not a limit: {item!r} (use text or a policy)")
    if not policies:
        raise ConfigurationError("a limiter needs at least one limit")
    seen: set[str] = set()
    for p in policies:
        if p.id in seen:
            raise ConfigurationError(f"policy {p!r} is given twice")
        seen.add(p.id)
    return tuple(policies)


class _LeasePlan:
    """What a lease's release, renew and settle need of the plan it was acquired under (the
    limiter's, or an identifier's override): which policies hold slots (Concurrency) and
    their leases in milliseconds, which are charged (the rates) and those as a Plan."""

    __slots__ = ("leases_ms", "plan", "rate_plan", "rates", "slots")

    def __init__(self, plan: Plan) -> None:
        policies = plan.policies
        self.plan = plan
        self.slots = tuple(i for i, p in enumerate(policies) if isinstance(p, Concurrency))
        self.rates = tuple(i for i, p in enumerate(policies) if not isinstance(p, Concurrency))
        self.rate_plan = Plan([policies[i] for i in self.rates]) if self.rates else None
        self.leases_ms = tuple(policies[i].period_ms for i in self.slots)


@functools.lru_cache(maxsize=256)
def _lease_plan(plan: Plan) -> _LeasePlan:
    """The _LeasePlan of an override's plan (plan_from_reply keeps one Plan per text)."""
    return _LeasePlan(plan)


class _LimiterBase:
    """The I/O-free core shared by :class:`Limiter` and :class:`AsyncLimiter`: keys, clock,
    cost checks, the store's reply as a Decision, the failure policy, the breaker, the cache of
    denied keys and events. The two faces only differ in how they call the store."""

    __slots__ = ("__weakref__", "_breaker", "_capacity", "_clock", "_denied", "_direct",
                 "_keys", "_lease_plan", "_on_error", "_on_event", "_overrides", "_parts",
                 "_per_node", "_plan", "_prefix", "_rate_plan", "_rates", "_shadow", "_sleep",
                 "_slots", "_store", "_store_clock", "_suffixes", "_time_at")  # fmt: skip
    #: True for the face that runs on an event loop (an async on_event listener is awaited).
    _awaits: ClassVar[bool] = False

    def __init__(
        self,
        limits: Limits,
        store: Store | AsyncStore,
        prefix: str,
        on_error: OnError,
        clock: Callable[[], float] | None,
        deny_cache: int | None,
        on_event: Callable[[Event], object] | None,
        shadow: bool = False,
    ) -> None:
        policies = _policies(limits)
        if not isinstance(prefix, str) or not prefix or _PREFIX_UNSAFE.search(prefix):
            raise ConfigurationError(
                f"prefix must be non-empty text without braces or control characters, "
                f"got {prefix!r}"
            )
        if on_error not in ("allow", "deny", "raise"):
            raise ConfigurationError(
                f"on_error must be 'allow', 'deny' or 'raise', got {on_error!r}"
            )
        if not isinstance(shadow, bool):
            raise ConfigurationError(f"shadow must be True or False, got {shadow!r}")
        if shadow and on_error != "allow":
            raise ConfigurationError(
                f"a shadow limiter never denies nor raises: on_error must be 'allow', "
                f"got {on_error!r}"
            )
        if clock is not None and not callable(clock):
            raise ConfigurationError(f"clock must be a callable returning seconds, got {clock!r}")
        parts: EventParts | None = None
        if on_event is not None:
            listener = on_event
            on_event = _listener(listener, self._awaits)
            # a listener of ours that counts from an event's parts (ratelimit.otel.Metrics) is
            # called with them, and no Event is built; looked up on its class, since a mock
            # answers any attribute
            offer = getattr(type(listener), PARTS, None)
            if offer is not None:
                parts = offer(listener)
        if deny_cache is None:
            deny_cache = 0 if store.needs_clock else DENY_CACHE_SIZE
        if isinstance(deny_cache, bool) or not isinstance(deny_cache, int) or deny_cache < 0:
            raise ConfigurationError(
                f"deny_cache must be a number of keys (0 turns it off), got {deny_cache!r}"
            )
        self._plan = Plan(policies)
        self._prefix = prefix
        # state keys by shape (Plan.state_ids), then the override key: see ratelimit.overrides
        self._suffixes = (*("}:" + s for s in self._plan.state_ids), "}:override")
        self._keys: dict[str, list[str]] = {}
        # Leases: which policies hold slots (Concurrency) and which are charged (the rates);
        # the cost check ignores slots, which take one each whatever the cost.
        self._slots = tuple(i for i, p in enumerate(policies) if isinstance(p, Concurrency))
        self._rates = tuple(i for i, p in enumerate(policies) if not isinstance(p, Concurrency))
        self._rate_plan = Plan([policies[i] for i in self._rates]) if self._rates else None
        self._lease_plan = _LeasePlan(self._plan)
        self._capacity = min((policies[i].limit for i in self._rates), default=_ANY_COST)
        self._on_error: OnError = on_error
        self._clock = clock
        self._store_clock = clock is None and not store.needs_clock
        self._sleep: Callable[[float], object] | None = None
        self._denied = DeniedCache(deny_cache) if deny_cache else None
        self._on_event = on_event
        self._parts = parts
        self._shadow = shadow
        self._time_at = 0.0  # when to time the next store call (perf_counter)
        self._breaker: CircuitBreaker | None = store.breaker
        # A cluster store keeps one breaker per master: one dead master must not take the
        # keys of the others down with it.
        self._per_node: Callable[[Sequence[str]], CircuitBreaker | None] | None = (
            store.breaker_for if self._breaker is not None and store.per_node_breakers else None
        )
        if on_event is not None and self._breaker is not None:
            # held weakly by the breaker: a limiter that is dropped is collected and hears no
            # more outages
            self._breaker.subscribe(self._breaker_event)
        check_fits(store, self._plan, "this limiter")
        # A memory store with no cache, breaker or listener in front: a check is the store's
        # computation and nothing else (hit and peek skip _start and _finish).
        # (store, its one step or None, its one policy or None)
        self._direct: tuple[MemoryStore, Step | None, Policy | None] | None = None
        if (type(store) is MemoryStore and self._denied is None and on_event is None
                and not shadow):  # fmt: skip
            if len(policies) == 1:
                self._direct = (store, self._plan.steps[0], policies[0])
            else:
                self._direct = (store, None, None)

    @property
    def policies(self) -> tuple[Policy, ...]:
        """The policies, in the order given."""
        return self._plan.policies

    @property
    def needs_acquire(self) -> bool:
        """Whether a policy is a :class:`Concurrency`: calls take leases (:meth:`acquire`),
        never ``hit``."""
        return bool(self._slots)

    @property
    def prefix(self) -> str:
        """The first part of every store key."""
        return self._prefix

    @property
    def on_error(self) -> OnError:
        """What a store failure decides: ``"allow"``, ``"deny"`` or ``"raise"``."""
        return self._on_error

    @property
    def shadow(self) -> bool:
        """True when the limiter decides and reports but never denies (``shadow=True``)."""
        return self._shadow

    @property
    def breaker(self) -> CircuitBreaker | None:
        """The store's circuit breaker (None for the memory store): ``breaker.state`` is
        ``"closed"``, ``"open"`` or ``"half_open"``."""
        return self._breaker

    def keys(self, key: str) -> list[str]:
        """The exact state keys of ``key`` in the store. No I/O.

        :param key: as for ``hit``. Kept as it is inside the ``{hash tag}`` when plain; an
            empty key, one longer than :data:`MAX_IDENTIFIER`, one with ``{``, ``}``, control
            characters or text that is not valid Unicode, or one starting with ``#`` becomes
            ``#`` and 32 hex digits of its SHA-256.
        :returns: one key per policy, ``<prefix>:{<identifier>}:<algorithm code><period>``
            (see :mod:`ratelimit.overrides` for the whole rule).
        :raises ConfigurationError: for a key that is not a str.
        """
        return self._keys_of(key)[:-1]

    def _override_key(self, key: str) -> str:
        """``<prefix>:{<identifier>}:override``. Raises ConfigurationError for a non-str key."""
        return self._keys_of(key)[-1]

    def _discard(self, key: str) -> None:
        if self._denied is not None:
            self._denied.discard(key)

    def _keys_of(self, key: str) -> list[str]:
        """The keys a store call for ``key`` names: its state keys, then its override key."""
        keys = self._keys.get(key) if type(key) is str else None
        if keys is None:
            head = f"{self._prefix}:{{{identifier(key)}"
            keys = [head + suffix for suffix in self._suffixes]
            if len(key) <= MAX_IDENTIFIER:  # never hold on to a huge key itself
                remember(self._keys, key, keys, _KEY_CACHE)
        return keys

    def _now(self) -> int | None:
        """Milliseconds from the limiter's clock; None to let the store read its own time."""
        if self._clock is not None:
            return round(self._clock() * 1000)
        if self._store_clock:
            return None
        return round(time.time() * 1000)

    def _local(self) -> float:
        """Seconds on the local clock that times waits and cached denials."""
        return self._clock() if self._clock is not None else time.monotonic()

    def _check_cost(self, cost: int) -> None:
        """Raises ConfigurationError for a cost that is not a non-negative int of at most
        2**53. A cost above what the limiter's own policies can ever hold passes: an
        identifier's override may hold it, and only the store knows (:meth:`_beyond`)."""
        if type(cost) is int and 0 <= cost <= self._capacity:
            return
        if type(cost) is not int or cost < 0:  # bool, float, or an int subclass (IntEnum...)
            kind = "" if type(cost) in (int, bool) else f" (a {type(cost).__name__})"
            raise ConfigurationError(f"cost must be a non-negative integer, got {cost!r}{kind}")
        if cost > _ANY_COST:
            raise ConfigurationError(f"cost must be at most 2**53, got {cost}")

    def _beyond(self, cost: int, reply: Reply) -> Reply:
        """``reply``, unless ``cost`` is more than the limiter's own policies can ever hold and
        no override applied (the store then denied it and charged nothing): that raises
        ConfigurationError, as bad input."""
        if cost <= self._capacity or reply[0] > 1 or self._rate_plan is None:
            return reply
        smallest = min(self._rate_plan.policies, key=lambda p: p.limit)
        raise ConfigurationError(
            f"cost {cost} is more than {smallest!r} can ever allow ({smallest.limit}), and "
            "no override of this identifier holds it: such a hit would be denied forever"
        )

    def _start(self, key: str, cost: int) -> Decision | _Admitted:
        """Before a store call: a Decision when none is needed (a cached denial, or the
        breaker is open), else the store keys, the breaker that admitted the call and its
        ticket. The breaker is resolved here once per check and carried to :meth:`_finish` or
        :meth:`_failed`: a cluster slot that moves meanwhile must not make the call report to
        another node's breaker. Raises ConfigurationError for bad input."""
        self._check_cost(cost)
        keys = self._keys_of(key)
        denied = self._denied
        started = 0
        if denied is not None:
            clock = self._clock  # self._local(), inlined: this is the flood's hot path
            started = round((time.monotonic() if clock is None else clock()) * 1000)
            cached = denied.get(key, cost, started)
            if cached is not None:
                if self._shadow:
                    cached = _shadowed(cached)
                if self._on_event is not None:
                    self._emit("shadow_denied" if self._shadow else "cached", cached.policy,
                               None, cached)  # fmt: skip
                return cached
        admitted = self._admit(keys, started)
        if self._on_event is not None and type(admitted) is tuple:
            now = time.perf_counter()  # time this store call, at most once per TIME_EVERY
            if now >= self._time_at:
                self._time_at = now + TIME_EVERY
                _STARTED.set(now)
        return admitted

    def _admit(self, keys: list[str], started: int = 0) -> Decision | _Admitted:
        """The breaker's word on a call for ``keys``: ``(keys, breaker, ticket, started)``
        when it may go to the store, else the on_error Decision."""
        breaker = self._breaker_for(keys)
        if breaker is None:
            return keys, None, 0, started
        ticket = breaker.admit()
        if ticket is None:
            return self._failed(None, breaker)
        return keys, breaker, ticket, started

    def _direct_check(self, key: str, cost: int, charge: bool) -> Decision:
        """``hit`` (``charge``) or ``peek`` on a memory store with nothing in front of it:
        what :meth:`_start`, the store and :meth:`_finish` do, without the parts that have
        nothing to do there (cache, breaker, events)."""
        beyond = type(cost) is not int or not 0 <= cost <= self._capacity
        if beyond:
            self._check_cost(cost)  # raises, unless an override could hold the cost
        keys = self._keys.get(key) if type(key) is str else None
        if keys is None:
            keys = self._keys_of(key)
        clock = self._clock
        now = round(clock() * 1000) if clock is not None else _time_ns() // 1_000_000
        store, step, policy = self._direct  # type: ignore[misc]
        if beyond or step is None or policy is None or store.has_overrides:
            reply = store.evaluate(self._plan, keys, now, cost, charge)
            return self._decide(self._beyond(cost, reply))
        # one policy: as the store's evaluate and _decide, without the reply list
        allowed, remaining, reset, retry, _ = store.check_one(step, keys[0], now, cost, charge)
        return Decision(allowed == 1, policy.limit, remaining, reset / 1000, retry / 1000,
                        policy, None)  # fmt: skip

    def _breaker_for(self, keys: list[str]) -> CircuitBreaker | None:
        """The breaker that guards the store call for ``keys``."""
        return self._breaker if self._per_node is None else self._per_node(keys)

    def _finish(self, key: str, cost: int, reply: Reply, breaker: CircuitBreaker | None,
                ticket: int, started: int) -> Decision:  # fmt: skip
        """After a store call that answered: the Decision, with the breaker that admitted the
        call (and its ticket), the cache (the call started at ``started`` local milliseconds)
        and events told. An override this version cannot read (``_decide`` raises its
        StoreError, not an outage) is decided by ``on_error``, as a failed call."""
        try:
            decision = self._decide(reply)
        except StoreError as error:
            return self._failed(error, breaker, ticket)
        if breaker is not None and breaker.state != "closed":
            breaker.success(ticket)
        if cost > self._capacity:
            self._beyond(cost, reply)
        kind: EventKind = "allowed"
        denied = self._denied
        if decision.allowed:
            if denied is not None:
                denied.allowed(key, cost)
        else:
            kind = "denied"
            # the real denial: _start shadows it again when it answers; never a Concurrency
            # denial, which a release elsewhere can end at any moment
            if denied is not None and not isinstance(decision.policy, Concurrency):
                denied.put(key, cost, decision, started)
            if self._shadow:
                decision, kind = _shadowed(decision), "shadow_denied"
        if self._on_event is not None:
            timed = _STARTED.get()
            self._emit(kind, decision.policy, None, decision, _took(timed) if timed else None)
        return decision

    def _decide(self, reply: Reply) -> Decision:
        """The store's ``reply`` as a Decision. Raises StoreError (not an outage) for an
        override this version cannot read."""
        policies = self._plan.policies
        if reply[0] > 1:  # an override applied: its plan ends the reply (lua/limiter.lua)
            end = 1 + 4 * ((len(reply) - 1) // 9)
            policies = plan_from_reply(reply[end:]).policies
            reply = [reply[0] - 2, *reply[1:end]]
        if len(policies) == 1:
            policy = policies[0]
            return Decision(reply[0] == 1, policy.limit, reply[2], reply[3] / 1000,
                            reply[4] / 1000, policy, None)  # fmt: skip
        # the binding policy: the one that denied and frees up last, else the least headroom
        allowed = reply[0] == 1
        best = 1
        for at in range(5, 4 * len(policies), 4):
            if allowed:
                if reply[at + 1] < reply[best + 1]:
                    best = at
            elif reply[at] == 0 and (reply[best] == 1 or reply[at + 3] > reply[best + 3]):
                best = at
        policy = policies[best // 4]
        return Decision(allowed, policy.limit, reply[best + 1], reply[best + 2] / 1000,
                        reply[best + 3] / 1000, policy, None, None, (policies, reply))  # fmt: skip

    def _failed(self, error: StoreError | None, breaker: CircuitBreaker | None,
                ticket: int | None = None) -> Decision:  # fmt: skip
        """The decision ``on_error`` makes when the store failed (``error``, on the call that
        ``breaker`` admitted with ``ticket``) or ``breaker`` kept the call from it (None).
        Raises StoreError for ``"raise"``."""
        if error is not None and breaker is not None:
            if error.outage:
                breaker.failure(error, ticket)
            else:  # the store answered (a slot moving): it is up, this check just failed
                breaker.success(ticket)
        if self._on_event is not None:
            started = _STARTED.get()
            took = _took(started) if started and error is not None else None
            self._emit("store_error", self._plan.policies[0], error, None, took)
        if self._on_error == "raise":
            if error is not None:
                raise error
            last = breaker.last_error if breaker is not None else None
            raise StoreError(
                f"the store is unavailable (circuit breaker open for another "
                f"{breaker.retry_after if breaker else 0:.2f}s after: {last})"
            ) from (last.__cause__ or last if last is not None else None)
        allowed = self._on_error == "allow"
        retry = 0.0 if allowed else max(_ERROR_RETRY, breaker.retry_after if breaker else 0.0)
        details = tuple(
            Decision(allowed, p.limit, 0, 0.0, retry, p, (), "store_error")
            for p in self._plan.policies
        )
        policy = self._plan.policies[0]
        return Decision(allowed, policy.limit, 0, 0.0, retry, policy, details, "store_error")

    @staticmethod
    def _finish_reset(breaker: CircuitBreaker | None, ticket: int) -> None:
        if breaker is not None and breaker.state != "closed":
            breaker.success(ticket)

    def _forget(self, key: str) -> list[str]:
        keys = self._keys_of(key)
        self._discard(key)
        return keys

    def _emit(self, kind: EventKind, policy: Policy | None, error: BaseException | None = None,
              decision: Decision | None = None, duration: float | None = None,
              breaker: CircuitBreaker | None = None) -> None:  # fmt: skip
        listener = self._on_event
        if listener is None:
            return
        try:
            parts = self._parts
            if parts is None or breaker is not None:
                listener(Event(kind, self._prefix, policy, error, decision, duration, breaker))
            else:
                parts(kind, self._prefix, policy, error, decision, duration)
        except Exception:
            logger().exception("ratelimit: on_event listener failed")

    def _breaker_event(self, event: str, breaker: CircuitBreaker) -> None:
        kind: EventKind = "breaker_open" if event == "open" else "breaker_closed"
        self._emit(kind, None, breaker.last_error if event == "open" else None, None, None,
                   breaker)  # fmt: skip

    # Leases: the parts of acquire, release, renew and settle that do no I/O.

    def _refuse_hit(self) -> None:
        raise ConfigurationError(
            f"{type(self).__name__} holds a Concurrency policy: use acquire() and release the "
            "lease (a slot taken by hit() could never be released)"
        )

    def _slot_keys(self, lease: Lease | AsyncLease) -> list[str]:
        return [lease._keys[i] for i in lease._plan.slots]

    def _own(self, lease: Lease | AsyncLease) -> tuple[Plan | None, list[str]]:
        """For a lease granted under an override, the limiter's own plan and state keys (the
        state it settles must outlive the override under them too); else ``(None, [])``."""
        if lease._plan is self._lease_plan:
            return None, []
        return self._plan, self._keys_of(lease.key)[:-1]

    def _rate_keys(self, lease: Lease | AsyncLease) -> list[str]:
        return [lease._keys[i] for i in lease._plan.rates]

    def _lease_call(self, keys: list[str]) -> _Admitted | None:
        """The breaker's word on a release, renew or settle for ``keys``: admitted, or None
        when it is open (the call is not made)."""
        breaker = self._breaker_for(keys)
        if breaker is None:
            return keys, None, 0, 0
        ticket = breaker.admit()
        return None if ticket is None else (keys, breaker, ticket, 0)

    def _leased(self, cls: type[L], key: str, cost: int, reply: Reply, admitted: _Admitted,
                lease_id: str) -> L:  # fmt: skip
        """The lease of an acquire the store answered: holding its slots and its charge when
        the store allowed it (a shadow limiter may report a denial as allowed: it holds
        nothing)."""
        keys, breaker, ticket, started = admitted
        acquired = reply[-1]  # the store's now, which ends an acquire's reply
        if reply[0] > 1:  # an override applied: the check's reply ends with its plan
            reply = reply[:-1]
        decision = self._finish(key, cost, reply, breaker, ticket, started)
        # denied (0, or 2 under an override), or an override this version cannot read (the
        # lease holds nothing: any slot the store took is freed by its lease expiry)
        if reply[0] & 1 == 0 or decision.reason == "store_error":
            return cls(self, key, decision)
        plan = self._lease_plan
        if reply[0] > 1:  # the lease holds the override's policies and their state keys
            plan = _lease_plan(plan_from_reply(reply[1 + 4 * ((len(reply) - 1) // 9) :]))
            keys = plan.plan.state_keys(keys[-1])
        return cls(self, key, decision, lease_id, keys, acquired, cost, plan)

    def _release_failed(self, error: StoreError, breaker: CircuitBreaker | None, ticket: int,
                        plan: _LeasePlan) -> None:  # fmt: skip
        """A release failed: told to the breaker (which logs once per outage) and left to the
        lease's expiry; never raised."""
        if breaker is None:
            logger().warning("ratelimit: a lease release failed (%s); its lease expiry frees "
                             "the slot", error)  # fmt: skip
        elif error.outage:
            breaker.failure(error, ticket)
        else:
            breaker.success(ticket)
        self._emit("store_error", plan.plan.policies[plan.slots[0]], error)

    @staticmethod
    def _timed_out(decision: Decision, deadline: float | None) -> bool:
        if deadline is None:
            return False
        return time.monotonic() + decision.retry_after > deadline

    def __repr__(self) -> str:
        policies = ", ".join(map(repr, self._plan.policies))
        return f"{type(self).__name__}([{policies}], prefix={self._prefix!r})"


def _took(started: float) -> float:
    """Seconds since the timed store call of this check ``started``; forgets the start."""
    _STARTED.set(0.0)
    return time.perf_counter() - started


def _shadowed(denial: Decision) -> Decision:
    """What a shadow limiter answers for ``denial``: allowed, ``reason="shadow"``, with the
    numbers enforcement reports; ``details`` keep enforcement's per-policy verdicts."""
    details = tuple(
        Decision(d.allowed, d.limit, d.remaining, d.reset_after, d.retry_after, d.policy)
        for d in denial.details
    )
    return Decision(True, denial.limit, denial.remaining, denial.reset_after,
                    denial.retry_after, denial.policy, details, "shadow")  # fmt: skip


class Limiter(_LimiterBase):
    """Decides, per key, whether a caller may go on; for sync code.

    Every policy is checked and charged together: a hit is admitted only when all of them
    allow it, and then charged to all of them, in one atomic store call. Methods block on the
    store's I/O (none on the memory store).

    ::

        limiter = rl.Limiter("5/second")
        if not limiter.hit(f"user:{user_id}").allowed:
            ...

    :param limits: text such as ``"100/minute; 1000/day"`` (see :func:`ratelimit.parse`), a
        policy, or a list of them.
    :param store: a :class:`MemoryStore` (the default, a new one per limiter),
        :class:`RedisStore` or :class:`UpstashStore`.
    :param prefix: the first part of every store key: non-empty text without braces or
        control characters.
    :param on_error: what a store failure (or the store's open circuit breaker) decides:
        ``"allow"`` (the default) and ``"deny"`` return a Decision with
        ``reason="store_error"``; ``"raise"`` raises :class:`StoreError`. See the Failure
        policy page of the docs.
    :param clock: a callable returning seconds, like ``time.time``. By default Redis stores
        read the server's ``TIME`` (app servers with skewed clocks agree) and the memory store
        reads ``time.time``.
    :param deny_cache: how many denied keys to remember locally, each until its
        ``retry_after``, answering them without a store call (``reason="cached"``); by
        default 10,000 on remote stores and off on the memory store; 0 turns it off.
    :param on_event: a callable given an :class:`~ratelimit.events.Event` for each decision
        and each breaker change (never the key). An ``async def`` one is run as a task by
        :class:`AsyncLimiter` and refused here. The store's breaker holds the limiter weakly:
        a dropped limiter is collected and hears no more.
    :param shadow: decide, charge and report as enforcement would, but never deny: a
        would-be denial comes back ``allowed=True, reason="shadow"`` with enforcement's
        numbers, charges nothing and emits ``"shadow_denied"``; ``wait`` never sleeps. Needs
        ``on_error="allow"``.
    :raises ConfigurationError: for bad limits or options (each named), an async store, or a
        :class:`MemoryStore` whose ``max_keys`` cannot hold one key per policy.
    """

    __slots__ = ()
    _store: Store
    _overrides: Overrides

    def __init__(
        self,
        limits: Limits,
        *,
        store: Store | None = None,
        prefix: str = "ratelimit",
        on_error: OnError = "allow",
        clock: Callable[[], float] | None = None,
        deny_cache: int | None = None,
        on_event: Callable[[Event], object] | None = None,
        shadow: bool = False,
    ) -> None:
        store = MemoryStore() if store is None else store
        if not isinstance(store, Store):
            raise ConfigurationError(
                f"Limiter needs a sync store (MemoryStore, RedisStore, UpstashStore), got "
                f"{store!r}; use AsyncLimiter for async stores"
            )
        super().__init__(limits, store, prefix, on_error, clock, deny_cache, on_event, shadow)
        self._store = store
        self._overrides = Overrides(store, self._override_key, self._now, self._discard)

    @property
    def store(self) -> Store:
        """Where the state lives."""
        return self._store

    @property
    def overrides(self) -> Overrides:
        """Per-identifier limits kept in the store: an
        :class:`~ratelimit.overrides.Overrides` (``set``, ``get``, ``delete``)."""
        return self._overrides

    def hit(self, key: str, cost: int = 1) -> Decision:
        """Spend ``cost`` for ``key`` if every policy allows it; else spend nothing.

        Blocks on one store call (none when a cached denial or the open breaker answers).

        :param key: who is asking, such as ``"user:42"``; any str (long or unusual ones are
            hashed, see :meth:`keys`).
        :param cost: units to spend, a non-negative int; 0 only looks.
        :returns: the :class:`Decision`.
        :raises ConfigurationError: for a key that is not a str, a cost that is negative, not
            an int or more than a policy can ever hold (after the store call, which tells
            whether an override holding it applies), or on a limiter holding a
            :class:`Concurrency` policy (use :meth:`acquire`).
        :raises StoreError: when the store failed, or its breaker is open, and
            ``on_error="raise"``.
        """
        if self._slots:
            self._refuse_hit()
        if self._direct is not None:
            return self._direct_check(key, cost, True)
        started = self._start(key, cost)
        if type(started) is not tuple:
            return started  # type: ignore[return-value]
        keys, breaker, ticket, at = started
        try:
            reply = self._store.evaluate(self._plan, keys, self._now(), cost, True)
        except StoreError as error:
            return self._failed(error, breaker, ticket)
        return self._finish(key, cost, reply, breaker, ticket, at)

    def peek(self, key: str, cost: int = 1) -> Decision:
        """The Decision a :meth:`hit` of ``cost`` would get now, charging nothing; its
        ``remaining`` is what is there now. Unlike ``hit``, it works on a limiter holding a
        :class:`Concurrency` policy too: that policy's detail shows the free slots.

        Blocks, returns and raises as :meth:`hit` does.
        """
        if self._direct is not None:
            return self._direct_check(key, cost, False)
        started = self._start(key, cost)
        if type(started) is not tuple:
            return started  # type: ignore[return-value]
        keys, breaker, ticket, at = started
        try:
            reply = self._store.evaluate(self._plan, keys, self._now(), cost, False)
        except StoreError as error:
            return self._failed(error, breaker, ticket)
        return self._finish(key, cost, reply, breaker, ticket, at)

    def acquire(self, key: str, cost: int = 1) -> Lease:
        """Take a slot in every :class:`Concurrency` policy and charge ``cost`` to every rate
        policy, all or nothing, in one store call.

        ``with limiter.acquire(key) as decision:`` raises :class:`RateLimitExceeded` when
        denied and releases on exit. A lease takes one slot whatever its cost; ``cost=0``
        charges the rate policies nothing. A store failure follows ``on_error`` as in
        :meth:`hit` (``"allow"``: a lease that holds nothing). Blocks on one store call. See
        the In-flight limits page of the docs.

        :param key: who is asking, as for :meth:`hit`.
        :param cost: units to charge the rate policies, as for :meth:`hit`.
        :returns: the :class:`Lease` (``allowed``, ``decision``, ``release()``, ``renew()``,
            ``settle()``).
        :raises ConfigurationError: for a bad key or cost, as :meth:`hit`.
        :raises StoreError: when the store failed and ``on_error="raise"``.
        """
        started = self._start(key, cost)
        if type(started) is not tuple:
            return Lease(self, key, started)  # type: ignore[arg-type]
        lease_id = new_lease_id()
        try:
            reply = self._store.acquire(self._plan, started[0], self._now(), cost, lease_id)
        except StoreError as error:
            return Lease(self, key, self._failed(error, started[1], started[2]))
        return self._leased(Lease, key, cost, reply, started, lease_id)

    def _release(self, lease: Lease) -> None:
        if not lease._plan.slots:
            return
        admitted = self._lease_call(self._slot_keys(lease))
        if admitted is None:
            return  # the store is known to be down: the lease expiry frees the slots
        keys, breaker, ticket, _ = admitted
        try:
            self._store.release(keys, lease.id)  # type: ignore[arg-type]
        except StoreError as error:
            self._release_failed(error, breaker, ticket, lease._plan)
        else:
            self._finish_reset(breaker, ticket)

    def _renew(self, lease: Lease) -> bool:
        if not lease._plan.slots:
            return True
        keys = self._slot_keys(lease)
        admitted = self._lease_call(keys)
        if admitted is None:
            self._failed(None, self._breaker_for(keys))
            return False
        _, breaker, ticket, _ = admitted
        try:
            reply = self._store.renew(keys, self._now(), lease.id, lease._plan.leases_ms)  # type: ignore[arg-type]
        except StoreError as error:
            self._failed(error, breaker, ticket)
            return False
        self._finish_reset(breaker, ticket)
        return reply[0] == 1

    def _settle(self, lease: Lease, actual: int) -> list[int] | None:
        rate_plan = lease._plan.rate_plan
        if rate_plan is None:
            return []
        keys = self._rate_keys(lease)
        admitted = self._lease_call(keys)
        if admitted is None:
            self._failed(None, self._breaker_for(keys))
            return None
        _, breaker, ticket, _ = admitted
        own, own_keys = self._own(lease)
        try:
            charged = self._store.settle(rate_plan, keys, self._now(), lease._acquired,
                                         lease._charged or [], actual, own, own_keys)  # fmt: skip
        except StoreError as error:
            self._failed(error, breaker, ticket)
            return None
        self._finish_reset(breaker, ticket)
        self._discard(lease.key)  # units given back may end a cached denial
        return charged

    def reset(self, key: str) -> None:
        """Forget ``key``'s state in every policy (delete its exact store keys) and its cached
        denial.

        Blocks on one store call, none while the store's breaker is open (the reset is then
        not done, as when it fails); otherwise a failed reset is logged and ignored.

        :param key: as for :meth:`hit`.
        :raises ConfigurationError: for a key that is not a str.
        :raises StoreError: when the store failed, or its breaker is open, and
            ``on_error="raise"``.
        """
        started = self._admit(self._forget(key))
        if type(started) is not tuple:
            return  # the breaker is open: on_error decided, no timeout spent
        keys, breaker, ticket, _ = started
        try:
            self._store.delete(keys)
        except StoreError as error:
            self._failed(error, breaker, ticket)
        else:
            self._finish_reset(breaker, ticket)

    def wait(self, key: str, cost: int = 1, timeout: float | None = None) -> Decision:
        """Sleep until ``cost`` is allowed for ``key``, then spend it.

        Blocks the thread (``time.sleep``) for at most ``timeout`` seconds of real time
        (``time.monotonic``, whatever the limiter's ``clock``).

        :param key: as for :meth:`hit`.
        :param cost: as for :meth:`hit`.
        :param timeout: the longest wait in seconds, a non-negative number; None or ``inf``:
            as long as it takes.
        :returns: the allowed :class:`Decision`.
        :raises RateLimitExceeded: carrying the last Decision, as soon as the wait would pass
            ``timeout``.
        :raises ConfigurationError: for a timeout that is not a non-negative number (NaN
            included), and as :meth:`hit` does.
        :raises StoreError: as :meth:`hit` does.
        """
        deadline = deadline_of(timeout)
        sleep = self._sleep or time.sleep
        while True:
            decision = self.hit(key, cost)
            if decision.allowed:
                return decision
            if self._timed_out(decision, deadline):
                raise RateLimitExceeded(decision)
            sleep(decision.retry_after)


class AsyncLimiter(_LimiterBase):
    """:class:`Limiter` for asyncio code: the same arguments and methods, awaitable.

    Methods await the store's I/O and never block the event loop on the network. The
    arguments not listed here are those of :class:`Limiter`.

    :param store: a :class:`MemoryStore` (the default), :class:`AsyncRedisStore` or
        :class:`AsyncUpstashStore`.
    :param on_event: as for :class:`Limiter`; an ``async def`` listener is run as a task of
        the running event loop, each event once.
    :raises ConfigurationError: as :class:`Limiter` does, and for a sync store.
    """

    __slots__ = ()
    _store: AsyncStore
    _overrides: AsyncOverrides
    _awaits = True

    def __init__(
        self,
        limits: Limits,
        *,
        store: AsyncStore | None = None,
        prefix: str = "ratelimit",
        on_error: OnError = "allow",
        clock: Callable[[], float] | None = None,
        deny_cache: int | None = None,
        on_event: Callable[[Event], object] | None = None,
        shadow: bool = False,
    ) -> None:
        store = MemoryStore() if store is None else store
        if not isinstance(store, AsyncStore):
            raise ConfigurationError(
                f"AsyncLimiter needs an async store (MemoryStore, AsyncRedisStore, "
                f"AsyncUpstashStore), got {store!r}; use Limiter for sync stores"
            )
        super().__init__(limits, store, prefix, on_error, clock, deny_cache, on_event, shadow)
        self._store = store
        self._overrides = AsyncOverrides(store, self._override_key, self._now, self._discard)

    @property
    def store(self) -> AsyncStore:
        """Where the state lives."""
        return self._store

    @property
    def overrides(self) -> AsyncOverrides:
        """As :attr:`Limiter.overrides`, awaitable."""
        return self._overrides

    async def hit(self, key: str, cost: int = 1) -> Decision:
        """As :meth:`Limiter.hit`, awaiting the store."""
        if self._slots:
            self._refuse_hit()
        if self._direct is not None:
            return self._direct_check(key, cost, True)
        started = self._start(key, cost)
        if type(started) is not tuple:
            return started  # type: ignore[return-value]
        keys, breaker, ticket, at = started
        try:
            reply = await self._store.aevaluate(self._plan, keys, self._now(), cost, True)
        except StoreError as error:
            return self._failed(error, breaker, ticket)
        return self._finish(key, cost, reply, breaker, ticket, at)

    async def peek(self, key: str, cost: int = 1) -> Decision:
        """As :meth:`Limiter.peek`, awaiting the store."""
        if self._direct is not None:
            return self._direct_check(key, cost, False)
        started = self._start(key, cost)
        if type(started) is not tuple:
            return started  # type: ignore[return-value]
        keys, breaker, ticket, at = started
        try:
            reply = await self._store.aevaluate(self._plan, keys, self._now(), cost, False)
        except StoreError as error:
            return self._failed(error, breaker, ticket)
        return self._finish(key, cost, reply, breaker, ticket, at)

    def acquire(self, key: str, cost: int = 1) -> Acquiring:
        """As :meth:`Limiter.acquire`: ``lease = await alimiter.acquire(key)`` gives the
        :class:`AsyncLease`; ``async with alimiter.acquire(key) as decision:`` raises
        RateLimitExceeded when denied and releases on exit. Nothing is sent before either."""
        return Acquiring(self, key, cost)

    async def _acquire(self, key: str, cost: int) -> AsyncLease:
        started = self._start(key, cost)
        if type(started) is not tuple:
            return AsyncLease(self, key, started)  # type: ignore[arg-type]
        lease_id = new_lease_id()
        try:
            reply = await self._store.aacquire(self._plan, started[0], self._now(), cost,
                                               lease_id)  # fmt: skip
        except StoreError as error:
            return AsyncLease(self, key, self._failed(error, started[1], started[2]))
        return self._leased(AsyncLease, key, cost, reply, started, lease_id)

    async def _release(self, lease: AsyncLease) -> None:
        if not lease._plan.slots:
            return
        admitted = self._lease_call(self._slot_keys(lease))
        if admitted is None:
            return
        keys, breaker, ticket, _ = admitted
        try:
            await self._store.arelease(keys, lease.id)  # type: ignore[arg-type]
        except StoreError as error:
            self._release_failed(error, breaker, ticket, lease._plan)
        else:
            self._finish_reset(breaker, ticket)

    async def _renew(self, lease: AsyncLease) -> bool:
        if not lease._plan.slots:
            return True
        keys = self._slot_keys(lease)
        admitted = self._lease_call(keys)
        if admitted is None:
            self._failed(None, self._breaker_for(keys))
            return False
        _, breaker, ticket, _ = admitted
        try:
            reply = await self._store.arenew(keys, self._now(), lease.id, lease._plan.leases_ms)  # type: ignore[arg-type]
        except StoreError as error:
            self._failed(error, breaker, ticket)
            return False
        self._finish_reset(breaker, ticket)
        return reply[0] == 1

    async def _settle(self, lease: AsyncLease, actual: int) -> list[int] | None:
        rate_plan = lease._plan.rate_plan
        if rate_plan is None:
            return []
        keys = self._rate_keys(lease)
        admitted = self._lease_call(keys)
        if admitted is None:
            self._failed(None, self._breaker_for(keys))
            return None
        _, breaker, ticket, _ = admitted
        own, own_keys = self._own(lease)
        try:
            charged = await self._store.asettle(rate_plan, keys, self._now(), lease._acquired,
                                                lease._charged or [], actual, own,
                                                own_keys)  # fmt: skip
        except StoreError as error:
            self._failed(error, breaker, ticket)
            return None
        self._finish_reset(breaker, ticket)
        self._discard(lease.key)  # units given back may end a cached denial
        return charged

    async def reset(self, key: str) -> None:
        """As :meth:`Limiter.reset`, awaiting the store."""
        started = self._admit(self._forget(key))
        if type(started) is not tuple:
            return  # the breaker is open: on_error decided, no timeout spent
        keys, breaker, ticket, _ = started
        try:
            await self._store.adelete(keys)
        except StoreError as error:
            self._failed(error, breaker, ticket)
        else:
            self._finish_reset(breaker, ticket)

    async def wait(self, key: str, cost: int = 1, timeout: float | None = None) -> Decision:
        """As :meth:`Limiter.wait`, sleeping with ``asyncio.sleep`` (the loop keeps running).
        Raises RateLimitExceeded when the wait would pass ``timeout``."""
        deadline = deadline_of(timeout)
        sleep: Callable[[float], Awaitable[object]]
        if self._sleep is None:
            import asyncio

            sleep = asyncio.sleep
        else:
            sleep = self._sleep  # type: ignore[assignment]
        while True:
            decision = await self.hit(key, cost)
            if decision.allowed:
                return decision
            if self._timed_out(decision, deadline):
                raise RateLimitExceeded(decision)
            await sleep(decision.retry_after)
