"""``ratelimit.django.Throttle`` in Django REST framework: scopes and rates from
``DEFAULT_THROTTLE_RATES`` in our grammar, one limit per scope per client across a viewset's
actions, Retry-After through ``wait()``, users and anonymous clients, counted in
``RATELIMIT['STORE']`` (a real Redis here)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from django.test import override_settings
from rest_framework import viewsets
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory, force_authenticate
from rest_framework.views import APIView

import ratelimit as rl
from ratelimit.django import Throttle

factory = APIRequestFactory()
RATES = {"uploads": "3/minute", "spaced": "2 per minute", "off": None, "bad": "3 a minute"}
DRF = {
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": [],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "UNAUTHENTICATED_USER": None,
    "DEFAULT_THROTTLE_CLASSES": ["ratelimit.django.Throttle"],
    "DEFAULT_THROTTLE_RATES": RATES,
}


class Uploads(viewsets.ViewSet):
    throttle_scope = "uploads"

    def list(self, request: Any) -> Response:
        return Response([])

    def retrieve(self, request: Any, pk: str | None = None) -> Response:
        return Response({"pk": pk})

    def create(self, request: Any) -> Response:
        return Response({}, status=201)


def scoped(scope: str | None) -> Any:
    class Scoped(APIView):
        throttle_scope = scope

        def get(self, request: Any) -> Response:
            return Response({"ok": True})

    return Scoped.as_view()


list_view = Uploads.as_view({"get": "list", "post": "create"})
detail_view = Uploads.as_view({"get": "retrieve"})


@pytest.fixture(autouse=True)
def drf_settings() -> Any:
    with override_settings(REST_FRAMEWORK=DRF):
        yield


def test_one_limit_per_scope_across_a_viewsets_actions() -> None:
    assert list_view(factory.get("/uploads/")).status_code == 200
    assert detail_view(factory.get("/uploads/1/"), pk="1").status_code == 200
    assert list_view(factory.post("/uploads/")).status_code == 201
    denied = detail_view(factory.get("/uploads/2/"), pk="2")
    assert denied.status_code == 429
    retry = int(denied["Retry-After"])
    assert 1 <= retry <= 120  # DRF rounds wait() up
    assert "throttled" in denied.data["detail"]
    # another client is not affected
    other = factory.get("/uploads/", REMOTE_ADDR="198.51.100.4")
    assert list_view(other).status_code == 200


def test_configured_the_drf_way() -> None:
    view = scoped("uploads")
    # DEFAULT_THROTTLE_CLASSES (tests/django/conftest.py) names ours; no view names it
    assert view.cls.throttle_classes == [Throttle]
    assert [view(factory.get("/")).status_code for _ in range(4)] == [200, 200, 200, 429]


def test_wait_is_the_decisions_retry_after() -> None:
    throttle = Throttle()
    request = factory.get("/")
    view = SimpleNamespace(throttle_scope="spaced")
    from rest_framework.request import Request

    drf_request = Request(request)
    assert throttle.allow_request(drf_request, view)
    assert throttle.wait() is None
    assert throttle.allow_request(drf_request, view)
    assert not throttle.allow_request(drf_request, view)
    assert throttle.decision is not None
    wait = throttle.wait()
    assert wait == throttle.decision.retry_after
    assert 0 < wait <= 120


def test_authenticated_users_are_counted_by_user_not_by_ip() -> None:
    view = scoped("spaced")
    for ip in ("198.51.100.1", "198.51.100.2"):
        request = factory.get("/", REMOTE_ADDR=ip)
        force_authenticate(request, user=SimpleNamespace(pk=7, is_authenticated=True))
        assert view(request).status_code == 200
    request = factory.get("/", REMOTE_ADDR="198.51.100.3")
    force_authenticate(request, user=SimpleNamespace(pk=7, is_authenticated=True))
    assert view(request).status_code == 429
    request = factory.get("/", REMOTE_ADDR="198.51.100.3")
    force_authenticate(request, user=SimpleNamespace(pk=8, is_authenticated=True))
    assert view(request).status_code == 200


def test_views_without_a_scope_or_with_a_null_rate_are_not_throttled() -> None:
    for view in (scoped(None), scoped("off")):
        assert [view(factory.get("/")).status_code for _ in range(5)] == [200] * 5


def test_a_subclass_may_name_its_scope() -> None:
    class UploadThrottle(Throttle):
        scope = "uploads"

    class Plain(APIView):
        throttle_classes = (UploadThrottle,)

        def get(self, request: Any) -> Response:
            return Response({})

    view = Plain.as_view()
    assert [view(factory.get("/")).status_code for _ in range(4)] == [200, 200, 200, 429]


def test_scope_without_a_rate_is_a_clear_error_at_the_first_request() -> None:
    with pytest.raises(rl.ConfigurationError, match="no rate for throttle scope 'nowhere'"):
        scoped("nowhere")(factory.get("/"))


def test_rate_that_does_not_parse_is_a_clear_error_at_the_first_request() -> None:
    with pytest.raises(rl.ConfigurationError, match=r"DEFAULT_THROTTLE_RATES\['bad'\]"):
        scoped("bad")(factory.get("/"))


def test_rate_changes_through_override_settings_are_honoured() -> None:
    view = scoped("uploads")
    assert [view(factory.get("/")).status_code for _ in range(4)] == [200, 200, 200, 429]
    with override_settings(REST_FRAMEWORK={**DRF, "DEFAULT_THROTTLE_RATES": {"uploads": "5/m"}}):
        # the new rate applies to what was spent this minute (state keys name the algorithm
        # and period, not the limit: see "Overrides" in the README): 3 of 5 spent, two more
        assert [view(factory.get("/")).status_code for _ in range(4)] == [200, 200, 429, 429]
    with override_settings(REST_FRAMEWORK={**DRF, "DEFAULT_THROTTLE_RATES": {"uploads": "5/h"}}):
        # another period is another limit: five more
        assert [view(factory.get("/")).status_code for _ in range(6)] == [200] * 5 + [429]


@pytest.mark.redis_server
def test_counted_in_the_configured_redis_store(redis_server: Any) -> None:
    redis_server.flushall()
    with override_settings(RATELIMIT={"STORE": redis_server.url, "PREFIX": "drf"}):
        statuses = [list_view(factory.get("/uploads/")).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    with redis_server.client() as client:
        keys = sorted(k.decode() for k in client.keys("*"))
    assert keys == ["drf:{throttle:uploads|ip:127.0.0.1}:s60000"]


def test_limit_decorates_a_drf_view_too() -> None:
    from ratelimit.django import limit

    @limit("2/minute")
    class Limited(APIView):
        throttle_classes = ()

        def get(self, request: Any) -> Response:
            return Response({"ok": True})

    view = Limited.as_view()
    first = view(factory.get("/"))
    assert first.status_code == 200 and "RateLimit" in first
    assert [view(factory.get("/")).status_code for _ in range(2)] == [200, 429]
