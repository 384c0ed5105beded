"""Leases: what :meth:`Limiter.acquire` and :meth:`AsyncLimiter.acquire` return.

A lease is one acquire's hold on a limiter: a slot in each :class:`~ratelimit.Concurrency`
policy until it is released (or its ``lease`` runs out), and the cost charged to each rate
policy, which :meth:`Lease.settle` corrects once the real cost is known. The store calls are
the limiter's; a lease only keeps what they need (its id, when and what it charged).
"""

from __future__ import annotations

import os
from collections.abc import Generator
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ratelimit._tasks import spawn
from ratelimit.errors import ConfigurationError, RateLimitExceeded
from ratelimit.policies import _EXACT

if TYPE_CHECKING:
    from ratelimit.decision import Decision
    from ratelimit.limiter import AsyncLimiter, Limiter

__all__ = ["Acquiring", "AsyncLease", "Lease"]


def _release_in_background(lease: AsyncLease, error: BaseException) -> None:
    """After ``lease``'s release was interrupted by ``error``: when that is a cancellation (a
    client gone, a timeout, a cancel scope that cancels every await of its cleanup), send the
    release again as a task of the running loop, so that the slots are freed now rather than
    when the lease runs out. A release is idempotent: sent twice, it frees the slots once."""
    import asyncio  # loaded already: this runs on an event loop

    if not isinstance(error, asyncio.CancelledError):
        return
    spawn(asyncio.get_running_loop(), lease._limiter._release(lease), "a lease release failed")


def new_lease_id() -> str:
    """A fresh lease id: 16 random hex digits (the member of the store's sorted sets)."""
    return os.urandom(8).hex()


def _check_actual(actual: object) -> int:
    if isinstance(actual, bool) or not isinstance(actual, int) or actual < 0:
        raise ConfigurationError(f"settle needs a non-negative integer cost, got {actual!r}")
    return actual


