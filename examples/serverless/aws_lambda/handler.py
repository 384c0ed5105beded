"""Rate limiting in an AWS Lambda function, over Upstash's REST API: one HTTP request per check.

Deploy with ``handler.handler`` as the entry point behind API Gateway (HTTP API or REST API) or
a Lambda function URL, with ``ratelimit-atomic[upstash]`` in the package (``requirements.txt``).

Environment:

- ``UPSTASH_REDIS_REST_URL``, ``UPSTASH_REDIS_REST_TOKEN``: the database (required);
- ``RATELIMIT_LIMITS``: the limits, default ``"10/second; 1000/day"``;
- ``RATELIMIT_PREFIX``: the first part of every key, default ``"api"``;
- ``RATELIMIT_ON_ERROR``: ``"allow"`` (default), ``"deny"`` or ``"raise"`` when Upstash fails.

The limiter is built once per execution environment, at cold start, outside the handler: warm
invocations reuse it and its open HTTPS connection. ``from_env()`` gives the client no retries
(a retried check would be counted twice) and a 0.5 s timeout (upstash-redis sets none).
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import ratelimit as rl

limiter = rl.Limiter(
    os.environ.get("RATELIMIT_LIMITS", "10/second; 1000/day"),
    store=rl.UpstashStore.from_env(),
    prefix=os.environ.get("RATELIMIT_PREFIX", "api"),
    on_error=os.environ.get("RATELIMIT_ON_ERROR", "allow"),  # type: ignore[arg-type]
)


def client_key(event: dict[str, Any]) -> str:
    """The caller's address as API Gateway saw it (HTTP API / function URL: ``http.sourceIp``;
    REST API: ``identity.sourceIp``). Never a client-supplied header."""
    context = event.get("requestContext") or {}
    ip = (context.get("http") or {}).get("sourceIp") or (context.get("identity") or {}).get(
        "sourceIp"
    )
    return f"ip:{ip or 'unknown'}"


def rate_limit_headers(decision: rl.Decision) -> dict[str, str]:
    """``RateLimit-Limit/Remaining/Reset`` (draft-6 names), seconds rounded up."""
    return {
        "RateLimit-Limit": str(decision.limit),
        "RateLimit-Remaining": str(decision.remaining),
        "RateLimit-Reset": str(math.ceil(decision.reset_after)),
    }


def handler(event: dict[str, Any], context: object) -> dict[str, Any]:
    """One check per invocation; 429 with ``Retry-After`` when the caller is over a limit."""
    decision = limiter.hit(client_key(event))
    headers = rate_limit_headers(decision)
    if not decision.allowed:
        retry = max(1, math.ceil(decision.retry_after))
        headers.update({"Retry-After": str(retry), "Content-Type": "application/problem+json"})
        body = {"title": "Too Many Requests", "status": 429, "retry_after": retry}
        return {"statusCode": 429, "headers": headers, "body": json.dumps(body)}
    headers["Content-Type"] = "application/json"
    body = {"message": "hello from Lambda", "remaining": decision.remaining}
    return {"statusCode": 200, "headers": headers, "body": json.dumps(body)}
