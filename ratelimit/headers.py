"""Rate-limit response headers and the deny response, rendered from a :class:`Decision` by a
:class:`Renderer`: shared by every HTTP integration; pure code, no I/O.

The modes that ``headers=`` of each integration names (one, a tuple of several, or None for no
rate-limit headers):

- ``"ietf"``: draft-ietf-httpapi-ratelimit-headers-11, ``RateLimit-Policy`` and ``RateLimit``,
  Structured Field Lists with one item per policy, named by the policy's ``id``. A
  ``Concurrency`` policy advertises ``q`` = its slots with ``qu="concurrent-requests"`` and no
  ``w``; its ``r`` is the free slots and ``t`` the time until its latest lease runs out.
- ``"draft-6"``: ``RateLimit-Limit``, ``RateLimit-Remaining``, ``RateLimit-Reset`` (seconds,
  rounded up) of the binding policy.
- ``"legacy"``: ``X-RateLimit-Limit``, ``X-RateLimit-Remaining``, ``X-RateLimit-Reset`` (a Unix
  time in whole seconds).

Every denial has ``Retry-After`` (seconds, rounded up, never 0) and an
``application/problem+json`` body. A decision made because the store failed
(``reason="store_error"``) gets no rate-limit headers, and is answered ``503``, not ``429``,
when it denied. See the Integrations overview page of the docs.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final, Literal, TypeAlias

from ratelimit.cache import remember
from ratelimit.errors import ConfigurationError

if TYPE_CHECKING:
    from ratelimit.decision import Decision
    from ratelimit.policies import Policy

__all__ = ["HeaderMode", "HeadersOption", "Renderer", "retry_after_seconds"]

HeaderMode: TypeAlias = Literal["ietf", "draft-6", "legacy"]
HeadersOption: TypeAlias = HeaderMode | Sequence[HeaderMode] | None

MODES: Final = ("ietf", "draft-6", "legacy")
_NAMES: Final = {
    "ietf": ("RateLimit-Policy", "RateLimit"),
    "draft-6": ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"),
    "legacy": ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"),
}
QUOTA_EXCEEDED: Final = "https://iana.org/assignments/http-problem-types#quota-exceeded"
REDUCED_CAPACITY: Final = (
    "https://iana.org/assignments/http-problem-types#temporary-reduced-capacity"
)
PROBLEM_JSON: Final = "application/problem+json"


def parse_modes(headers: HeadersOption) -> tuple[HeaderMode, ...]:
    """The header modes ``headers`` names, validated, without repeats, in a fixed order.

    Raises ConfigurationError for an unknown mode."""
    if headers is None:
        return ()
    chosen = [headers] if isinstance(headers, str) else list(headers)
    for mode in chosen:
        if mode not in MODES:
            raise ConfigurationError(
                f"unknown headers mode {mode!r}: use 'ietf', 'draft-6', 'legacy', a tuple of "
                "them, or None"
            )
    return tuple(m for m in MODES if m in chosen)


def retry_after_seconds(decision: Decision) -> int:
    """``Retry-After`` of a denial: whole seconds, rounded up, at least 1."""
    return max(1, math.ceil(decision.retry_after))


def _window_seconds(policy: Policy) -> int:
    """``w`` of a policy: its window, or a token bucket's full-refill time, in seconds (>= 1)."""
    rate = getattr(policy, "rate", None)
    if isinstance(rate, int):  # a token bucket: burst tokens take burst/rate periods to refill
        return max(1, -(-policy.limit * policy.period_ms // (rate * 1000)))
    return max(1, -(-policy.period_ms // 1000))


class Renderer:
    """Renders Decisions as response header fields in the chosen modes, and denials as
    complete responses. Build one per integration: it caches each policy's fixed text.
    Rendering never raises.

    :param headers: a mode, a tuple of modes, or None (see the module docstring).
    :param partition_key_secret: bytes; when given, ``RateLimit`` items carry ``pk``, an
        HMAC-SHA256 (12 bytes) of the rate-limit key under this secret, never the key itself.
        Use the same secret on every server.
    :raises ConfigurationError: for an unknown mode or a secret that is not bytes.
    """

    __slots__ = (
        "_draft6",
        "_entries",
        "_fast",
        "_ietf",
        "_joined",
        "_legacy",
        "_names",
        "_raw_entries",
        "_raw_names",
        "_secret",
        "modes",
    )

    def __init__(
        self, headers: HeadersOption = "ietf", *, partition_key_secret: bytes | None = None
    ) -> None:
        self.modes = parse_modes(headers)
        if partition_key_secret is not None and not isinstance(
            partition_key_secret, (bytes, bytearray)
        ):
            raise ConfigurationError(
                f"partition_key_secret must be bytes, got {type(partition_key_secret).__name__}"
            )
        self._secret = bytes(partition_key_secret) if partition_key_secret else None
        self._ietf = "ietf" in self.modes
        self._draft6 = "draft-6" in self.modes
        self._legacy = "legacy" in self.modes
        self._names: tuple[str, ...] = tuple(n for m in self.modes for n in _NAMES[m])
        self._raw_names = tuple(n.lower().encode("latin-1") for n in self._names)
        self._entries: dict[str, tuple[str, str]] = {}
        self._raw_entries: dict[str, tuple[bytes, bytes]] = {}
        self._fast = self.modes == ("ietf",) and self._secret is None
        self._joined: dict[tuple[str, ...], str] = {}

    def __repr__(self) -> str:
        return f"Renderer(headers={self.modes!r}, partition_key={self._secret is not None})"

    # --- the pieces -----------------------------------------------------------------------------

    def _entry(self, policy: Policy) -> tuple[str, str]:
        """A policy's fixed texts, computed once: its ``RateLimit-Policy`` item and the head of
        its ``RateLimit`` item. Keyed by ``policy.id`` (a str hashes faster than a policy)."""
        entry = self._entries.get(policy.id)
        if entry is None:
            name = f'"{policy.id}"'
            if policy.algorithm == "concurrency":  # slots in flight, not a quota per window
                quota = f'{name};q={policy.limit};qu="concurrent-requests"'
            else:
                quota = f"{name};q={policy.limit};w={_window_seconds(policy)}"
            entry = (quota, f"{name};r=")
            remember(self._entries, policy.id, entry, 4096)
        return entry

    def policy_value(self, decision: Decision) -> str:
        """The ``RateLimit-Policy`` value of the decision's policies (computed once per set of
        policies, then reused)."""
        details = decision.per_policy
        if len(details) == 1:
            return self._entry(details[0].policy)[0]
        ids = tuple(d.policy.id for d in details)
        text = self._joined.get(ids)
        if text is None:
            text = ", ".join(self._entry(d.policy)[0] for d in details)
            remember(self._joined, ids, text, 1024)
        return text

    def _pk(self, key: str | None) -> str:
        if self._secret is None or key is None:
            return ""
        digest = hmac.new(self._secret, key.encode("utf-8", "surrogatepass"), hashlib.sha256)
        return ";pk=:" + base64.b64encode(digest.digest()[:12]).decode("ascii") + ":"

    def ratelimit_value(self, decision: Decision, key: str | None = None) -> str:
        """The ``RateLimit`` value: one item per policy, ``r`` remaining, ``t`` seconds to full
        capacity, and ``pk`` when a secret was given and ``key`` is known."""
        pk = self._pk(key)
        ceil = math.ceil
        details = decision.per_policy
        if len(details) == 1:
            d = details[0]
            return f"{self._entry(d.policy)[1]}{d.remaining};t={ceil(d.reset_after)}{pk}"
        return ", ".join(
            f"{self._entry(d.policy)[1]}{d.remaining};t={ceil(d.reset_after)}{pk}" for d in details
        )

    def values(self, decision: Decision, key: str | None = None) -> list[str]:
        """The header values, aligned with :attr:`names`; empty for a store-error decision."""
        if decision.reason == "store_error" or not self._names:
            return []
        out: list[str] = []
        if self._ietf:
            out.append(self.policy_value(decision))
            out.append(self.ratelimit_value(decision, key))
        if self._draft6 or self._legacy:
            limit = str(decision.limit)
            remaining = str(decision.remaining)
            if self._draft6:
                out += (limit, remaining, str(math.ceil(decision.reset_after)))
            if self._legacy:
                reset = str(math.ceil(time.time() + decision.reset_after))
                out += (limit, remaining, reset)
        return out

    # --- whole header lists ---------------------------------------------------------------------

    @property
    def names(self) -> tuple[str, ...]:
        """The header names this renderer writes, in order."""
        return self._names

    def fields(self, decision: Decision, key: str | None = None) -> list[tuple[str, str]]:
        """The rate-limit header fields of an answered request.

        :param decision: the limiter's Decision.
        :param key: the rate-limit key, for ``pk`` (only with a ``partition_key_secret``).
        :returns: ``(name, value)`` text pairs (WSGI style); empty for a store-error decision
            or ``headers=None``.
        """
        return list(zip(self._names, self.values(decision, key), strict=False))

    def raw_fields(self, decision: Decision, key: str | None = None) -> list[tuple[bytes, bytes]]:
        """As :meth:`fields`, as ASGI wants them: lower-case latin-1 bytes."""
        if decision.reason == "store_error" or not self._names:
            return []
        if self._fast:
            # The common case, built straight as bytes: "ietf" only, no pk.
            details = decision.per_policy
            ceil = math.ceil
            if len(details) == 1:
                one = details[0]
                policy, head = self._raw_entry(one.policy)
                state = b"%s%d;t=%d" % (head, one.remaining, ceil(one.reset_after))
                return [(b"ratelimit-policy", policy), (b"ratelimit", state)]
            raw_entry = self._raw_entry
            state = b", ".join([
                b"%s%d;t=%d" % (raw_entry(d.policy)[1], d.remaining, ceil(d.reset_after))
                for d in details
            ])  # fmt: skip
            policy = self.policy_value(decision).encode("latin-1")
            return [(b"ratelimit-policy", policy), (b"ratelimit", state)]
        names = self._raw_names
        return [(names[i], v.encode("latin-1")) for i, v in enumerate(self.values(decision, key))]

    def _raw_entry(self, policy: Policy) -> tuple[bytes, bytes]:
        entry = self._raw_entries.get(policy.id)
        if entry is None:
            policy_text, head = self._entry(policy)
            entry = (policy_text.encode("latin-1"), head.encode("latin-1"))
            remember(self._raw_entries, policy.id, entry, 4096)
        return entry

    def problem(self, decision: Decision) -> tuple[int, dict[str, object]]:
        """The status and the problem+json object (RFC 9457) answering a denial.

        :param decision: the denying Decision.
        :returns: ``429``, or ``503`` when a store failure denied it
            (``reason="store_error"``), and the problem object as a dict.
        """
        seconds = retry_after_seconds(decision)
        if decision.reason == "store_error":
            return 503, {
                "type": REDUCED_CAPACITY,
                "title": "Service Unavailable",
                "status": 503,
                "detail": f"The rate limiter is unavailable; retry in {seconds} seconds.",
                "retry_after": seconds,
            }
        unit = "second" if seconds == 1 else "seconds"
        violated = [d.policy.id for d in decision.per_policy if not d.allowed]
        return 429, {
            "type": QUOTA_EXCEEDED,
            "title": "Too Many Requests",
            "status": 429,
            "detail": f"Rate limit exceeded; retry in {seconds} {unit}.",
            "retry_after": seconds,
            "violated-policies": violated or [decision.policy.id],
        }

    def deny(
        self, decision: Decision, key: str | None = None
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """The response to a denied request.

        :param decision: the denying Decision.
        :param key: as for :meth:`fields`.
        :returns: ``(status, headers, body)``: ``429`` with the rate-limit fields,
            ``Retry-After`` and a problem+json body; ``503`` with ``Retry-After`` (and no
            rate-limit fields) when a store failure denied it.
        """
        status, problem = self.problem(decision)
        body = json.dumps(problem, separators=(",", ":")).encode("utf-8")
        headers = self.fields(decision, key)
        headers += [
            ("Retry-After", str(problem["retry_after"])),
            ("Content-Type", PROBLEM_JSON),
            ("Content-Length", str(len(body))),
        ]
        return status, headers, body
