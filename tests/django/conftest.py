"""Django for the tests of ``ratelimit.django``: configured here, in-process, with
``settings.configure`` (no pytest-django), so no other test module sees Django settings.

Each test starts from a fresh reading of ``RATELIMIT`` (a new memory store): the autouse
fixture drops the cached state before and after it. Tests change settings with Django's
``override_settings``, which is also what proves ``setting_changed`` is honoured.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import django
import pytest
from django.conf import settings

if not settings.configured:
    settings.configure(
        SECRET_KEY="tests-only",
        DEBUG=False,
        ALLOWED_HOSTS=["*"],
        USE_TZ=True,
        DATABASES={},
        INSTALLED_APPS=[
            "django.contrib.contenttypes",
            "django.contrib.auth",
            "rest_framework",
            "ratelimit.django",
        ],
        MIDDLEWARE=[],
        ROOT_URLCONF="tests.django.urls",
        LOGGING_CONFIG=None,
        RATELIMIT={},
        REST_FRAMEWORK={
            "DEFAULT_AUTHENTICATION_CLASSES": [],
            "DEFAULT_PERMISSION_CLASSES": [],
            "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
            "UNAUTHENTICATED_USER": None,
            # DRF reads this once, when rest_framework.views is first imported.
            "DEFAULT_THROTTLE_CLASSES": ["ratelimit.django.Throttle"],
            "DEFAULT_THROTTLE_RATES": {},
        },
    )
    django.setup()


@pytest.fixture(autouse=True)
def fresh_state() -> Iterator[None]:
    from ratelimit.django import _conf

    _conf.reset(setting="RATELIMIT")
    yield
    _conf.reset(setting="RATELIMIT")


@pytest.fixture(scope="module")
def redis_server() -> Iterator[Any]:
    """A real Redis (or Valkey) for this module, started by the suite."""
    from tests.servers import Server, any_kind

    with Server(any_kind()) as server:
        yield server
