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
    """A DRF throttle on this library's limiter (in ``DEFAULT_THROTTLE_CLASSES``), checking
    and charging in one atomic store call.

    The scope is the view's ``throttle_scope``, else the class attribute ``scope`` (subclass
    to set one); a view with neither is not throttled. Its rate comes from
    ``DEFAULT_THROTTLE_RATES`` in this library's grammar (``"5 per minute"``,
    ``"10/second; 1000/day"``; None: not limited): one limit per scope per client, counted in
    ``RATELIMIT['STORE']``. The client is :meth:`get_key`'s.

    :ivar decision: the :class:`~ratelimit.Decision` of the last :meth:`allow_request`, or
        None before one.
    """

    scope: str | None = None

    def __init__(self) -> None:
        self.decision: Decision | None = None

    def get_key(self, request: Any, view: Any) -> str:
        """The client a request is counted for; override it to count by something else.

        :param request: the DRF request.
        :param view: the view.
        :returns: ``"user:<pk>"`` for an authenticated user, else the key ``RATELIMIT['KEY']``
            gives (default: the client IP with ``RATELIMIT['TRUSTED_PROXIES']``).
        :raises ConfigurationError: when a custom ``RATELIMIT['KEY']`` returns no str.
        """
        user = getattr(request, "user", None)
        if user is not None and getattr(user, "is_authenticated", False):
            return f"user:{user.pk}"
        st = state()
        if isinstance(st.key, KeyFunc):
            return st.builtin_key(st.key, request)
        return check_key(st.key(request), st.key)

    def allow_request(self, request: Any, view: Any) -> bool:
        """Check and charge one request; DRF calls it. Blocks on the store once.

        :param request: the DRF request.
        :param view: the view.
        :returns: True when allowed (or not throttled), False when denied.
        :raises ConfigurationError: for a scope without a rate or a rate that does not parse
            (at the first request of the view), bad settings, or a key that is not a str.
        """
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
        """Seconds until the denied request would be allowed (DRF sends it as
        ``Retry-After``, rounded up), or None after an allowed one."""
        if self.decision is None or self.decision.allowed:
            return None
        return max(self.decision.retry_after, 0.001)
