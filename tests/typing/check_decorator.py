"""Type checks only (``mypy --strict tests/typing/check_decorator.py``; never run): the
decorator keeps the decorated function's signature and return type, sync and async."""

from __future__ import annotations

from typing import TYPE_CHECKING

import ratelimit as rl

limiter = rl.Limiter("10/minute")
alimiter = rl.AsyncLimiter("10/minute")


@rl.rate_limit(limiter, key=lambda user_id, subject: f"user:{user_id}")
def send_email(user_id: int, subject: str) -> bool:
    return True


@rl.rate_limit(alimiter, key=lambda url: url, cost=2, wait=True, timeout=5.0)
async def fetch(url: str, *, retries: int = 3) -> bytes:
    return b""


async def use() -> None:
    sent: bool = send_email(42, "hi")
    body: bytes = await fetch("https://example.org", retries=1)
    print(sent, body)


if TYPE_CHECKING:
    from collections.abc import Coroutine
    from typing import Any

    from typing_extensions import assert_type

    assert_type(send_email(1, "x"), bool)
    pending = assert_type(fetch("u"), Coroutine[Any, Any, bytes])
    send_email("not an int", "x")  # type: ignore[arg-type]
    send_email(1)  # type: ignore[call-arg]
    wrong = fetch("u", retries="3")  # type: ignore[arg-type]
