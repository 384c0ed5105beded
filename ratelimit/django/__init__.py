"""Django and Django REST framework: the view decorator :func:`limit`, the app-wide
:class:`RateLimitMiddleware`, the DRF :class:`Throttle`, and :class:`RateLimited`, what
``RATELIMIT['VIEW']`` receives.

Settings are one ``RATELIMIT`` dict (``STORE``, ``DEFAULT``, ``KEY``, ``TRUSTED_PROXIES``, ...,
every key optional, an unknown key an error), listed on the Django and DRF page of the docs.
They are read at the first request and again after Django's ``setting_changed``
(``override_settings``). Importing this module registers the system checks
(:mod:`ratelimit.django.checks`); it never imports DRF (``Throttle`` loads it).
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
