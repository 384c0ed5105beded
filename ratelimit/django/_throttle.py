"""``Throttle``: a Django REST framework throttle that checks and charges in one atomic call
of our limiter, instead of DRF's read-then-write of a list of timestamps in the cache."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rest_framework.settings import api_settings
from rest_framework.throttling import BaseThrottle

from ratelimit._web import check_key
from ratelimit.django._conf import state
from ratelimit.errors import ConfigurationError
from ratelimit.keys import KeyFunc

if TYPE_CHECKING:
    from ratelimit.decision import Decision

__all__ = ["Throttle"]


class Throttle(BaseThrottle):  # type: ignore[misc]  # DRF ships no type information
    """A DRF throttle on our limiter::

        REST_FRAMEWORK = {
            "DEFAULT_THROTTLE_CLASSES": ["ratelimit.django.Throttle"],
            "DEFAULT_THROTTLE_RATES": {"uploads": "10/minute; 100/day", "user": "1000/hour"},
        }

        class UploadViewSet(viewsets.ModelViewSet):
            throttle_scope = "uploads"        # every action of the viewset shares the limit

    The scope is the view's ``throttle_scope``, else the class attribute ``scope`` (subclass
    to set one, e.g. ``scope = "user"``); a view with neither is not throttled. Its rate comes
    from ``DEFAULT_THROTTLE_RATES`` in our grammar (``"5/minute"``, ``"5 per minute"``,
    ``"10/second; 1000/day"``; None: not limited). One limit per scope per client, counted in
    ``RATELIMIT['STORE']``: the client is ``"user:<pk>"`` for an authenticated user, else the
    key ``RATELIMIT['KEY']`` gives (default: the client IP with ``RATELIMIT['TRUSTED_PROXIES']``).
    Override :meth:`get_key` to count by something else.

    ``allow_request`` blocks on the store once. Raises ConfigurationError for a scope without
    a rate or a rate that does not parse (at the first request of the view), or a key that is
    not a str.
    """

    scope: str | None = None

    def __init__(self) -> None:
        self.decision: Decision | None = None

    def get_key(self, request: Any, view: Any) -> str:
        """The client a request is counted for: ``"user:<pk>"``, else RATELIMIT['KEY']."""
        user = getattr(request, "user", None)
        if user is not None and getattr(user, "is_authenticated", False):
            return f"user:{user.pk}"
        st = state()
        if isinstance(st.key, KeyFunc):
            return st.builtin_key(st.key, request)
        return check_key(st.key(request), st.key)

    def allow_request(self, request: Any, view: Any) -> bool:
        """Check and charge one request: True when allowed. Blocks on the store once."""
        scope = getattr(view, "throttle_scope", None) or self.scope
        if not scope:
            return True
        st = state()
        if not st.enabled:
            return True
        rates = api_settings.DEFAULT_THROTTLE_RATES or {}
        if scope not in rates:
            raise ConfigurationError(
                f"no rate for throttle scope {scope!r}: add it to REST_FRAMEWORK"
                "['DEFAULT_THROTTLE_RATES']"
            )
        rate = rates[scope]
        if rate is None:
            return True
        limiter = st.rate_limiter(rate, f"DEFAULT_THROTTLE_RATES[{scope!r}]")
        key = self.get_key(request, view)
        if not isinstance(key, str):
            raise ConfigurationError(
                f"{type(self).__name__}.get_key returned {key!r}; it must be a str"
            )
        self.decision = limiter.hit(f"throttle:{scope}|{key}")
        return self.decision.allowed

    def wait(self) -> float | None:
        """Seconds until the denied request would be allowed (DRF sends it as Retry-After,
        rounded up), or None after an allowed one."""
        if self.decision is None or self.decision.allowed:
            return None
        return max(self.decision.retry_after, 0.001)
