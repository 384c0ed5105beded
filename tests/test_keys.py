"""Key functions: the client IP safe from spoofing, header keys, and the request view that
lets each key function serve every framework."""

from __future__ import annotations

from typing import Any

import pytest

from ratelimit import ConfigurationError, keys
from ratelimit.keys import EnvironView, ScopeView, request_view


def scope(peer: str | None = "203.0.113.7", **headers: str | list[str]) -> dict[str, Any]:
    raw: list[tuple[bytes, bytes]] = []
    for name, value in headers.items():
        for v in [value] if isinstance(value, str) else value:
            raw.append((name.replace("_", "-").lower().encode(), v.encode("latin-1")))
    return {
        "type": "http",
        "method": "GET",
        "path": "/",
        "headers": raw,
        "client": None if peer is None else (peer, 51234),
    }


def environ(peer: str | None = "203.0.113.7", **headers: str) -> dict[str, Any]:
    env: dict[str, Any] = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "wsgi.version": (1, 0)}
    if peer is not None:
        env["REMOTE_ADDR"] = peer
    for name, value in headers.items():
        env["HTTP_" + name.upper()] = value
    return env


# --- the direct peer ----------------------------------------------------------------------------


def test_direct_peer_is_the_default_in_every_request_kind() -> None:
    from flask import Flask
    from starlette.requests import Request
    from werkzeug.test import EnvironBuilder
    from werkzeug.wrappers import Request as WerkzeugRequest

    key = keys.client_ip()
    assert key(scope()) == "ip:203.0.113.7"
    assert key(environ()) == "ip:203.0.113.7"
    assert key(Request(scope())) == "ip:203.0.113.7"
    env = EnvironBuilder(environ_base={"REMOTE_ADDR": "203.0.113.7"}).get_environ()
    assert key(WerkzeugRequest(env)) == "ip:203.0.113.7"
    app = Flask(__name__)
    with app.test_request_context(environ_base={"REMOTE_ADDR": "198.51.100.1"}):
        from flask import request

        assert key(request) == "ip:198.51.100.1"


def test_websocket_scope_is_a_request_too() -> None:
    from starlette.websockets import WebSocket

    ws_scope = scope() | {"type": "websocket"}

    async def receive() -> dict[str, Any]:
        raise AssertionError

    async def send(message: dict[str, Any]) -> None:
        raise AssertionError

    assert keys.client_ip()(WebSocket(ws_scope, receive, send)) == "ip:203.0.113.7"
    assert keys.client_ip()(ws_scope) == "ip:203.0.113.7"


def test_forwarding_headers_are_ignored_from_an_untrusted_peer() -> None:
    key = keys.client_ip()
    spoofed = {"x_forwarded_for": "1.1.1.1", "forwarded": "for=1.1.1.1", "x_real_ip": "1.1.1.1"}
    assert key(scope(**spoofed)) == "ip:203.0.113.7"
    assert keys.client_ip(trusted_proxies=["10.0.0.0/8"])(scope(**spoofed)) == "ip:203.0.113.7"
    assert key(environ(X_FORWARDED_FOR="1.1.1.1")) == "ip:203.0.113.7"


def test_a_request_without_a_peer_gets_the_documented_key_never_localhost() -> None:
    key = keys.client_ip()
    assert key(scope(peer=None)) == keys.NO_PEER == "peer:unknown"
    assert key(environ(peer=None)) == "peer:unknown"
    assert key(environ(peer="")) == "peer:unknown"
    # Headers do not help an untrusted peer-less connection.
    assert key(scope(peer=None, x_forwarded_for="1.2.3.4")) == "peer:unknown"


def test_unix_socket_proxy_can_be_trusted() -> None:
    key = keys.client_ip(trusted_proxies=["unix"])
    assert key(scope(peer=None, x_forwarded_for="1.1.1.1, 198.51.100.4")) == "ip:198.51.100.4"
    assert key(scope(peer=None)) == "peer:unknown"


def test_a_peer_that_is_not_an_address_is_kept_verbatim() -> None:
    assert keys.client_ip()(scope(peer="testclient")) == "peer:testclient"
    assert keys.client_ip()(scope(peer="we\x00ird\u00e9")) == "peer:we?ird?"


# --- behind trusted proxies ---------------------------------------------------------------------

PROXY = "10.0.0.5"


