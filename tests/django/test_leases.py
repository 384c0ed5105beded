"""``ratelimit.django.limit`` with leases: ``count=`` gives a request's cost back by its
status (failed logins only), and a Concurrency limiter holds its slot for the view's call."""

from __future__ import annotations

from typing import Any

import pytest
from django.http import HttpResponse
from django.test import AsyncRequestFactory, RequestFactory

import ratelimit as rl
from ratelimit.django import limit

rf = RequestFactory()
arf = AsyncRequestFactory()


def test_count_limits_failed_logins_only() -> None:
    statuses = iter([200, 401, 200, 401, 401, 200])

    @limit("3/minute", count=lambda status: status >= 400)
    def login(request: Any) -> HttpResponse:
        return HttpResponse(status=next(statuses))

    got = [login(rf.post("/login")).status_code for _ in range(7)]
    assert got == [200, 401, 200, 401, 401, 429, 429]
    with pytest.raises(rl.ConfigurationError, match="count must be a callable"):
        limit("3/minute", count=1)  # type: ignore[arg-type]


def test_a_concurrency_limiter_holds_its_slot_for_the_call() -> None:
    limiter = rl.Limiter(rl.Concurrency(1))
    inside: list[int] = []

    @limit(limiter, key=lambda request: "k")
    def report(request: Any) -> HttpResponse:
        inside.append(report(rf.get("/")).status_code)  # a second request meanwhile
        return HttpResponse("ok")

    @limit(limiter, key=lambda request: "k", name="fails")
    def fails(request: Any) -> HttpResponse:
        raise ValueError("boom")

    assert report(rf.get("/")).status_code == 200
    assert inside == [429]
    with pytest.raises(ValueError, match="boom"):
        fails(rf.get("/"))
    assert limiter.peek("fails|k").allowed  # released although the view raised


async def test_async_view_settles_by_status() -> None:
    limiter = rl.AsyncLimiter(rl.FixedWindow(1, 60))

    @limit(limiter, key=lambda request: "k", count=lambda status: status != 200)
    async def view(request: Any) -> HttpResponse:
        return HttpResponse("ok")

    for _ in range(3):  # a 200 is given back: never limited
        assert (await view(arf.get("/"))).status_code == 200
