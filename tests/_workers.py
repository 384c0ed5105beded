"""Worker functions for the multi-process tests (importable by spawned interpreters)."""

from __future__ import annotations

import ratelimit as rl


def _policy(name: str, limit: int) -> rl.Policy:
    if name == "bucket":
        return rl.TokenBucket(1, 3600, burst=limit)  # one token an hour: no refill meanwhile
    return rl.FixedWindow(limit, 3600)


def hammer(startup: list[tuple[str, int]], cluster: bool, policy: str, limit: int, n: int) -> int:
    """Hit one key ``n`` times on a fresh connection; return how many hits were allowed."""
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    if cluster:
        from redis.cluster import ClusterNode, RedisCluster

        nodes = [ClusterNode(h, p) for h, p in startup]
        client = RedisCluster(startup_nodes=nodes, retry=Retry(NoBackoff(), 0))
    else:
        import redis

        host, port = startup[0]
        client = redis.Redis(host=host, port=port, retry=Retry(NoBackoff(), 0))
    try:
        limiter = rl.Limiter(
            _policy(policy, limit), store=rl.RedisStore(client), prefix="conc", on_error="raise"
        )
        return sum(limiter.hit("one-key").allowed for _ in range(n))
    finally:
        client.close()
