"""Settings of the example Django project (``examples/django_app``).

From the environment: ``REDIS_URL`` (default: the memory store, one process only),
``TRUSTED_PROXIES`` (comma-separated CIDRs of your reverse proxies) and ``RATELIMIT_DEFAULT``
(the app-wide limit per client, default ``1000/hour``).
"""

import os

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-secret")
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "urls"
WSGI_APPLICATION = "wsgi.application"
USE_TZ = True
DATABASES: dict = {}
INSTALLED_APPS = ["rest_framework", "ratelimit.django"]  # the app registers the checks
MIDDLEWARE = ["ratelimit.django.RateLimitMiddleware"]

REDIS_URL = os.environ.get("REDIS_URL")

RATELIMIT = {
    "STORE": REDIS_URL or "memory://",
    "TRUSTED_PROXIES": [p for p in os.environ.get("TRUSTED_PROXIES", "").split(",") if p],
    "DEFAULT": os.environ.get("RATELIMIT_DEFAULT", "1000/hour") or None,  # "": none
    "EXEMPT": ["/health"],
}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": [],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "UNAUTHENTICATED_USER": None,
    "DEFAULT_THROTTLE_CLASSES": ["ratelimit.django.Throttle"],
    "DEFAULT_THROTTLE_RATES": {
        "uploads": "3/minute",  # our grammar: "3 per minute", "10/second; 100/day" too
        "five": "5/minute",
        "user": "5/minute",  # DRF's own UserRateThrottle, for the comparison view
    },
}

# DRF's own throttles count in Django's cache: Redis when there is one, as in production.
CACHES = {
    "default": (
        {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}
        if REDIS_URL
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    )
}
