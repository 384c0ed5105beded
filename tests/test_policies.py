"""Policies and the limit grammar."""

from __future__ import annotations

import pickle
from datetime import timedelta

import pytest

import ratelimit as rl


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10/second", [rl.SlidingWindow(10, 1)]),
        ("10 per second", [rl.SlidingWindow(10, 1)]),
        ("10 per 5 minutes", [rl.SlidingWindow(10, 300)]),
        ("10/5minutes", [rl.SlidingWindow(10, 300)]),
        ("1/s;100/m", [rl.SlidingWindow(1, 1), rl.SlidingWindow(100, 60)]),
        (
            "1/s, 100/m | 1000/h",
            [rl.SlidingWindow(1, 1), rl.SlidingWindow(100, 60), rl.SlidingWindow(1000, 3600)],
        ),
        ("5/day", [rl.SlidingWindow(5, 86400)]),
        ("5 per 2 days", [rl.SlidingWindow(5, 172800)]),
        ("7/month", [rl.SlidingWindow(7, 30 * 86400)]),
        ("7/year", [rl.SlidingWindow(7, 365 * 86400)]),
        ("  3 / Hour ;  ", [rl.SlidingWindow(3, 3600)]),
        ("10/second burst 20", [rl.TokenBucket(10, 1, burst=20)]),
        ("10/second; 1000/day", [rl.SlidingWindow(10, 1), rl.SlidingWindow(1000, 86400)]),
    ],
)
def test_parse(text: str, expected: list[rl.Policy]) -> None:
    assert rl.parse(text) == expected


@pytest.mark.parametrize(
    ("algorithm", "cls"),
    [
        ("fixed_window", rl.FixedWindow),
        ("sliding-window", rl.SlidingWindow),
        ("token_bucket", rl.TokenBucket),
        (rl.FixedWindow, rl.FixedWindow),
    ],
)
def test_parse_algorithm(algorithm: object, cls: type[rl.Policy]) -> None:
    (policy,) = rl.parse("4/minute", algorithm=algorithm)  # type: ignore[arg-type]
    assert type(policy) is cls and policy.limit == 4 and policy.period == 60


def test_token_bucket_from_text_defaults_burst_to_rate() -> None:
    assert rl.parse("3/s", algorithm="token_bucket") == [rl.TokenBucket(3, 1, burst=3)]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no limit found"),
        (" ; ", "no limit found"),
        ("ten/second", "cannot read limit 'ten/second'"),
        ("10/fortnight", "unknown time unit 'fortnight'"),
        ("10 second", "cannot read limit '10 second'"),
        ("0/second", "limit must be a positive integer, got 0"),
        ("10/0 seconds", "period must be at least 1 millisecond"),
        ("-1/second", "cannot read limit '-1/second'"),
        ("1.5/second", "cannot read limit '1.5/second'"),
        ("10/s burst", "cannot read limit '10/s burst'"),
    ],
)
def test_parse_errors_name_the_bad_value(text: str, message: str) -> None:
    with pytest.raises(rl.ConfigurationError, match=message.replace("(", r"\(")):
        rl.parse(text)


def test_burst_with_a_window_algorithm_is_an_error() -> None:
    with pytest.raises(rl.ConfigurationError, match="'burst' in '10/s burst 5' applies to token"):
        rl.parse("10/s burst 5", algorithm="fixed_window")


def test_unknown_algorithm() -> None:
    with pytest.raises(rl.ConfigurationError, match="unknown algorithm 'leaky'"):
        rl.parse("1/s", algorithm="leaky")


def test_parse_needs_text() -> None:
    with pytest.raises(rl.ConfigurationError, match="must be text"):
        rl.parse(10)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: rl.FixedWindow(0, 1), "limit must be a positive integer, got 0"),
        (lambda: rl.FixedWindow(-5, 1), "limit must be a positive integer, got -5"),
        (lambda: rl.FixedWindow(2.5, 1), "limit must be a positive integer, got 2.5"),
        (lambda: rl.FixedWindow(True, 1), "limit must be a positive integer, got True"),
        (lambda: rl.SlidingWindow(5, 0), "period must be at least 1 millisecond, got 0"),
        (lambda: rl.SlidingWindow(5, -1), "period must be at least 1 millisecond, got -1"),
        (lambda: rl.SlidingWindow(5, 0.0001), "not a whole number of milliseconds"),
        (lambda: rl.SlidingWindow(5, "60"), "period must be seconds"),
        (lambda: rl.FixedWindow(5, timedelta(microseconds=1500)), "whole number of milli"),
        (lambda: rl.TokenBucket(0, 1), "rate must be a positive integer, got 0"),
        (lambda: rl.TokenBucket(1, 1, burst=0), "burst must be a positive integer, got 0"),
        (lambda: rl.FixedWindow(2**52, 86400 * 365), "too large to count exactly"),
        (lambda: rl.SlidingWindow(2**52, 1), "too large to count exactly"),
        (lambda: rl.TokenBucket(1, 1, burst=2**52), "too large to count exactly"),
        (lambda: rl.TokenBucket(2**51, 1), "too large to count exactly"),
    ],
)
def test_bad_policies(make: object, message: str) -> None:
    with pytest.raises(rl.ConfigurationError, match=message):
        make()  # type: ignore[operator]


