"""Policies: *what* is limited and *how* it is counted.

The three rate algorithms (:class:`FixedWindow`, :class:`SlidingWindow`, :class:`TokenBucket`),
the in-flight limit :class:`Concurrency`, their base :class:`Policy`, and :func:`parse`, which
reads limits written as text. A policy is an immutable value that knows nothing of keys or
stores. See the Choosing an algorithm page of the docs.
"""

from __future__ import annotations

import math
import re
from datetime import timedelta
from typing import ClassVar, Final

from ratelimit.errors import ConfigurationError

__all__ = ["Concurrency", "FixedWindow", "Policy", "SlidingWindow", "TokenBucket", "parse"]

# Every product the scripts form stays below 2**53, so Lua's doubles hold it exactly.
_EXACT: Final = 2**53
# Time units (milliseconds per tick) a policy may count in, finest first: milliseconds unless
# its products in milliseconds would leave 2**53 (a large quota over a long period).
_UNITS_MS: Final = (1, 10, 100, 1_000, 10_000, 60_000, 600_000, 3_600_000, 86_400_000)


def _tick(limit: int, ms: int, what: str, period: object) -> int:
    """The finest time unit (milliseconds per tick) that divides ``ms`` and keeps
    ``2 * limit * period`` in ticks below 2**53; ``retry_after`` is then exact to that unit.
    Raises ConfigurationError naming ``what`` when none does."""
    for unit in (*_UNITS_MS, ms):
        if ms % unit == 0 and 2 * limit * (ms // unit) < _EXACT:
            return unit
    raise ConfigurationError(f"{what} over period {period!r} is too large to count exactly")


#: The longest period, in milliseconds (100 years): window ends and lease expiries, counted from
#: the epoch in milliseconds, stay far below 2**53.
MAX_PERIOD_MS: Final = 100 * 366 * 86_400_000


def _period_ms(period: object, name: str = "period") -> int:
    """``period`` (seconds as int/float, or a timedelta) as whole milliseconds.

    Raises ConfigurationError, naming the value as ``name``, for a non-positive period, one
    longer than 100 years, or one that is not a whole number of milliseconds.
    """
    if isinstance(period, timedelta):
        ms, rest = divmod(period, timedelta(milliseconds=1))
        if rest:
            raise ConfigurationError(f"{name} {period!r} is not a whole number of milliseconds")
    elif isinstance(period, (int, float)) and not isinstance(period, bool):
        if not math.isfinite(period):
            raise ConfigurationError(f"{name} must be a finite number of seconds, got {period!r}")
        exact = period * 1000
        ms = round(exact)
        if abs(exact - ms) > 1e-6:
            raise ConfigurationError(f"{name} {period!r} is not a whole number of milliseconds")
    else:
        raise ConfigurationError(
            f"{name} must be seconds (int or float) or a timedelta, not {period!r}"
        )
    if ms <= 0:
        raise ConfigurationError(f"{name} must be at least 1 millisecond, got {period!r}")
    if ms > MAX_PERIOD_MS:
        raise ConfigurationError(f"{name} must be at most 100 years, got {period!r}")
    return int(ms)


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationError(f"{name} must be a positive integer, got {value!r}")
    if value <= 0:
        raise ConfigurationError(f"{name} must be a positive integer, got {value!r}")
    return value


def _seconds_text(ms: int) -> str:
    return str(ms // 1000) if ms % 1000 == 0 else str(ms / 1000)


class Policy:
    """Base of the policies: immutable, hashable, comparable by value.

    :ivar limit: the most units the policy admits at once (the ``limit`` of a window, the
        ``burst`` of a bucket, the slots of a Concurrency); the largest cost it can allow.
    :ivar period_ms: the period (the lease, for a Concurrency) in whole milliseconds;
        :attr:`period` is the same in seconds.
    :ivar id: a short text naming the algorithm and its numbers, used in events and headers.
        Store keys name only the algorithm and period (see :mod:`ratelimit.overrides`), so a
        changed limit keeps what was spent.
    :ivar tick_ms: the unit the policy counts time in, in milliseconds: 1, or coarser for a
        large quota (such as ``"100000000/day"``) whose numbers in milliseconds could not be
        computed exactly; its ``retry_after`` and ``reset_after`` are exact to that unit.
    """

    __slots__ = ("_argv", "id", "limit", "period_ms", "tick_ms")
    algorithm: ClassVar[str]
    _code: ClassVar[str]

    limit: int
    period_ms: int
    tick_ms: int
    id: str
    _argv: tuple[str, str, str, str, str]

    def _setup(self, limit: int, period_ms: int, extra: int, tick_ms: int = 1) -> None:
        object.__setattr__(self, "limit", limit)
        object.__setattr__(self, "period_ms", period_ms)
        object.__setattr__(self, "tick_ms", tick_ms)
        tail = f".{extra}" if extra else ""
        # The tick follows from limit and period, so the id names the state's unit too.
        object.__setattr__(self, "id", f"{self._code}{limit}.{period_ms}{tail}")
        # The script's policy ARGV (see lua/limiter.lua): code, limit, period in ticks, rate,
        # ticks' unit in milliseconds.
        argv = (self._code, str(limit), str(period_ms // tick_ms), str(extra), str(tick_ms))
        object.__setattr__(self, "_argv", argv)

    @property
    def period(self) -> float:
        """The period in seconds."""
        return self.period_ms / 1000

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._argv == other._argv

    def __hash__(self) -> int:
        return hash(self._argv)

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), self._init_args())

    def _init_args(self) -> tuple[object, ...]:
        raise NotImplementedError


class FixedWindow(Policy):
    """At most ``limit`` units per window of ``period``; a key's window opens at its first hit,
    and the count starts again from zero when it ends.

    :param limit: units per window, a positive int below 2**52 (so any quota is counted
        exactly).
    :param period: the window, in seconds (int or float) or a ``timedelta``: positive, a whole
        number of milliseconds, at most 100 years.
    :raises ConfigurationError: for a non-positive limit or period, or a limit of 2**52 or more.
    """

    __slots__ = ()
    algorithm = "fixed_window"
    _code = "f"

    def __init__(self, limit: int, period: float | timedelta) -> None:
        limit = _positive_int("limit", limit)
        ms = _period_ms(period)
        if 2 * limit >= _EXACT:
            raise ConfigurationError(f"limit {limit} is too large to count exactly")
        self._setup(limit, ms, 0)

    def _init_args(self) -> tuple[object, ...]:
        return (self.limit, self.period)

    def __repr__(self) -> str:
        return f"FixedWindow(limit={self.limit}, period={_seconds_text(self.period_ms)})"


class SlidingWindow(Policy):
    """At most ``limit`` units per ``period``, by the weighted two-window counter.

    The current window's count plus the previous window's, weighted by how much of it still
    overlaps the last ``period``, must stay within ``limit`` (compared exactly, in integers).
    Within one window it never admits more than ``limit``; over an arbitrary span of ``period``
    it may admit up to twice ``limit`` when the previous window's hits were bunched.

    :param limit: units per period, a positive int.
    :param period: seconds (int or float) or a ``timedelta``; positive. Counted in
        milliseconds, or in a coarser ``tick_ms`` where ``limit * period`` in milliseconds
        would reach 2**52 (``"100000000/day"``: 10 ms).
    :raises ConfigurationError: for a non-positive limit or period, or numbers no unit can
        count exactly.
    """

    __slots__ = ()
    algorithm = "sliding_window"
    _code = "s"

    def __init__(self, limit: int, period: float | timedelta) -> None:
        limit = _positive_int("limit", limit)
        ms = _period_ms(period)
        self._setup(limit, ms, 0, _tick(limit, ms, f"limit {limit}", period))

    def _init_args(self) -> tuple[object, ...]:
        return (self.limit, self.period)

    def __repr__(self) -> str:
        return f"SlidingWindow(limit={self.limit}, period={_seconds_text(self.period_ms)})"


class TokenBucket(Policy):
    """A bucket of ``burst`` tokens refilled continuously at ``rate`` tokens per ``period``.

    A new key starts full. A hit of cost ``c`` takes ``c`` tokens or, when fewer are there, is
    denied and takes none. Refill is exact: at 3 tokens per second, 30 tokens take exactly 10 s.

    :param rate: tokens added per ``period``, a positive int.
    :param period: seconds (int or float) or a ``timedelta``; positive. Time is counted as
        :class:`SlidingWindow` counts it (``tick_ms``).
    :param burst: tokens the bucket holds when full, also its ``limit`` (the largest cost
        ever allowed); default ``rate``.
    :raises ConfigurationError: for non-positive numbers, or ones too large to be exact.
    """

    __slots__ = ("rate",)
    algorithm = "token_bucket"
    _code = "t"
    rate: int

    def __init__(self, rate: int, period: float | timedelta = 1, burst: int | None = None) -> None:
        rate = _positive_int("rate", rate)
        ms = _period_ms(period)
        burst = rate if burst is None else _positive_int("burst", burst)
        if rate >= _EXACT // 4:
            raise ConfigurationError(f"rate {rate} is too large to count exactly")
        tick = _tick(burst, ms, f"burst {burst}", period)
        object.__setattr__(self, "rate", rate)
        self._setup(burst, ms, rate, tick)

    @property
    def burst(self) -> int:
        """How many tokens the bucket holds when full (the same as ``limit``)."""
        return self.limit

    def _init_args(self) -> tuple[object, ...]:
        return (self.rate, self.period, self.limit)

    def __repr__(self) -> str:
        return (
            f"TokenBucket(rate={self.rate}, period={_seconds_text(self.period_ms)}, "
            f"burst={self.limit})"
        )


class Concurrency(Policy):
    """At most ``limit`` leases in flight at once per identifier: an in-flight limit.

    A slot is taken by :meth:`Limiter.acquire` and held until the lease is released, or at
    the latest ``lease`` after it was taken or last renewed, by the store's clock, so a worker
    that crashed holding a slot frees it by itself. A lease takes one slot whatever its cost;
    the cost goes to the limiter's rate policies. A limiter holding a Concurrency policy
    refuses ``hit()``. ``period`` and ``period_ms`` are the lease. See the In-flight limits
    page of the docs.

    :param limit: the number of slots, a positive int below 10**9.
    :param lease: how long a slot is held at most without a renew: seconds (int or float) or a
        ``timedelta``; a positive whole number of milliseconds, at most about 30 years.
    :raises ConfigurationError: for a limit that is not a positive int below 10**9, or a bad
        lease.
    """

    __slots__ = ()
    algorithm = "concurrency"
    _code = "c"

    def __init__(self, limit: int, lease: float | timedelta = 60) -> None:
        limit = _positive_int("limit", limit)
        if limit >= 10**9:
            raise ConfigurationError(
                f"limit {limit} is too large: a Concurrency limit is below 10**9"
            )
        ms = _period_ms(lease, "lease")
        if ms >= 10**12:
            raise ConfigurationError(f"lease {lease!r} is too long (at most about 30 years)")
        self._setup(limit, ms, 0)

    @property
    def lease(self) -> float:
        """How long a slot is held at most without a renew, in seconds."""
        return self.period_ms / 1000

    def _init_args(self) -> tuple[object, ...]:
        return (self.limit, self.lease)

    def __repr__(self) -> str:
        return f"Concurrency(limit={self.limit}, lease={_seconds_text(self.period_ms)})"


_UNITS: Final = {
    "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hr": 3600, "hrs": 3600, "hour": 3600, "hours": 3600,
    "d": 86400, "day": 86400, "days": 86400,
    "month": 30 * 86400, "months": 30 * 86400,
    "y": 365 * 86400, "year": 365 * 86400, "years": 365 * 86400,
}  # fmt: skip

# ASCII only: ``\d`` and ``\s`` would take Arabic-Indic or full-width digits and non-breaking
# spaces, and case folding would take the Kelvin sign for a "k". Items are matched after every
# run of spaces became one space, so no run of spaces can make the match backtrack for long.
_ITEM: Final = re.compile(
    r" ?(?P<count>[0-9]+) ?(?:/| per )(?: ?(?P<multiple>[0-9]+))? ?(?P<unit>[a-z]+)"
    r"(?: burst (?P<burst>[0-9]+))? ?",
    re.IGNORECASE | re.ASCII,
)
_SEPARATORS: Final = re.compile(r"[;,|]")
_SPACES: Final = re.compile(r"[ \t\r\n\f\v]+")
# Digits of the largest number read: more could never be counted exactly (and Python refuses
# to read numbers of over 4,300 digits with a plain ValueError).
_DIGITS: Final = 18

_ALGORITHMS: Final[dict[str, type[Policy]]] = {
    "fixed_window": FixedWindow,
    "fixed-window": FixedWindow,
    "sliding_window": SlidingWindow,
    "sliding-window": SlidingWindow,
    "token_bucket": TokenBucket,
    "token-bucket": TokenBucket,
}


def _algorithm(algorithm: str | type[Policy] | None) -> type[Policy] | None:
    if algorithm is None:
        return None
    if isinstance(algorithm, type) and algorithm in (FixedWindow, SlidingWindow, TokenBucket):
        return algorithm
    if isinstance(algorithm, str) and algorithm.lower() in _ALGORITHMS:
        return _ALGORITHMS[algorithm.lower()]
    raise ConfigurationError(
        f"unknown algorithm {algorithm!r}: use 'fixed_window', 'sliding_window', "
        "'token_bucket' or one of the policy classes"
    )


def parse(text: str, algorithm: str | type[Policy] | None = None) -> list[Policy]:
    """Parse limits written as text into policies, in the order written.

    The grammar is that of the ``limits`` package: ``"10/second"``, ``"10 per 5 minutes"``,
    ``"1/s;100/m"`` (items separated by ``;``, ``,`` or ``|``), units ``second``, ``minute``,
    ``hour``, ``day``, ``month`` (30 days) and ``year`` (365 days) with their plurals and short
    forms (``s``, ``m``, ``h``, ``d``, ``y``). A token bucket's item may end in ``burst N``.

    :param text: the limits, such as ``"10/second; 1000/day"``.
    :param algorithm: the policy class for every item: ``"fixed_window"``,
        ``"sliding_window"``, ``"token_bucket"`` or the class itself. By default items are
        sliding windows, and items with ``burst`` are token buckets.
    :returns: the policies, one per item.
    :raises ConfigurationError: naming the item that cannot be read, an unknown unit or
        algorithm, or ``burst`` given to a window algorithm.
    """
    if not isinstance(text, str):
        raise ConfigurationError(f"limits must be text such as '10/second', got {text!r}")
    chosen = _algorithm(algorithm)
    policies: list[Policy] = []
    for raw in _SEPARATORS.split(text):
        item = _SPACES.sub(" ", raw).strip(" ")
        if not item:
            continue
        shown = _shown(item)
        match = _ITEM.fullmatch(item)
        if match is None:
            raise ConfigurationError(
                f"cannot read limit {shown}: write it as '10/second' or '10 per 5 minutes', "
                "in ASCII digits and spaces"
            )
        unit = match["unit"].lower()
        if unit not in _UNITS:
            raise ConfigurationError(f"unknown time unit {_shown(match['unit'])} in {shown}")
        count = _number(match["count"], shown)
        period = _UNITS[unit] * _number(match["multiple"] or "1", shown)
        burst = match["burst"]
        cls = chosen or (TokenBucket if burst is not None else SlidingWindow)
        if cls is TokenBucket:
            policies.append(TokenBucket(count, period, _number(burst, shown) if burst else None))
        elif burst is not None:
            raise ConfigurationError(
                f"'burst' in {shown} applies to token buckets, not {cls.__name__}"
            )
        else:
            policies.append(cls(count, period))  # type: ignore[call-arg]
    if not policies:
        raise ConfigurationError(f"no limit found in {_shown(text)}")
    return policies


def _shown(text: str) -> str:
    """``text`` as an error message quotes it: its repr, cut short when long."""
    return repr(text) if len(text) <= 80 else repr(text[:60]) + f"... ({len(text)} characters)"


def _number(digits: str, item: str) -> int:
    """ASCII ``digits`` of ``item`` as an int. Raises ConfigurationError when there are too
    many of them to be a limit or a period."""
    if len(digits) > _DIGITS:
        raise ConfigurationError(f"number {_shown(digits)} in {item} is too large for a limit")
    return int(digits)