@pytest.mark.parametrize(
    ("xff", "expected"),
    [
        ("198.51.100.4", "ip:198.51.100.4"),
        # the client wrote 1.1.1.1 itself; the proxy appended what it saw
        ("1.1.1.1, 198.51.100.4", "ip:198.51.100.4"),
        # two trusted proxies in the chain are skipped
        ("1.1.1.1, 198.51.100.4, 10.1.2.3, 10.0.0.9", "ip:198.51.100.4"),
        # every hop trusted: the leftmost is the client
        ("10.9.9.9, 10.1.2.3", "ip:10.9.9.9"),
        # ports some balancers write
        ("198.51.100.4:5555", "ip:198.51.100.4"),
        ("[2001:db8::1]:443", "ip:2001:db8::/64"),
        ("2001:db8::1", "ip:2001:db8::/64"),
        # spaces and empty entries
        (" ,198.51.100.4 , ", "ip:198.51.100.4"),
        # what a trusted proxy wrote but is not an address
        ("unknown", "peer:unknown"),
        # not an address: malformed, never a key of the client's choosing
        ("1.1.1.1, garbage", "peer:unknown"),
        ("", f"ip:{PROXY}"),
    ],
)
def test_x_forwarded_for_from_a_trusted_proxy(xff: str, expected: str) -> None:
    key = keys.client_ip(trusted_proxies=["10.0.0.0/8"])
    assert key(scope(peer=PROXY, x_forwarded_for=xff)) == expected
    assert key(environ(peer=PROXY, X_FORWARDED_FOR=xff)) == expected


def test_trusted_proxy_without_the_header_is_the_client() -> None:
    assert keys.client_ip(trusted_proxies=[PROXY])(scope(peer=PROXY)) == f"ip:{PROXY}"


def test_several_field_lines_form_one_list() -> None:
    key = keys.client_ip(trusted_proxies=["10.0.0.0/8"])
    request = scope(peer=PROXY, x_forwarded_for=["1.1.1.1, 198.51.100.4", "10.0.0.7"])
    assert key(request) == "ip:198.51.100.4"


@pytest.mark.parametrize(
    ("forwarded", "expected"),
    [
        ("for=198.51.100.4", "ip:198.51.100.4"),
        ('for=1.1.1.1, for="198.51.100.4:4711";proto=https', "ip:198.51.100.4"),
        ('for="[2001:db8:cafe::17]:4711"', "ip:2001:db8:cafe::/64"),
        ("For=198.51.100.4;by=10.0.0.5", "ip:198.51.100.4"),
        ('for=198.51.100.4;host="a,b;c", for=10.0.0.8', "ip:198.51.100.4"),
        ("for=_hidden", "peer:_hidden"),
        ("for=unknown", "peer:unknown"),
        ("proto=https", "peer:unknown"),  # the hop did not say who its client was
        ('for="1.1.1.1", for=198.51.100.4;proto="ht\\"tp"', "ip:198.51.100.4"),
    ],
)
def test_rfc_7239_forwarded(forwarded: str, expected: str) -> None:
    key = keys.client_ip(trusted_proxies=["10.0.0.0/8"], header="Forwarded")
    assert key(scope(peer=PROXY, forwarded=forwarded)) == expected


@pytest.mark.parametrize(
    "client",
    [
        'for="a',  # an unclosed quote that would swallow the proxy's element
        'for="a\\',
        'for="a\\"',
        "for=a",  # not a node
        "for=1.1.1.1;for=2.2.2.2",  # two for= in one element
        'for="1.1.1.1"x',  # text after a quoted string
        "for",  # a pair without "="
        'proto=https;for="[2001:db8::1',
    ],
)
@pytest.mark.parametrize("lines", [1, 2])
def test_forwarded_proxy_element_is_found_whatever_the_client_wrote(
    client: str, lines: int
) -> None:
    key = keys.client_ip(trusted_proxies=["10.0.0.0/8"], header="Forwarded")
    for proxy in ("for=203.0.113.7", 'for="203.0.113.7:4711"', 'for="[2001:db8:3::1]"'):
        expected = "ip:2001:db8:3::/64" if "2001" in proxy else "ip:203.0.113.7"
        value = [client, proxy] if lines == 2 else [f"{client}, {proxy}"]
        assert key(scope(peer=PROXY, forwarded=value)) == expected, (client, proxy)


