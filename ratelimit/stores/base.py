"""What a store is: where the limiter's state lives and how one check runs there.

A store runs one *plan* (a limiter's policies, and their script arguments) for a list of keys
(one per policy, all of one identifier) and answers with the script's reply: a flat list of
integers, ``[allowed, allowed_1, remaining_1, reset_ms_1, retry_ms_1, allowed_2, ...]``, as
``lua/limiter.lua`` documents. The limiter turns that reply into a :class:`Decision`. Stores
raise :class:`StoreError` (chained from the client's error) for anything that went wrong.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ratelimit._algorithms import ALGORITHMS, Check

if TYPE_CHECKING:
    from ratelimit.breaker import CircuitBreaker
    from ratelimit.policies import Policy

__all__ = ["AsyncStore", "Plan", "Reply", "Store"]

Reply = list[int]
Step = tuple[Check, int, int, int]


class Plan:
    """A limiter's policies, ready to run: the script's per-policy ARGV and, for the memory
    store, the Python twin's steps. Built once per limiter."""

    __slots__ = ("argv", "policies", "steps")

    def __init__(self, policies: Sequence[Policy]) -> None:
        self.policies: tuple[Policy, ...] = tuple(policies)
        self.argv: tuple[str, ...] = tuple(a for p in self.policies for a in p._argv)
        steps: list[Step] = []
        for p in self.policies:
            code, limit, period, rate = p._argv
            steps.append((ALGORITHMS[code], int(limit), int(period), int(rate)))
        self.steps: tuple[Step, ...] = tuple(steps)


def script_args(plan: Plan, keys: Sequence[str], now: int | None, cost: int, charge: bool
                ) -> list[str | int]:  # fmt: skip
    """The ``numkeys, *KEYS, *ARGV`` part of an EVAL/EVALSHA call of the limiter script."""
    return [len(keys), *keys, "" if now is None else now, cost, 1 if charge else 0, *plan.argv]


class Store:
    """A store the sync :class:`Limiter` can use. Its methods block on the store's I/O."""

    #: True when the store has no clock of its own, so the limiter always passes ``now``.
    needs_clock: bool = False
    #: The circuit breaker of a store that can fail (None for the memory store).
    breaker: CircuitBreaker | None = None
    #: True when :meth:`breaker_for` depends on the keys (one breaker per cluster master).
    per_node_breakers: bool = False

    def breaker_for(self, keys: Sequence[str]) -> CircuitBreaker | None:
        """The breaker that guards a call on ``keys``; :attr:`breaker` unless the store keeps
        one per part of itself that fails alone (a cluster's masters)."""
        return self.breaker

    def evaluate(self, plan: Plan, keys: Sequence[str], now: int | None, cost: int,
                 charge: bool) -> Reply:  # fmt: skip
        """Run ``plan`` on ``keys``; charge ``cost`` if ``charge`` and every policy allows.

        ``now`` is milliseconds, or None for the store's own time. Raises StoreError.
        """
        raise NotImplementedError

    def delete(self, keys: Sequence[str]) -> None:
        """Forget these exact keys. Raises StoreError."""
        raise NotImplementedError


class AsyncStore:
    """A store the :class:`AsyncLimiter` can use: the same two calls, awaitable."""

    needs_clock: bool = False
    breaker: CircuitBreaker | None = None
    per_node_breakers: bool = False

    def breaker_for(self, keys: Sequence[str]) -> CircuitBreaker | None:
        """As :meth:`Store.breaker_for`."""
        return self.breaker

    async def aevaluate(self, plan: Plan, keys: Sequence[str], now: int | None, cost: int,
                        charge: bool) -> Reply:  # fmt: skip
        """As :meth:`Store.evaluate`, without blocking the event loop. Raises StoreError."""
        raise NotImplementedError

    async def adelete(self, keys: Sequence[str]) -> None:
        """As :meth:`Store.delete`. Raises StoreError."""
        raise NotImplementedError
