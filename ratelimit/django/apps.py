"""``INSTALLED_APPS += ["ratelimit.django"]``: registers the system checks at start-up,
before any view is imported."""

from __future__ import annotations

from django.apps import AppConfig


class RateLimitConfig(AppConfig):  # type: ignore[misc]  # Django ships no type information
    name = "ratelimit.django"
    label = "ratelimit"
    verbose_name = "Rate limits"

    def ready(self) -> None:
        import ratelimit.django  # noqa: F401  # registers the checks and the settings signal