@pytest.mark.parametrize(
    "forwarded",
    ['for="a', "for=a", "for=1.1.1.1;for=2.2.2.2", 'for="1.1.1.1"x', "for", "for=[::1"],
)
def test_a_malformed_forwarded_element_is_never_a_key_of_its_own(forwarded: str) -> None:
    # a trusted proxy passed the element on: it is malformed, not the client's chosen key
    key = keys.client_ip(trusted_proxies=["10.0.0.0/8"], header="Forwarded")
    assert key(scope(peer=PROXY, forwarded=forwarded)) == "peer:unknown"
    assert key(scope(peer=PROXY, forwarded=f"{forwarded}, for=10.0.0.9")) == "peer:unknown"


def test_client_chosen_text_does_not_fill_the_key_cache() -> None:
    forwarded = keys.client_ip(trusted_proxies=["10.0.0.0/8"], header="Forwarded")
    xff = keys.client_ip(trusted_proxies=["10.0.0.0/8"])
    for n in range(5000):
        assert forwarded(scope(peer=PROXY, forwarded=f'for="a{n}')) == "peer:unknown"
        assert forwarded(scope(peer=PROXY, forwarded=f"for=a{n}")) == "peer:unknown"
        assert xff(scope(peer=PROXY, x_forwarded_for=f"junk{n}")) == "peer:unknown"
    # only the proxy's address was remembered, not one entry per value sent
    assert len(forwarded._cache) <= 1
    assert len(xff._cache) <= 1


def test_only_the_named_header_is_read() -> None:
    # The proxy writes X-Forwarded-For; a Forwarded header is the client's own invention.
    xff = keys.client_ip(trusted_proxies=["10.0.0.0/8"])
    request = scope(peer=PROXY, forwarded="for=1.1.1.1", x_forwarded_for="198.51.100.4")
    assert xff(request) == "ip:198.51.100.4"
    forwarded = keys.client_ip(trusted_proxies=["10.0.0.0/8"], header="Forwarded")
    assert forwarded(scope(peer=PROXY, x_forwarded_for="1.1.1.1")) == f"ip:{PROXY}"
    real_ip = keys.client_ip(trusted_proxies=["10.0.0.0/8"], header="X-Real-IP")
    assert real_ip(scope(peer=PROXY, x_real_ip="198.51.100.4")) == "ip:198.51.100.4"


# --- IPv6 ---------------------------------------------------------------------------------------


def test_ipv6_is_grouped_by_prefix() -> None:
    assert keys.client_ip()(scope(peer="2001:db8:1:2:aaaa::1")) == "ip:2001:db8:1:2::/64"
    assert keys.client_ip()(scope(peer="2001:db8:1:2:bbbb::9")) == "ip:2001:db8:1:2::/64"
    assert keys.client_ip()(scope(peer="2001:db8:1:3::1")) == "ip:2001:db8:1:3::/64"
    assert keys.client_ip(ipv6_prefix=48)(scope(peer="2001:db8:1:3::1")) == "ip:2001:db8:1::/48"
    assert keys.client_ip(ipv6_prefix=128)(scope(peer="2001:db8::1")) == "ip:2001:db8::1"
    assert keys.client_ip()(scope(peer="fe80::1%eth0")) == "ip:fe80::/64"


def test_ipv4_mapped_ipv6_is_ipv4() -> None:
    assert keys.client_ip()(scope(peer="::ffff:203.0.113.7")) == "ip:203.0.113.7"
    key = keys.client_ip(trusted_proxies=["10.0.0.0/8"])
    # a dual-stack server reports the IPv4 proxy as mapped; it is still trusted
    request = scope(peer="::ffff:10.0.0.5", x_forwarded_for="::ffff:198.51.100.4")
    assert key(request) == "ip:198.51.100.4"


@pytest.mark.parametrize(
    "network", ["::ffff:10.0.0.0/104", "::ffff:10.0.0.1/128", "::ffff:0:0/96", "::/0"]
)
@pytest.mark.parametrize("peer", ["::ffff:10.0.0.1", "10.0.0.1"])
def test_ipv4_mapped_trusted_proxy_ranges_match(network: str, peer: str) -> None:
    key = keys.client_ip(trusted_proxies=[network])
    assert key(scope(peer=peer, x_forwarded_for="198.51.100.4")) == "ip:198.51.100.4"
    # and the range covers nothing beyond itself
    if network.endswith(("/104", "/128")):
        assert key(scope(peer="::ffff:11.0.0.1", x_forwarded_for="1.2.3.4")) == "ip:11.0.0.1"


