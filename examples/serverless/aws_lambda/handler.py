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
import os
from typing import Any

import ratelimit as rl
from ratelimit import keys
from ratelimit.headers import PROBLEM_JSON, Renderer

limiter = rl.Limiter(
    os.environ.get("RATELIMIT_LIMITS", "10/second; 1000/day"),
    store=rl.UpstashStore.from_env(),
    prefix=os.environ.get("RATELIMIT_PREFIX", "api"),
    on_error=os.environ.get("RATELIMIT_ON_ERROR", "allow"),  # type: ignore[arg-type]
)
# The caller's address as API Gateway saw it, never a header the client wrote: the library's
# key groups an IPv6 caller's /64 and spells each address one way ("ip:2001:db8:3::/64").
client_ip = keys.client_ip()
renderer = Renderer("draft-6")  # RateLimit-Limit/Remaining/Reset, as the integrations send them


def _field(mapping: object, name: str) -> Any:
    return mapping.get(name) if isinstance(mapping, dict) else None


def client_key(event: object) -> str:
    """The caller's key, from the address API Gateway saw (HTTP API / function URL:
    ``requestContext.http.sourceIp``; REST API: ``requestContext.identity.sourceIp``).
    An event without one gets the shared ``"peer:unknown"``."""
    context = _field(event, "requestContext")
    http, identity = _field(context, "http"), _field(context, "identity")
    ip = _field(http, "sourceIp") or _field(identity, "sourceIp")
    environ = {"REQUEST_METHOD": "GET", "REMOTE_ADDR": ip if isinstance(ip, str) else ""}
    return client_ip(environ)


def handler(event: object, context: object) -> dict[str, Any]:
    """One check per invocation; 429 with ``Retry-After`` when the caller is over a limit
    (503 when Upstash failed and ``RATELIMIT_ON_ERROR=deny``). An event that is not an HTTP
    event (not a JSON object) is answered 400 without a check."""
    if not isinstance(event, dict):
        body = json.dumps({"title": "Bad Request", "status": 400, "detail": "not an HTTP event"})
        return {"statusCode": 400, "headers": {"Content-Type": PROBLEM_JSON}, "body": body}
    decision = limiter.hit(client_key(event))
    if not decision.allowed:
        status, fields, denial = renderer.deny(decision)
        return {"statusCode": status, "headers": dict(fields), "body": denial.decode()}
    headers = dict(renderer.fields(decision))
    headers["Content-Type"] = "application/json"
    body = json.dumps({"message": "hello from Lambda", "remaining": decision.remaining})
    return {"statusCode": 200, "headers": headers, "body": body}
