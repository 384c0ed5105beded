"""Per-identifier overrides: one identifier's own limits, kept in the store.

:class:`Overrides` and :class:`AsyncOverrides` (``limiter.overrides``), and the readers of a
stored override's plan text. An override lives at ``<prefix>:{<identifier>}:override`` and is
read by every check inside its one script call. State keys are named by algorithm and period,
not by limit, so an override keeps what its identifier has spent under a policy of the same
algorithm and period; a changed period or time unit starts afresh. See the Production controls
page of the docs, and "Overrides" in ``lua/limiter.lua``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Final

from ratelimit.errors import ConfigurationError
from ratelimit.policies import Concurrency, FixedWindow, Policy, SlidingWindow, TokenBucket
from ratelimit.stores.base import Plan, unreadable_override

if TYPE_CHECKING:
    from ratelimit.limiter import Limits
    from ratelimit.stores.base import AsyncStore, Store

__all__ = ["MAX_TTL_MS", "AsyncOverrides", "Overrides", "plan_from_reply", "plan_from_spec"]

#: The longest ``ttl`` of an override, in milliseconds: 2**53 - 1 (about 285,000 years), the
#: largest integer every store keeps exactly (Redis's ``SET ... PX``, JSON over HTTP).
MAX_TTL_MS: Final = 2**53 - 1
_PLANS: Final = 1000  # plans remembered by text, as the scripts' own table
_plans: dict[str, Plan] = {}


def _policy(code: str, limit: int, period: int, rate: int, unit: int) -> Policy:
    """The policy that a plan's five words name (period in ticks of ``unit`` ms)."""
    span = timedelta(milliseconds=period * unit)
    if code == "f":
        policy: Policy = FixedWindow(limit, span)
    elif code == "s":
        policy = SlidingWindow(limit, span)
    elif code == "t":
        policy = TokenBucket(rate, span, limit)
    elif code == "c":  # the lease in milliseconds
        policy = Concurrency(limit, span)
    else:
        raise ValueError(f"unknown algorithm code {code!r}")
    if policy.tick_ms != unit:
        raise ValueError(f"{policy!r} counts in {policy.tick_ms} ms, not {unit}")
    return policy


def plan_from_spec(text: str) -> Plan:
    """The Plan of a plan text (as stored in an override). Raises StoreError, not an outage
    (:func:`~ratelimit.stores.base.unreadable_override`), for a text this version cannot
    read."""
    plan = _plans.get(text)
    if plan is None:
        words = text.split()
        try:
            if not words or len(words) % 5:
                raise ValueError("not five words per policy")
            plan = Plan([
                _policy(words[at], *(int(w) for w in words[at + 1 : at + 5]))
                for at in range(0, len(words), 5)
            ])  # fmt: skip
        except (ValueError, ConfigurationError) as error:
            raise unreadable_override(f"unreadable override {text!r}: {error}") from error
        if len(_plans) >= _PLANS:
            _plans.clear()  # a flood of distinct overrides: start over, stay bounded
        _plans[text] = plan
    return plan


def plan_from_reply(tail: list[int]) -> Plan:
    """The override's Plan from the integers that end a check's reply (five per policy: the
    algorithm code's byte, limit, period, rate, unit). Raises StoreError."""
    return plan_from_spec(" ".join(chr(n) if i % 5 == 0 else str(n) for i, n in enumerate(tail)))


def _ttl_ms(ttl: float | timedelta | None) -> int | None:
    """``ttl`` in milliseconds (None: none). One rule on every store: a positive, finite
    number of seconds (or a timedelta), from 1 ms to :data:`MAX_TTL_MS`. Raises
    ConfigurationError naming the value."""
    if ttl is None:
        return None
    given = ttl
    if isinstance(ttl, timedelta):
        ttl = ttl.total_seconds()
    if (isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not ttl > 0
            or not math.isfinite(ttl)):  # fmt: skip
        raise ConfigurationError(
            f"ttl must be a positive, finite number of seconds (or None: no expiry), got {given!r}"
        )
    ms = round(ttl * 1000)
    if ms < 1:
        raise ConfigurationError(f"ttl must be at least 1 millisecond, got {given!r}")
    if ms > MAX_TTL_MS:
        raise ConfigurationError(
            f"ttl must be at most {MAX_TTL_MS // 1000} seconds ({MAX_TTL_MS} ms, what every "
            f"store keeps exactly), got {given!r}; None: no expiry"
        )
    return ms


def check_fits(store: object, plan: Plan, whose: str) -> None:
    """Raise ConfigurationError when ``store`` cannot hold the state keys of ``plan`` (the
    policies of ``whose``: a limiter, an override) for one identifier: a MemoryStore whose
    ``max_keys`` is below its number of policies (each policy's write would evict another's
    key, and nothing would be limited)."""
    from ratelimit.stores.memory import MemoryStore

    n = len(plan.policies)
    if isinstance(store, MemoryStore) and store.max_keys < n:
        raise ConfigurationError(
            f"MemoryStore(max_keys={store.max_keys}) cannot hold the {n} keys (one per "
            f"policy) of {whose} for one identifier; give it max_keys >= {n}"
        )


