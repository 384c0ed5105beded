"""The answer of a limiter: :class:`Decision`."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ratelimit.policies import Policy

__all__ = ["Decision", "per_policy"]


class Decision:
    """The answer of a limiter: whether a call may go on, and the numbers a client needs.

    Built by the limiter; each argument is kept as the attribute of the same name.

    :param allowed: the call was admitted (and, for ``hit``, charged to every policy).
    :param limit: the limit of the binding policy: the one that denied (the one that frees up
        last, when several did), else the one with the least headroom.
    :param remaining: units the binding policy still admits, never negative: after an allowed
        ``hit``, what is left after it; after ``peek`` or a denial, what is there now.
    :param reset_after: seconds until the binding policy is back to full capacity.
    :param retry_after: seconds until the same cost would be allowed if nobody else hits the
        key, exact to the millisecond; ``0.0`` when allowed.
    :param policy: the binding :class:`~ratelimit.Policy`.
    :param details: one Decision per policy, in the limiter's order (their own ``details``
        are empty); None builds them on first read from ``raw``.
    :param reason: None when the store decided; ``"store_error"`` when the store failed and
        the limiter's ``on_error`` decided; ``"cached"`` when a cached denial answered;
        ``"shadow"`` when a shadow limiter allowed what enforcement would deny.
    :param raw: the policies and the store's reply that ``details`` are built from (the
        limiter's, not for callers).
    """

    __slots__ = (
        "_details",
        "_raw",
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
        raw: tuple[tuple[Policy, ...], list[int]] | None = None,
    ) -> None:
        self.allowed = allowed
        self.limit = limit
        self.remaining = remaining
        self.reset_after = reset_after
        self.retry_after = retry_after
        self.policy = policy
        # None: built when first asked for, from this Decision (one policy) or from `raw`, the
        # policies and the store's reply (several), so a check that never reads them pays nothing
        self._details = details
        self._raw = raw
        self.reason = reason

    @property
    def details(self) -> tuple[Decision, ...]:
        """One Decision per policy, in the limiter's order."""
        details = self._details
        if details is None:
            if self._raw is None:
                details = (self._alone(),)
            else:
                policies, reply = self._raw
                details = tuple(
                    Decision(
                        allowed=reply[at] == 1,
                        limit=p.limit,
                        remaining=reply[at + 1],
                        reset_after=reply[at + 2] / 1000,
                        retry_after=reply[at + 3] / 1000,
                        policy=p,
                    )
                    for p, at in zip(policies, range(1, 4 * len(policies), 4), strict=True)
                )
                self._raw = None
            self._details = details
        return details

    @property
    def per_policy(self) -> tuple[Decision, ...]:
        """One Decision per policy, in the limiter's order, where a one-policy Decision stands
        for itself (so rendering it builds nothing). What response headers render; the same
        numbers as :attr:`details`, whichever way the Decision was built."""
        if self._details is None and self._raw is None:
            return (self,)
        return self.details or (self,)

    def _alone(self) -> Decision:
        """This one-policy Decision as its own detail (no details of its own)."""
        return Decision(
            allowed=self.allowed,
            limit=self.limit,
            remaining=self.remaining,
            reset_after=self.reset_after,
            retry_after=self.retry_after,
            policy=self.policy,
            details=(),
            reason=self.reason,
        )

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


def per_policy(decision: Decision) -> tuple[Decision, ...]:
    """``decision.per_policy``: kept for callers of the function form."""
    return decision.per_policy
