"""Rate-limit headers and the deny response, parsed back with a Structured Field parser."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import http_sfv
import pytest

import ratelimit as rl
from ratelimit.headers import Renderer, parse_modes, retry_after_seconds
from tests.support import Clock


def sf_list(value: str) -> list[http_sfv.Item]:
    parsed = http_sfv.List()
    parsed.parse(value.encode("ascii"))
    return list(parsed)


def test_ietf_fields_are_structured_field_lists_of_named_items() -> None:
    clock = Clock()
    limiter = rl.Limiter([rl.FixedWindow(5, 60), rl.SlidingWindow(100, 3600)], clock=clock)
    limiter.hit("k", cost=2)
    clock.now += 10.5
    decision = limiter.hit("k")
    fields = dict(Renderer("ietf").fields(decision))
    assert list(fields) == ["RateLimit-Policy", "RateLimit"]

    policy = sf_list(fields["RateLimit-Policy"])
    assert [item.value for item in policy] == ["f5.60000", "s100.3600000"]
    assert all(isinstance(item.value, str) for item in policy)  # Strings, not Tokens
    assert dict(policy[0].params) == {"q": 5, "w": 60}
    assert dict(policy[1].params) == {"q": 100, "w": 3600}

    state = sf_list(fields["RateLimit"])
    assert [item.value for item in state] == ["f5.60000", "s100.3600000"]
    assert dict(state[0].params) == {"r": 2, "t": 50}  # 60 - 10.5 = 49.5, rounded up
    assert state[1].params["r"] == 97
    assert "pk" not in state[0].params


def test_token_bucket_policy_advertises_its_sustained_rate() -> None:
    limiter = rl.Limiter(rl.TokenBucket(rate=10, period=1, burst=25), clock=Clock())
    fields = dict(Renderer("ietf").fields(limiter.hit("k")))
    (item,) = sf_list(fields["RateLimit-Policy"])
    # 25 tokens take 2.5 s to refill: q/w is (about) the sustained rate, r never exceeds q
    assert dict(item.params) == {"q": 25, "w": 3}
    (state,) = sf_list(fields["RateLimit"])
    assert dict(state.params) == {"r": 24, "t": 1}  # one token back in 0.1 s


def test_sub_second_windows_round_up_to_one_second() -> None:
    limiter = rl.Limiter(rl.FixedWindow(3, 0.25), clock=Clock())
    fields = dict(Renderer("ietf").fields(limiter.hit("k")))
    (item,) = sf_list(fields["RateLimit-Policy"])
    assert dict(item.params) == {"q": 3, "w": 1}


def test_partition_key_is_a_keyed_hash_never_the_key() -> None:
    limiter = rl.Limiter("5/minute", clock=Clock())
    secret = b"s3cret"
    renderer = Renderer("ietf", partition_key_secret=secret)
    fields = dict(renderer.fields(limiter.hit("ip:203.0.113.7"), key="ip:203.0.113.7"))
    assert "203.0.113.7" not in fields["RateLimit"]
    (state,) = sf_list(fields["RateLimit"])
    expected = hmac.new(secret, b"ip:203.0.113.7", hashlib.sha256).digest()[:12]
    assert state.params["pk"] == expected
    assert base64.b64encode(expected).decode() in fields["RateLimit"]
    (policy,) = sf_list(fields["RateLimit-Policy"])
    assert "pk" not in policy.params  # the policy field stays the same for every client
    with pytest.raises(rl.ConfigurationError):
        Renderer("ietf", partition_key_secret="text")  # type: ignore[arg-type]


def test_draft_6_and_legacy_fields() -> None:
    clock = Clock()
    limiter = rl.Limiter(rl.FixedWindow(5, 60), clock=clock)
    limiter.hit("k")
    clock.now += 0.5
    decision = limiter.hit("k")
    before = time.time()
    fields = dict(Renderer(("draft-6", "legacy")).fields(decision))
    assert fields["RateLimit-Limit"] == "5"
    assert fields["RateLimit-Remaining"] == "3"
    assert fields["RateLimit-Reset"] == "60"  # 59.5 rounded up
    assert fields["X-RateLimit-Limit"] == "5"
    assert fields["X-RateLimit-Remaining"] == "3"
    reset = int(fields["X-RateLimit-Reset"])  # a Unix time, as Flask-Limiter and GitHub send
    assert before + 59 <= reset <= time.time() + 61
    for name in ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"):
        item = http_sfv.Item()
        item.parse(fields[name].encode())
        assert isinstance(item.value, int)


def test_several_modes_keep_a_fixed_order_and_none_means_none() -> None:
    decision = rl.Limiter("1/second", clock=Clock()).hit("k")
    renderer = Renderer(["legacy", "ietf", "legacy"])
    assert renderer.modes == ("ietf", "legacy")
    assert [name for name, _ in renderer.fields(decision)] == [
        "RateLimit-Policy",
        "RateLimit",
        "X-RateLimit-Limit",
        "X-RateLimit-Remaining",
        "X-RateLimit-Reset",
    ]
    assert Renderer(None).fields(decision) == []
    assert Renderer(()).raw_fields(decision) == []
    assert parse_modes("draft-6") == ("draft-6",)
    with pytest.raises(rl.ConfigurationError, match="unknown headers mode 'rfc'"):
        Renderer("rfc")  # type: ignore[arg-type]


def test_raw_fields_are_lower_case_bytes() -> None:
    decision = rl.Limiter(rl.FixedWindow(1, 1), clock=Clock()).hit("k")
    raw = Renderer("draft-6").raw_fields(decision)
    assert raw == [
        (b"ratelimit-limit", b"1"),
        (b"ratelimit-remaining", b"0"),
        (b"ratelimit-reset", b"1"),
    ]


def test_policy_value_is_computed_once() -> None:
    limiter = rl.Limiter("5/minute; 100/hour", clock=Clock())
    renderer = Renderer("ietf")
    first = renderer.policy_value(limiter.hit("a"))
    assert renderer.policy_value(limiter.hit("b")) is first


@pytest.mark.parametrize(
    ("retry_ms", "seconds"), [(1, 1), (999, 1), (1000, 1), (1001, 2), (59_500, 60), (0, 1)]
)
def test_retry_after_is_whole_seconds_rounded_up_never_zero(retry_ms: int, seconds: int) -> None:
    policy = rl.FixedWindow(1, 60)
    decision = rl.Decision(False, 1, 0, 60.0, retry_ms / 1000, policy, (), None)
    assert retry_after_seconds(decision) == seconds


def test_deny_response() -> None:
    clock = Clock()
    limiter = rl.Limiter([rl.FixedWindow(2, 10), rl.FixedWindow(100, 3600)], clock=clock)
    limiter.hit("k", cost=2)
    clock.now += 0.25
    denied = limiter.hit("k")
    assert not denied.allowed
    status, headers, body = Renderer("ietf").deny(denied)
    fields = dict(headers)
    assert status == 429
    assert fields["Retry-After"] == "10"  # 9.75 s rounded up
    assert fields["Content-Type"] == "application/problem+json"
    assert int(fields["Content-Length"]) == len(body)
    assert "RateLimit" in fields
    assert "RateLimit-Policy" in fields
    problem = json.loads(body)
    assert problem["status"] == 429
    assert problem["retry_after"] == 10
    assert "10 seconds" in problem["detail"]
    assert problem["violated-policies"] == ["f2.10000"]
    assert problem["type"].endswith("#quota-exceeded")
    assert len(body) < 300


def test_store_error_decisions_get_no_rate_limit_headers_and_deny_with_503() -> None:
    class Broken(rl.MemoryStore):
        def evaluate(self, *args: object, **kwargs: object) -> list[int]:
            raise rl.StoreError("down")

    allowed = rl.Limiter("1/second", store=Broken(), on_error="allow").hit("k")
    assert allowed.reason == "store_error"
    assert Renderer(("ietf", "draft-6", "legacy")).fields(allowed) == []

    denied = rl.Limiter("1/second", store=Broken(), on_error="deny").hit("k")
    status, headers, body = Renderer("ietf").deny(denied)
    fields = dict(headers)
    assert status == 503
    assert int(fields["Retry-After"]) >= 1
    assert "RateLimit" not in fields
    assert json.loads(body)["status"] == 503


def test_the_fast_bytes_path_matches_the_text_fields() -> None:
    clock = Clock()
    limiter = rl.Limiter(rl.TokenBucket(3, 1.5, burst=7), clock=clock)
    renderer = Renderer("ietf")
    for _ in range(4):
        decision = limiter.hit("k", cost=2)
        clock.now += 0.3
        expected = [(n.lower().encode(), v.encode()) for n, v in renderer.fields(decision)]
        assert renderer.raw_fields(decision) == expected
    two = rl.Limiter("5/minute; 50/hour", clock=clock).hit("k")
    expected = [(n.lower().encode(), v.encode()) for n, v in renderer.fields(two)]
    assert renderer.raw_fields(two) == expected


@pytest.mark.parametrize("modes", ["ietf", "draft-6", ("ietf", "draft-6")])
@pytest.mark.parametrize("secret", [None, b"s"])
@pytest.mark.parametrize("policies", ["5/minute", "5/minute; 7/hour", "1/s; 5/minute; 9/hour"])
def test_bytes_and_text_fields_agree_for_every_decision(
    modes: object, secret: bytes | None, policies: str
) -> None:
    clock = Clock()
    renderer = Renderer(modes, partition_key_secret=secret)  # type: ignore[arg-type]
    for _ in range(3):
        # a fresh decision each time: its per-policy details are built lazily, or never
        decision = rl.Limiter(policies, clock=clock).hit("k")
        raw = renderer.raw_fields(decision, "k")
        text = renderer.fields(rl.Limiter(policies, clock=clock).hit("k"), "k")
        assert raw == [(n.lower().encode(), v.encode()) for n, v in text]
        if "ietf" in renderer.modes:
            assert len(sf_list(raw[0][1].decode())) == policies.count("/")


def test_per_policy_is_the_decisions_of_every_policy() -> None:
    one = rl.Limiter("5/minute").hit("k")
    assert one.per_policy == (one,)
    several = rl.Limiter("5/minute; 7/hour").hit("k")
    assert [d.limit for d in several.per_policy] == [5, 7]
    assert several.per_policy == several.details