class _OverridesBase:
    """What the sync and async faces share: validation and keys. Does no I/O."""

    __slots__ = ("_forget", "_key", "_now")

    def __init__(self, key: Callable[[str], str], now: Callable[[], int | None],
                 forget: Callable[[str], object]) -> None:  # fmt: skip
        self._key = key  # identifier -> its override key; ConfigurationError for non-text
        self._now = now
        self._forget = forget  # drops the identifier's cached denial in this process

    def _prepare(self, identifier: str, limits: Limits, ttl: float | timedelta | None,
                 store: object) -> tuple[str, Plan, int | None]:  # fmt: skip
        """What ``set`` writes: the override key, the plan and the ttl in ms. No I/O. Raises
        ConfigurationError for anything ``store`` could not keep as asked."""
        from ratelimit.limiter import _policies

        key = self._key(identifier)
        plan = Plan(_policies(limits))
        check_fits(store, plan, "this override")
        return key, plan, _ttl_ms(ttl)

    @staticmethod
    def _policies(text: str | None) -> tuple[Policy, ...] | None:
        return None if text is None else plan_from_spec(text).policies


class Overrides(_OverridesBase):
    """The overrides of a :class:`~ratelimit.Limiter`'s prefix: ``limiter.overrides``, never
    built by callers.

    Each method blocks on one store call and raises :class:`~ratelimit.StoreError` when it
    failed, whatever the limiter's ``on_error`` says.
    """

    __slots__ = ("_store",)

    def __init__(self, store: Store, key: Callable[[str], str], now: Callable[[], int | None],
                 forget: Callable[[str], object]) -> None:  # fmt: skip
        super().__init__(key, now, forget)
        self._store = store

    def set(self, identifier: str, limits: Limits, ttl: float | timedelta | None = None) -> None:
        """Give ``identifier`` its own limits instead of the limiter's, from the next check
        that reaches the store. Blocks on one store call (one script: the ``SET``, and the
        identifier's spent token buckets kept until full under the override).

        :param identifier: the key, as given to ``hit``.
        :param limits: text, a policy or a list, as the limiter takes.
        :param ttl: how long the override lasts, in seconds (or a ``timedelta``) on the store's
            clock; None: until deleted.
        :raises ConfigurationError: writing nothing, for an identifier that is not text,
            limits that do not parse, more policies than a :class:`~ratelimit.MemoryStore`'s
            ``max_keys`` holds for one identifier, or a ttl that is not a positive, finite
            number of at most :data:`MAX_TTL_MS` milliseconds.
        :raises StoreError: when the store failed.
        """
        key, plan, ttl_ms = self._prepare(identifier, limits, ttl, self._store)
        self._store.set_override(key, plan, ttl_ms, self._now())
        self._forget(identifier)

    def get(self, identifier: str) -> tuple[Policy, ...] | None:
        """``identifier``'s override. Blocks on one store call.

        :param identifier: the key, as given to ``hit``.
        :returns: the override's policies, or None when it has none.
        :raises ConfigurationError: for an identifier that is not text.
        :raises StoreError: when the store failed, or holds an override this version cannot
            read.
        """
        key = self._key(identifier)
        return self._policies(self._store.get_override(key, self._now()))

    def delete(self, identifier: str) -> None:
        """Remove ``identifier``'s override, if any: the limiter's own policies apply again.
        Blocks on one store call (one ``DEL``).

        :param identifier: the key, as given to ``hit``.
        :raises ConfigurationError: for an identifier that is not text.
        :raises StoreError: when the store failed.
        """
        self._store.delete_override(self._key(identifier))
        self._forget(identifier)


class AsyncOverrides(_OverridesBase):
    """:class:`Overrides` of an :class:`~ratelimit.AsyncLimiter`: the same methods, awaiting
    the store."""

    __slots__ = ("_store",)

    def __init__(self, store: AsyncStore, key: Callable[[str], str],
                 now: Callable[[], int | None],
                 forget: Callable[[str], object]) -> None:  # fmt: skip
        super().__init__(key, now, forget)
        self._store = store

    async def set(self, identifier: str, limits: Limits,
                  ttl: float | timedelta | None = None) -> None:  # fmt: skip
        """As :meth:`Overrides.set`, awaiting the store."""
        key, plan, ttl_ms = self._prepare(identifier, limits, ttl, self._store)
        await self._store.aset_override(key, plan, ttl_ms, self._now())
        self._forget(identifier)

    async def get(self, identifier: str) -> tuple[Policy, ...] | None:
        """As :meth:`Overrides.get`, awaiting the store."""
        key = self._key(identifier)
        return self._policies(await self._store.aget_override(key, self._now()))

    async def delete(self, identifier: str) -> None:
        """As :meth:`Overrides.delete`, awaiting the store."""
        await self._store.adelete_override(self._key(identifier))
        self._forget(identifier)
