"""The answer of a limiter: :class:`Decision`."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ratelimit.policies import Policy

__all__ = ["Decision"]


class Decision:
    """Whether a hit may go on, with the numbers a client needs to behave.

    - ``allowed``: the hit was admitted (and, for ``hit``, charged to every policy).
    - ``limit``: the limit of the binding policy: the one that denied (the one that frees up
      last, when several did), else the one with the least headroom.
    - ``remaining``: units the binding policy still admits; never negative. After an allowed
      ``hit``, what is left after it; after ``peek`` or a deny, what is there now.
    - ``reset_after``: seconds until the binding policy is back to full capacity.
    - ``retry_after``: seconds until the same cost would be allowed, if nobody else hits the
      key; ``0.0`` when allowed. Exact to the millisecond.
    - ``policy``: the binding policy. ``details``: one Decision per policy, in the limiter's
      order (their own ``details`` are empty).
    - ``reason``: ``None`` when the store decided; ``"store_error"`` when the store failed and
      the limiter's ``on_error`` decided; ``"cached"`` when a cached denial answered.
    """

    __slots__ = (
        "_details",
        "allowed",
        "limit",
        "policy",
        "reason",
        "remaining",
        "reset_after",
        "retry_after",
    )

    def __init__(
        self,
        allowed: bool,
        limit: int,
        remaining: int,
        reset_after: float,
        retry_after: float,
        policy: Policy,
        details: tuple[Decision, ...] | None = (),
        reason: str | None = None,
    ) -> None:
        self.allowed = allowed
        self.limit = limit
        self.remaining = remaining
        self.reset_after = reset_after
        self.retry_after = retry_after
        self.policy = policy
        self._details = details  # None: one policy, whose Decision is built when asked for
        self.reason = reason

    @property
    def details(self) -> tuple[Decision, ...]:
        """One Decision per policy, in the limiter's order."""
        details = self._details
        if details is None:
            only = Decision(self.allowed, self.limit, self.remaining, self.reset_after,
                            self.retry_after, self.policy, (), self.reason)  # fmt: skip
            details = self._details = (only,)
        return details

    def __repr__(self) -> str:
        reason = f", reason={self.reason!r}" if self.reason else ""
        return (
            f"Decision(allowed={self.allowed}, limit={self.limit}, remaining={self.remaining}, "
            f"reset_after={self.reset_after:.3f}, retry_after={self.retry_after:.3f}, "
            f"policy={self.policy!r}{reason})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Decision):
            return NotImplemented
        names = ("allowed", "limit", "remaining", "reset_after", "retry_after", "policy",
                 "details", "reason")  # fmt: skip
        return all(getattr(self, name) == getattr(other, name) for name in names)

    __hash__ = None  # type: ignore[assignment]