def test_policies_are_values() -> None:
    a = rl.TokenBucket(10, timedelta(seconds=1), burst=20)
    assert a == rl.TokenBucket(10, 1, burst=20) and hash(a) == hash(rl.TokenBucket(10, 1, 20))
    assert a != rl.TokenBucket(10, 1, burst=21) and a != rl.FixedWindow(20, 1)
    assert repr(a) == "TokenBucket(rate=10, period=1, burst=20)" and a.burst == a.limit == 20
    assert repr(rl.FixedWindow(5, 0.5)) == "FixedWindow(limit=5, period=0.5)"
    assert rl.SlidingWindow(5, timedelta(minutes=2)).period_ms == 120_000
    assert pickle.loads(pickle.dumps(a)) == a
    with pytest.raises(AttributeError):
        a.limit = 5  # type: ignore[misc]
    assert {rl.FixedWindow(1, 1).id, rl.SlidingWindow(1, 1).id, rl.TokenBucket(1, 1).id} == {
        "f1.1000", "s1.1000", "t1.1000.1"}  # fmt: skip


@pytest.mark.parametrize("text", ["5000000/month", "10000000/month", "100000000/day",
                                  "999999999/year", "999999999/second"])  # fmt: skip
@pytest.mark.parametrize("algorithm", ["fixed_window", "sliding_window", "token_bucket"])
def test_large_quotas_are_accepted_in_a_unit_that_keeps_them_exact(
    text: str, algorithm: str
) -> None:
    (policy,) = rl.parse(text, algorithm=algorithm)
    assert policy.period_ms % policy.tick_ms == 0
    if algorithm != "fixed_window":  # a fixed window forms no product: milliseconds always
        assert 2 * policy.limit * (policy.period_ms // policy.tick_ms) < 2**53
    assert policy.tick_ms <= 10_000  # 10 s at worst, for a billion a year


def test_ordinary_quotas_count_in_milliseconds() -> None:
    for policy in rl.parse("10/second; 1000/minute; 1000000/day", algorithm="token_bucket"):
        assert policy.tick_ms == 1


@pytest.mark.parametrize(
    "text",
    [
        "\u0661\u0660/second",  # Arabic-Indic digits
        "\uff11\uff10/second",  # full-width digits
        "10/\uff15 seconds",
        "10\u00a0/second",  # a no-break space
        "10/second\u3000",  # an ideographic space
        "10\u2003per minute",
        "5/s burst \uff120",
    ],
)
def test_parse_reads_ascii_digits_and_spaces_only(text: str) -> None:
    with pytest.raises(rl.ConfigurationError, match="cannot read limit"):
        rl.parse(text)


def test_parse_refuses_huge_numbers_with_a_configuration_error() -> None:
    for text in ("9" * 5000 + "/second", "1/" + "9" * 5000 + " seconds", "9" * 19 + "/day",
                 "1/s burst " + "9" * 4400):  # fmt: skip
        with pytest.raises(rl.ConfigurationError, match="too large") as caught:
            rl.parse(text)
        assert len(str(caught.value)) < 300  # names the number without repeating it all


def test_parse_takes_linear_time_on_long_runs_of_spaces() -> None:
    import time

    for text in ("1" + " " * 30_000 + "x", "1" + " " * 30_000 + "/ 5 5", " " * 30_000 + "1"):
        started = time.perf_counter()
        with pytest.raises(rl.ConfigurationError):
            rl.parse(text)
        assert time.perf_counter() - started < 1.0  # quadratic backtracking took ~8 s
    assert rl.parse("10" + " " * 30_000 + "per \t 5   minutes") == [rl.SlidingWindow(10, 300)]


@pytest.mark.parametrize("cls", [rl.FixedWindow, rl.SlidingWindow, rl.TokenBucket])
@pytest.mark.parametrize("period", [float("inf"), float("-inf"), float("nan"), 1e300])
def test_every_bad_period_is_a_configuration_error(cls: type[rl.Policy], period: float) -> None:
    with pytest.raises(rl.ConfigurationError, match="period"):
        cls(10, period)  # type: ignore[call-arg]


@pytest.mark.parametrize("cls", [rl.FixedWindow, rl.SlidingWindow, rl.TokenBucket])
@pytest.mark.parametrize("limit", [float("inf"), float("nan"), 10.0, "10", True, 0, -1, None])
def test_every_bad_limit_is_a_configuration_error(cls: type[rl.Policy], limit: object) -> None:
    with pytest.raises(rl.ConfigurationError):
        cls(limit, 60)  # type: ignore[call-arg]
    if cls is rl.TokenBucket and limit is not None:  # burst=None: as many as rate
        with pytest.raises(rl.ConfigurationError):
            rl.TokenBucket(10, 60, burst=limit)  # type: ignore[arg-type]
