"""Django and Django REST framework: a view decorator, a middleware and a DRF throttle.

::

    # settings.py
    INSTALLED_APPS += ["ratelimit.django"]            # system checks at start-up
    MIDDLEWARE += ["ratelimit.django.RateLimitMiddleware"]   # RATELIMIT["DEFAULT"], per client
    RATELIMIT = {
        "STORE": "redis://localhost:6379/0",          # or "memory://" (one process only)
        "TRUSTED_PROXIES": ["10.0.0.0/8"],
        "DEFAULT": "1000/hour",
    }
    REST_FRAMEWORK = {
        "DEFAULT_THROTTLE_CLASSES": ["ratelimit.django.Throttle"],
        "DEFAULT_THROTTLE_RATES": {"uploads": "10/minute; 100/day"},
    }

    # views.py
    from ratelimit.django import limit

    @limit("5/minute")                                # per client IP, this view alone
    def login(request): ...

    @limit("20/minute", key=lambda r: f"user:{r.user.pk}")
    async def search(request): ...                    # awaited on the event loop

Settings, one ``RATELIMIT`` dict (every key optional; an unknown key is an error):

==========================  ========================================================================
``STORE``                   ``"memory://"`` (default; this process only) or a ``redis://``,
                            ``rediss://`` or ``unix://`` URL (``RedisStore.from_url``)
``PREFIX``                  ``"ratelimit"``: the first part of every store key
``ON_ERROR``                ``"allow"``: what a store failure decides (``"deny"``: 503; ``"raise"``)
``HEADERS``                 ``"ietf"``; or ``"draft-6"``, ``"legacy"``, a list, None
``TRUSTED_PROXIES``         ``[]``: CIDRs of your reverse proxies, for the client-IP key
``KEY``                     the default key: a callable of the request or its dotted path
``DEFAULT``                 None; a limit such as ``"1000/hour"`` that the middleware applies per
                            client to every request
``EXEMPT``                  path patterns the middleware skips (``"/health"``, ``"/static/*"``)
``VIEW``                    a view ``(request, exception) -> response`` (or its dotted path)
                            answering a 429 instead of ours; ``exception.decision`` and
                            ``exception.response`` (our 429) are given; ``Retry-After`` and the
                            rate-limit headers are added unless it sets them
``ENABLED``                 ``True``; ``False`` turns every limit off
``PARTITION_KEY_SECRET``    None; bytes or text, adds a hashed ``pk`` to ``RateLimit``
==========================  ========================================================================

Settings are read at the first request and again after Django's ``setting_changed``
(``override_settings``). Importing this module registers the system checks
(:mod:`ratelimit.django.checks`); importing it never imports DRF (``Throttle`` loads it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.core import checks as _checks
from django.core.signals import setting_changed as _setting_changed

from ratelimit.django._conf import reset as _reset
from ratelimit.django._views import RateLimited, RateLimitMiddleware, limit
from ratelimit.django.checks import check_settings as _check_settings

if TYPE_CHECKING:
    from ratelimit.django._throttle import Throttle

__all__ = ["RateLimitMiddleware", "RateLimited", "Throttle", "limit"]

_checks.register(_check_settings, "ratelimit")
_setting_changed.connect(_reset, dispatch_uid="ratelimit.django.settings")


def __getattr__(name: str) -> Any:
    if name == "Throttle":  # DRF is optional: loaded when the throttle is asked for
        from ratelimit.django._throttle import Throttle

        globals()["Throttle"] = Throttle
        return Throttle
    raise AttributeError(f"module 'ratelimit.django' has no attribute {name!r}")