def test_ipv6_trusted_proxies() -> None:
    key = keys.client_ip(trusted_proxies=["2001:db8:ffff::/48"])
    request = scope(peer="2001:db8:ffff::2", x_forwarded_for="2001:db8:1:2::3")
    assert key(request) == "ip:2001:db8:1:2::/64"


# --- configuration ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"trusted_proxies": ["10.0.0.0/33"]},
        {"trusted_proxies": ["example.com"]},
        {"trusted_proxies": [None]},
        {"ipv6_prefix": 0},
        {"ipv6_prefix": 129},
        {"ipv6_prefix": 64.0},
        {"ipv6_prefix": True},
        {"header": "X-Client-IP"},
    ],
)
def test_bad_client_ip_options(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        keys.client_ip(**kwargs)


def test_one_trusted_proxy_may_be_a_plain_string() -> None:
    key = keys.client_ip(trusted_proxies=PROXY)
    assert key(scope(peer=PROXY, x_forwarded_for="198.51.100.4")) == "ip:198.51.100.4"
    assert "10.0.0.5/32" in repr(key)


# --- header keys --------------------------------------------------------------------------------


def test_header_key() -> None:
    key = keys.header("X-API-Key")
    assert key(scope(x_api_key="abc")) == "hdr:x-api-key:abc"
    assert key(environ(X_API_KEY=" abc ")) == "hdr:x-api-key:abc"
    assert key(scope(x_api_key="a, b")) == "hdr:x-api-key:a, b"


def test_header_key_reads_the_value_the_application_reads() -> None:
    from flask import Flask
    from starlette.requests import Request
    from werkzeug.test import EnvironBuilder

    key = keys.header("X-API-Key")
    # Starlette (and FastAPI) give the app the first of two field lines
    asgi = scope(x_api_key=["k", "junk"])
    assert Request(asgi).headers["x-api-key"] == "k"
    assert key(asgi) == key(Request(asgi)) == "hdr:x-api-key:k"
    # a WSGI server joins them, and Flask's request.headers gives the app the joined value
    env = EnvironBuilder(headers=[("X-API-Key", "k"), ("X-API-Key", "junk")]).get_environ()
    app = Flask(__name__)
    with app.request_context(env):
        from flask import request

        assert key(request) == "hdr:x-api-key:" + request.headers["X-API-Key"]


def test_header_key_of_a_django_request_reads_its_meta() -> None:
    class DjangoLikeRequest:  # Django's ASGIRequest: a scope, and META joined with ","
        def __init__(self) -> None:
            self.scope = scope(x_api_key=["k", "junk"])
            self.META = {"REMOTE_ADDR": "203.0.113.7", "HTTP_X_API_KEY": "k,junk"}

    assert keys.header("X-API-Key")(DjangoLikeRequest()) == "hdr:x-api-key:k,junk"
    assert keys.client_ip()(DjangoLikeRequest()) == "ip:203.0.113.7"


def test_missing_header_cannot_escape_the_limit() -> None:
    key = keys.header("X-API-Key")
    assert key(scope()) == "hdr:x-api-key"
    assert key(scope(x_api_key="  ")) == "hdr:x-api-key"
    assert key(environ()) == "hdr:x-api-key"
    with_fallback = keys.header("X-API-Key", fallback=keys.client_ip())
    assert with_fallback(scope()) == "ip:203.0.113.7"
    assert with_fallback(scope(x_api_key="k")) == "hdr:x-api-key:k"


def test_bad_header_options() -> None:
    with pytest.raises(ConfigurationError):
        keys.header("")
    with pytest.raises(ConfigurationError):
        keys.header("X-Key", fallback=lambda request: "x")  # type: ignore[arg-type]


# --- the request view ---------------------------------------------------------------------------


def test_request_view_kinds() -> None:
    assert isinstance(request_view(scope()), ScopeView)
    assert isinstance(request_view(environ()), EnvironView)
    view = ScopeView(scope())
    assert request_view(view) is view
    with pytest.raises(TypeError, match="cannot read a request"):
        request_view(object())
    with pytest.raises(TypeError):
        request_view({"unrelated": 1})
