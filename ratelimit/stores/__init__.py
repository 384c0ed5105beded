"""Stores: where limiter state lives. Each store module imports its client library only when
a store is built."""

from ratelimit.stores.base import AsyncStore, Plan, Store
from ratelimit.stores.memory import MemoryStore
from ratelimit.stores.redis import AsyncRedisStore, RedisStore

__all__ = ["AsyncRedisStore", "AsyncStore", "MemoryStore", "Plan", "RedisStore", "Store"]
