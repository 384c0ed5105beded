"""ratelimit: atomic, honest rate limiting for Python APIs and functions.

The limiters (:class:`Limiter`, :class:`AsyncLimiter`), their :class:`Decision` and leases,
the policies and :func:`parse`, the stores (memory, Redis/Valkey/Cluster, Upstash over HTTP),
the errors, :func:`rate_limit` and :mod:`ratelimit.keys`. Importing this package imports none
of redis, starlette, fastapi, flask or asyncio: each store and integration imports its library
when it is used. See the Getting started page of the docs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ratelimit.decision import Decision
from ratelimit.errors import ConfigurationError, RateLimitExceeded, StoreError
from ratelimit.lease import AsyncLease, Lease
from ratelimit.limiter import AsyncLimiter, Limiter
from ratelimit.policies import Concurrency, FixedWindow, Policy, SlidingWindow, TokenBucket, parse
from ratelimit.stores.memory import MemoryStore
from ratelimit.stores.redis import AsyncRedisStore, RedisStore

if TYPE_CHECKING:
    import ratelimit.keys as keys
    from ratelimit.decorator import rate_limit
    from ratelimit.stores.upstash import AsyncUpstashStore, UpstashStore

__all__ = [
    "AsyncLease",
    "AsyncLimiter",
    "AsyncRedisStore",
    "AsyncUpstashStore",
    "Concurrency",
    "ConfigurationError",
    "Decision",
    "FixedWindow",
    "Lease",
    "Limiter",
    "MemoryStore",
    "Policy",
    "RateLimitExceeded",
    "RedisStore",
    "SlidingWindow",
    "StoreError",
    "TokenBucket",
    "UpstashStore",
    "keys",
    "parse",
    "rate_limit",
]

__version__ = "0.1.0"

# Loaded on first use, so that `import ratelimit` stays cheap for serverless cold starts.
_LAZY = {
    "rate_limit": ("ratelimit.decorator", "rate_limit"),
    "keys": ("ratelimit.keys", None),
    "UpstashStore": ("ratelimit.stores.upstash", "UpstashStore"),
    "AsyncUpstashStore": ("ratelimit.stores.upstash", "AsyncUpstashStore"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module_name, attribute = _LAZY[name]
        module = importlib.import_module(module_name)
        value = module if attribute is None else getattr(module, attribute)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ratelimit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