class _LeaseBase:
    """What both faces of a lease hold; no I/O."""

    __slots__ = ("_acquired", "_charged", "_keys", "_limiter", "_plan", "_released", "_settled",
                 "decision", "id", "key")  # fmt: skip

    def __init__(self, limiter: Any, key: str, decision: Decision, lease_id: str | None = None,
                 keys: list[str] | None = None, acquired: int = 0,
                 cost: int | None = None, plan: Any = None) -> None:  # fmt: skip
        self._limiter = limiter
        self.key = key
        self.decision = decision
        #: the lease's id in the store; None for a lease that holds nothing
        self.id = lease_id
        # the plan the acquire was granted under (the limiter's, or the identifier's override:
        # the limiter's LeasePlan) and its state keys, in its order: release, renew and settle
        # act on exactly these
        self._plan = plan
        self._keys = keys or []
        self._acquired = acquired  # the store's now at the acquire, milliseconds
        # the cost charged for this lease in each rate policy (None: it holds nothing), and
        # the cost it was last settled to
        self._charged: list[int] | None = (
            None if cost is None or plan is None else [cost] * len(plan.rates)
        )
        self._settled = cost
        self._released = False

    @property
    def allowed(self) -> bool:
        """Whether the acquire was allowed (``decision.allowed``)."""
        return self.decision.allowed

    @property
    def holds(self) -> bool:
        """Whether the lease holds anything in the store: allowed by the store (not by
        ``on_error``), and for its slots, not released yet."""
        return self._charged is not None and not self._released

    def _settling(self, actual: object) -> int | None:
        """The actual cost to send to the store, or None when there is nothing to send.
        Raises ConfigurationError for an ``actual`` that is not a non-negative int, or so
        large that a rate policy could not count it exactly (the rule a policy's own numbers
        follow: ``2 * actual * period`` in its ticks below 2**53)."""
        actual = _check_actual(actual)
        rate_plan = self._plan.rate_plan if self._plan is not None else None
        for policy in rate_plan.policies if rate_plan is not None else ():
            if 2 * actual * (policy.period_ms // policy.tick_ms) >= _EXACT:
                raise ConfigurationError(
                    f"settle cost {actual} is too large for {policy!r} to count exactly"
                )
        if self._charged is None or actual == self._settled:
            return None
        return actual

    def __repr__(self) -> str:
        state = "released" if self._released else "held" if self._charged is not None else "empty"
        return f"{type(self).__name__}(key={self.key!r}, {state}, decision={self.decision!r})"


class Lease(_LeaseBase):
    """What :meth:`Limiter.acquire` returns: one acquire's hold on the limiter.

    ``with limiter.acquire(key) as decision:`` raises :class:`~ratelimit.RateLimitExceeded`
    when denied and releases the lease on exit, always. A denied lease, or one allowed by
    ``on_error`` after a store failure, holds nothing: its calls send nothing. Built by the
    limiter, never by callers.

    :ivar key: the key it was acquired for.
    :ivar decision: the acquire's :class:`~ratelimit.Decision`.
    :ivar id: the lease's id in the store (16 hex digits); None for a lease that holds
        nothing.
    """

    __slots__ = ()
    _limiter: Limiter

    def release(self) -> None:
        """Free the lease's slots. Blocks on one store call the first time, none after.

        Never raises: a failed release is logged once per outage and left to the lease's
        expiry.
        """
        if self._released:
            return
        self._released = True
        if self._charged is not None:
            self._limiter._release(self)

    def renew(self) -> bool:
        """Hold the slots for another ``lease`` seconds from now. Blocks on one store call.

        :returns: True when every slot was still held; False when the lease was released, had
            expired (its slots may be someone else's now: they are not taken back), holds
            nothing, or the store failed.
        :raises StoreError: when the store failed and ``on_error="raise"``.
        """
        if self._released or self._charged is None:
            return False
        return self._limiter._renew(self)

    def settle(self, actual: int) -> None:
        """Charge the rate policies as if this lease had cost ``actual``.

        A lower cost gives the difference back into the window or bucket charged, while it
        still counts; a higher one charges the excess without a check. Works after
        :meth:`release`; settling twice to the same cost sends nothing. Blocks on one store
        call. See the In-flight limits page of the docs.

        :param actual: the real cost, a non-negative int.
        :raises ConfigurationError: for a negative or non-integer ``actual``.
        :raises StoreError: when the store failed and ``on_error="raise"`` (otherwise the error
            is logged and nothing changes).
        """
        actual_cost = self._settling(actual)
        if actual_cost is not None:
            charged = self._limiter._settle(self, actual_cost)
            if charged is not None:
                self._charged, self._settled = charged, actual_cost

    def __enter__(self) -> Decision:
        if not self.decision.allowed:
            raise RateLimitExceeded(self.decision)
        return self.decision

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:  # fmt: skip
        self.release()


class AsyncLease(_LeaseBase):
    """:class:`Lease` for :meth:`AsyncLimiter.acquire`: the same attributes, awaitable calls
    that await the store, and ``async with``."""

    __slots__ = ()
    _limiter: AsyncLimiter

    async def release(self) -> None:
        """As :meth:`Lease.release`, awaiting the store. Cancelled while the store call is in
        flight, it sends the release again in the background and raises the cancellation."""
        if self._released:
            return
        self._released = True
        if self._charged is not None:
            try:
                await self._limiter._release(self)
            except BaseException as error:
                _release_in_background(self, error)
                raise

    async def renew(self) -> bool:
        """As :meth:`Lease.renew`, awaiting the store."""
        if self._released or self._charged is None:
            return False
        return await self._limiter._renew(self)

    async def settle(self, actual: int) -> None:
        """As :meth:`Lease.settle`, awaiting the store."""
        actual_cost = self._settling(actual)
        if actual_cost is not None:
            charged = await self._limiter._settle(self, actual_cost)
            if charged is not None:
                self._charged, self._settled = charged, actual_cost

    async def __aenter__(self) -> Decision:
        if not self.decision.allowed:
            raise RateLimitExceeded(self.decision)
        return self.decision

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        tb: TracebackType | None) -> None:  # fmt: skip
        await self.release()


class Acquiring:
    """What :meth:`AsyncLimiter.acquire` returns: ``await`` it for the :class:`AsyncLease`,
    or use it as ``async with alimiter.acquire(key) as decision:``, which raises
    :class:`~ratelimit.RateLimitExceeded` when denied and releases on exit, always. Nothing
    is sent before either."""

    __slots__ = ("_cost", "_key", "_lease", "_limiter")

    def __init__(self, limiter: AsyncLimiter, key: str, cost: int) -> None:
        self._limiter = limiter
        self._key = key
        self._cost = cost
        self._lease: AsyncLease | None = None

    def __await__(self) -> Generator[Any, None, AsyncLease]:
        return self._limiter._acquire(self._key, self._cost).__await__()

    async def __aenter__(self) -> Decision:
        lease = self._lease = await self._limiter._acquire(self._key, self._cost)
        return await lease.__aenter__()

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        tb: TracebackType | None) -> None:  # fmt: skip
        if self._lease is not None:
            await self._lease.release()
