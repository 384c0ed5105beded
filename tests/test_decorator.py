"""``rl.rate_limit`` on sync and async functions: keys from the call's arguments, cost,
raising or waiting, signature and metadata kept. Time is a stepped clock; waits are faked."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest

import ratelimit as rl
from tests.support import Clock

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_sync_function_keyed_by_its_arguments(clock: Clock) -> None:
    limiter = rl.Limiter(rl.FixedWindow(2, 60), clock=clock)
    sent: list[tuple[int, str]] = []

    @rl.rate_limit(limiter, key=lambda user_id, subject: f"user:{user_id}")
    def send_email(user_id: int, subject: str) -> str:
        """Send one email."""
        sent.append((user_id, subject))
        return "sent"

    assert send_email(1, "a") == "sent"
    assert send_email(1, subject="b") == "sent"
    with pytest.raises(rl.RateLimitExceeded) as denied:
        send_email(1, "c")
    assert denied.value.decision.retry_after == 60.0
    assert sent == [(1, "a"), (1, "b")]  # a denied call does not run
    assert send_email(2, "d") == "sent"  # another key
    clock.now += 60
    assert send_email(1, "e") == "sent"


async def test_async_function(clock: Clock) -> None:
    limiter = rl.AsyncLimiter(rl.FixedWindow(1, 10), clock=clock)

    @rl.rate_limit(limiter, key=lambda url: url.split("/")[2])
    async def fetch(url: str) -> str:
        return url

    assert await fetch("https://a.example/x") == "https://a.example/x"
    with pytest.raises(rl.RateLimitExceeded) as denied:
        await fetch("https://a.example/y")
    assert denied.value.retry_after == 10.0
    assert await fetch("https://b.example/x") == "https://b.example/x"


def test_wait_sleeps_instead_of_raising(clock: Clock) -> None:
    limiter = rl.Limiter(rl.FixedWindow(1, 5), clock=clock)
    limiter._sleep = clock.sleep

    @rl.rate_limit(limiter, key="shared", wait=True)
    def work(n: int) -> int:
        return n * 2

    assert [work(1), work(2), work(3)] == [2, 4, 6]
    assert clock.slept == [5.0, 5.0]


async def test_async_wait_and_timeout(clock: Clock) -> None:
    limiter = rl.AsyncLimiter(rl.FixedWindow(1, 5), clock=clock)
    limiter._sleep = clock.asleep

    @rl.rate_limit(limiter, wait=True, timeout=3)
    async def work() -> str:
        return "done"

    assert await work() == "done"
    with pytest.raises(rl.RateLimitExceeded):
        await work()  # would have to wait 5 s, more than the 3 s timeout
    assert clock.slept == []


def test_cost_int_and_callable(clock: Clock) -> None:
    limiter = rl.Limiter(rl.FixedWindow(10, 60), clock=clock)

    @rl.rate_limit(limiter, key="batch", cost=lambda items: len(items))
    def process(items: list[int]) -> int:
        return sum(items)

    assert process([1] * 7) == 7
    with pytest.raises(rl.RateLimitExceeded):
        process([1] * 4)
    assert process([1] * 3) == 3

    @rl.rate_limit(rl.Limiter(rl.FixedWindow(10, 60), clock=clock), cost=5)
    def heavy() -> None:
        pass

    heavy()
    heavy()
    with pytest.raises(rl.RateLimitExceeded):
        heavy()


def test_default_key_is_the_function(clock: Clock) -> None:
    limiter = rl.Limiter(rl.FixedWindow(1, 60), clock=clock)

    @rl.rate_limit(limiter)
    def ping() -> None:
        pass

    ping()
    with pytest.raises(rl.RateLimitExceeded):
        ping()
    assert limiter.peek(f"{__name__}.test_default_key_is_the_function.<locals>.ping").remaining == 0


def test_methods_get_self(clock: Clock) -> None:
    limiter = rl.Limiter(rl.FixedWindow(1, 60), clock=clock)

    class Account:
        def __init__(self, name: str) -> None:
            self.name = name

        @rl.rate_limit(limiter, key=lambda self: f"account:{self.name}")
        def charge(self) -> str:
            return self.name

    assert Account("a").charge() == "a"
    assert Account("b").charge() == "b"
    with pytest.raises(rl.RateLimitExceeded):
        Account("a").charge()


def test_text_builds_the_right_limiter() -> None:
    @rl.rate_limit("1/minute")
    def sync() -> int:
        return 1

    @rl.rate_limit("1/minute")
    async def coroutine() -> int:
        return 1

    assert sync() == 1
    assert inspect.iscoroutinefunction(coroutine)


def test_signature_and_metadata_are_kept() -> None:
    @rl.rate_limit(rl.Limiter("5/second"), key=lambda a, b=2: str(a))
    def add(a: int, b: int = 2) -> int:
        """Add two numbers."""
        return a + b

    assert add.__name__ == "add"
    assert add.__doc__ == "Add two numbers."
    assert str(inspect.signature(add)) == "(a: 'int', b: 'int' = 2) -> 'int'"
    assert add(1) == 3


def test_store_errors_follow_on_error() -> None:
    class Broken(rl.MemoryStore):
        def evaluate(self, *args: object, **kwargs: object) -> list[int]:
            raise rl.StoreError("down")

    @rl.rate_limit(rl.Limiter("1/minute", store=Broken()))
    def allowed() -> str:
        return "ran"

    assert [allowed(), allowed()] == ["ran", "ran"]

    @rl.rate_limit(rl.Limiter("1/minute", store=Broken(), on_error="raise"))
    def raising() -> str:  # pragma: no cover - never runs
        return "ran"

    with pytest.raises(rl.StoreError):
        raising()


def test_configuration_errors() -> None:
    with pytest.raises(rl.ConfigurationError, match="is sync: give it a Limiter"):
        rl.rate_limit(rl.AsyncLimiter("1/second"))(lambda: None)

    async def coroutine() -> None:
        pass

    with pytest.raises(rl.ConfigurationError, match="is async: give it an AsyncLimiter"):
        rl.rate_limit(rl.Limiter("1/second"))(coroutine)
    with pytest.raises(rl.ConfigurationError):
        rl.rate_limit(rl.Limiter("1/second"), cost=-1)
    with pytest.raises(rl.ConfigurationError):
        rl.rate_limit(rl.Limiter("1/second"), key=3)  # type: ignore[arg-type]
    with pytest.raises(rl.ConfigurationError, match="wait=True"):
        rl.rate_limit(rl.Limiter("1/second"), timeout=1)


def test_a_key_must_be_text() -> None:
    @rl.rate_limit(rl.Limiter("5/second"), key=lambda n: n)
    def f(n: int) -> int:
        return n

    for bad in (1, None, b"k"):
        with pytest.raises(rl.ConfigurationError, match=f"returned {bad!r}; it must return a str"):
            f(bad)


def test_any_callable_can_be_limited(clock: Clock) -> None:
    import functools

    limiter = rl.Limiter(rl.FixedWindow(1, 60), clock=clock)

    def send(to: str, subject: str) -> str:
        return f"{to}:{subject}"

    class Sender:
        def __call__(self, to: str) -> str:
            return to

    partial = rl.rate_limit(limiter)(functools.partial(send, "ann"))
    instance = rl.rate_limit(limiter)(Sender())
    assert partial("hi") == "ann:hi" and instance("bob") == "bob"
    for limited, arg in ((partial, "again"), (instance, "again")):
        with pytest.raises(rl.RateLimitExceeded):
            limited(arg)
    # each keyed by what it calls: the partial's function, the instance's class
    assert limiter.peek(f"{__name__}.test_any_callable_can_be_limited.<locals>.send").remaining == 0
    assert (
        limiter.peek(f"{__name__}.test_any_callable_can_be_limited.<locals>.Sender").remaining == 0
    )


async def test_async_partials_and_callable_objects_get_an_async_wrapper(clock: Clock) -> None:
    import functools

    limiter = rl.AsyncLimiter(rl.FixedWindow(1, 60), clock=clock)

    async def fetch(host: str, path: str) -> str:
        return host + path

    class Fetcher:
        async def __call__(self, path: str) -> str:
            return path

    partial = rl.rate_limit(limiter, key="p")(functools.partial(fetch, "a.example"))
    instance = rl.rate_limit(limiter, key="i")(Fetcher())
    assert inspect.iscoroutinefunction(partial) and inspect.iscoroutinefunction(instance)
    assert await partial("/x") == "a.example/x" and await instance("/y") == "/y"
    with pytest.raises(rl.RateLimitExceeded):
        await instance("/z")
    with pytest.raises(rl.ConfigurationError, match="is async: give it an AsyncLimiter"):
        rl.rate_limit(rl.Limiter("1/s"))(Fetcher())


def test_above_classmethod_and_staticmethod(clock: Clock) -> None:
    limiter = rl.Limiter(rl.FixedWindow(1, 60), clock=clock)

    class Jobs:
        name = "jobs"

        @rl.rate_limit(limiter, key=lambda cls, n: f"{cls.name}:{n}")
        @classmethod
        def run(cls, n: int) -> str:
            return f"{cls.name}{n}"

        @rl.rate_limit(limiter, key=lambda n: f"static:{n}")
        @staticmethod
        def check(n: int) -> int:
            return n

    assert Jobs.run(1) == "jobs1" and Jobs().run(2) == "jobs2"
    assert Jobs.check(1) == 1 and Jobs().check(2) == 2
    with pytest.raises(rl.RateLimitExceeded):
        Jobs.run(1)
    with pytest.raises(rl.RateLimitExceeded):
        Jobs().check(2)
    assert limiter.peek("jobs:1").remaining == 0 and limiter.peek("static:2").remaining == 0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"wait": "yes"}, "wait must be True or False, got 'yes'"),
        ({"wait": 1}, "wait must be True or False, got 1"),
        ({"wait": True, "timeout": "5"}, "timeout must be None or a non-negative number"),
        ({"wait": True, "timeout": float("nan")}, "timeout must be None or a non-negative"),
        ({"wait": True, "timeout": -1}, "timeout must be None or a non-negative number"),
        ({"cost": 1.5}, "cost must be a non-negative int or a callable"),
        ({"key": 3}, "key must be a callable, a str or None"),
    ],
)
def test_bad_options_are_configuration_errors(options: dict[str, object], message: str) -> None:
    with pytest.raises(rl.ConfigurationError, match=message):
        rl.rate_limit(rl.Limiter("1/s"), **options)  # type: ignore[arg-type]


def test_bad_limiters_and_targets_are_configuration_errors() -> None:
    with pytest.raises(rl.ConfigurationError, match="needs a Limiter, an AsyncLimiter or text"):
        rl.rate_limit(42)  # type: ignore[arg-type]
    with pytest.raises(rl.ConfigurationError, match="decorates a callable"):
        rl.rate_limit(rl.Limiter("1/s"))(42)  # type: ignore[arg-type]


def test_typing_file_passes_mypy_strict() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "tests/typing/check_decorator.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
