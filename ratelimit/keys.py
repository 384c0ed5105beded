"""Key functions: *who* is asking, as the text a limiter counts under.

A key function takes the framework's request and returns a str. The built-in ones work in
every integration (a Starlette/FastAPI ``Request`` or ``WebSocket``, a raw ASGI scope, a Flask
or Werkzeug request, a raw WSGI environ), because they read the request through one small
*request view* that knows where each kind keeps the peer address and the headers::

    from ratelimit import keys

    keys.client_ip()                                     # the direct peer: "ip:203.0.113.7"
    keys.client_ip(trusted_proxies=["10.0.0.0/8"])       # behind a proxy: X-Forwarded-For
    keys.client_ip(trusted_proxies=["10.0.0.0/8"], header="Forwarded")   # RFC 7239
    keys.header("X-API-Key")                             # "hdr:x-api-key:<value>"

A custom key is any callable of the framework's request, sync or async, returning a str.

Keys :func:`client_ip` returns (documented, stable):

- ``"ip:203.0.113.7"``: an IPv4 client (IPv4-mapped IPv6 such as ``::ffff:203.0.113.7`` too);
- ``"ip:2001:db8:1:2::/64"``: an IPv6 client, grouped by ``ipv6_prefix`` (one person usually
  holds a whole /64, so counting single addresses would let them rotate through 2**64 keys);
- ``"peer:unknown"``: no peer address at all (a Unix-socket server, or a trusted proxy that
  wrote ``for=unknown``). All such requests share this key; it is never ``127.0.0.1``;
- ``"peer:<text>"``: a peer or forwarded node that is not an IP address (a test client's
  ``"testclient"``, an RFC 7239 obfuscated identifier such as ``_hidden``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from functools import lru_cache
from typing import Any, Final, TypeAlias

from ratelimit.errors import ConfigurationError

__all__ = ["KeyFunction", "client_ip", "header"]

#: A key function: the framework's request in, the key (or an awaitable of it) out.
KeyFunction: TypeAlias = Callable[[Any], str | Awaitable[str]]

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
Network: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network

#: The key of a request that has no peer address.
NO_PEER: Final = "peer:unknown"
_MAX_TOKEN: Final = 100


# --- the request view ---------------------------------------------------------------------------


class RequestView:
    """What a key function may read of a request, whatever the framework: the peer address
    and the header fields. Internal; integrations build one per request (cheaply: it holds a
    reference, it copies nothing)."""

    __slots__ = ()

    def peer(self) -> str | None:
        """The direct peer's address as the server reports it, or None."""
        raise NotImplementedError

    def header(self, name: str) -> str | None:
        """Every field line of header ``name`` (lower case), joined with ``", "``; or None."""
        raise NotImplementedError


class ScopeView(RequestView):
    """A request view of an ASGI scope (``http`` or ``websocket``)."""

    __slots__ = ("scope",)

    def __init__(self, scope: MutableMapping[str, Any]) -> None:
        self.scope = scope

    def peer(self) -> str | None:
        client = self.scope.get("client")
        return client[0] if client else None

    def header(self, name: str) -> str | None:
        wanted = name.encode("latin-1")
        values = [v.decode("latin-1") for k, v in self.scope.get("headers", ()) if k == wanted]
        if not values:
            return None
        return values[0] if len(values) == 1 else ", ".join(values)


class EnvironView(RequestView):
    """A request view of a WSGI environ."""

    __slots__ = ("environ",)

    def __init__(self, environ: dict[str, Any]) -> None:
        self.environ = environ

    def peer(self) -> str | None:
        peer = self.environ.get("REMOTE_ADDR")
        return peer if isinstance(peer, str) and peer else None

    def header(self, name: str) -> str | None:
        value = self.environ.get("HTTP_" + name.upper().replace("-", "_"))
        return value if isinstance(value, str) else None


def request_view(request: object) -> RequestView:
    """The request view of ``request``: an ASGI scope, a WSGI environ, or an object with a
    ``scope`` (Starlette's ``Request``/``WebSocket``) or an ``environ`` (Flask/Werkzeug).

    Raises TypeError for anything else."""
    if isinstance(request, RequestView):
        return request
    if isinstance(request, dict):
        if request.get("type") in ("http", "websocket"):
            return ScopeView(request)
        if "REQUEST_METHOD" in request or "wsgi.version" in request:
            return EnvironView(request)
    scope = getattr(request, "scope", None)
    if isinstance(scope, dict):
        return ScopeView(scope)
    environ = getattr(request, "environ", None)
    if isinstance(environ, dict):
        return EnvironView(environ)
    meta = getattr(request, "META", None)  # any Django HttpRequest: META is environ-shaped
    if isinstance(meta, dict):
        return EnvironView(meta)
    raise TypeError(
        f"cannot read a request from {request!r}: pass an ASGI scope, a WSGI environ, or a "
        "Starlette, FastAPI, Flask or Werkzeug request"
    )


# --- built-in key functions ---------------------------------------------------------------------


class KeyFunc:
    """Base of the built-in key functions: callable with any framework's request.

    Integrations call :meth:`from_view` with a view they already hold, so a built-in key costs
    no request object."""

    __slots__ = ()

    def __call__(self, request: object) -> str:
        """The key of ``request``. Raises TypeError for an object that is not a request."""
        return self.from_view(request_view(request))

    def from_view(self, view: RequestView) -> str:
        raise NotImplementedError


def _token(text: str) -> str:
    """Untrusted text made safe to use in a key: printable ASCII, bounded length."""
    text = text.strip()[:_MAX_TOKEN]
    if text.isascii() and text.isprintable():
        return text
    return "".join(c if c.isascii() and c.isprintable() else "?" for c in text)


def _node(text: str) -> str:
    """The address part of one proxy-chain entry: strips brackets, ports and quotes.

    ``"[2001:db8::1]:4711"`` -> ``2001:db8::1``; ``192.0.2.1:8080`` -> ``192.0.2.1``."""
    text = text.strip().strip('"').strip()
    if text.startswith("["):
        end = text.find("]")
        return text[1:end] if end > 0 else text
    if text.count(":") == 1:  # IPv4 with a port; IPv6 has at least two colons
        return text.partition(":")[0]
    return text


@lru_cache(maxsize=4096)
def _parse_ip(text: str) -> IPAddress | None:
    """``text`` as an IP address (IPv4-mapped IPv6 collapsed to IPv4), or None."""
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return addr.ipv4_mapped
        if addr.scope_id:  # a zone (fe80::1%eth0) names an interface, not another client
            return ipaddress.IPv6Address(text.partition("%")[0])
    return addr


def _split_forwarded(value: str) -> list[str | None]:
    """The ``for=`` node of each element of an RFC 7239 ``Forwarded`` value, in order.

    Quoted strings (which may hold commas and semicolons) are respected. An element without
    ``for=`` gives None (that hop's client is unknown)."""
    nodes: list[str | None] = []
    node: str | None = None
    name: list[str] = []
    text: list[str] = []
    in_value = in_quotes = escaped = False

    def end_pair() -> None:
        nonlocal node
        if name and "".join(name).strip().lower() == "for":
            node = "".join(text).strip()
        name.clear()
        text.clear()

    for c in value:
        if in_quotes:
            if escaped:
                text.append(c)
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_quotes = False
            else:
                text.append(c)
        elif c == '"' and in_value:
            in_quotes = True
        elif c == "=" and not in_value:
            in_value = True
        elif c == ";":
            end_pair()
            in_value = False
        elif c == ",":
            end_pair()
            in_value = False
            nodes.append(node)
            node = None
        elif in_value:
            text.append(c)
        else:
            name.append(c)
    end_pair()
    nodes.append(node)
    return nodes


class ClientIP(KeyFunc):
    """The client's IP address; see :func:`client_ip`."""

    __slots__ = ("_forwarded", "_header", "_ipv6_prefix", "_key_of", "_networks", "_trust_unix")

    def __init__(
        self,
        trusted_proxies: Iterable[str] = (),
        ipv6_prefix: int = 64,
        header: str = "X-Forwarded-For",
    ) -> None:
        if isinstance(trusted_proxies, str):
            trusted_proxies = [trusted_proxies]
        networks: list[Network] = []
        trust_unix = False
        for item in trusted_proxies:
            if item == "unix":
                trust_unix = True
                continue
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except (TypeError, ValueError):
                raise ConfigurationError(
                    f"trusted proxy {item!r} is not an IP address or CIDR network "
                    "(such as '10.0.0.0/8'), nor 'unix'"
                ) from None
        if isinstance(ipv6_prefix, bool) or not isinstance(ipv6_prefix, int):
            raise ConfigurationError(f"ipv6_prefix must be an int, got {ipv6_prefix!r}")
        if not 1 <= ipv6_prefix <= 128:
            raise ConfigurationError(f"ipv6_prefix must be from 1 to 128, got {ipv6_prefix!r}")
        lowered = header.lower() if isinstance(header, str) else ""
        if lowered not in ("x-forwarded-for", "forwarded", "x-real-ip"):
            raise ConfigurationError(
                f"header must be 'X-Forwarded-For', 'Forwarded' or 'X-Real-IP', got {header!r}"
            )
        self._networks: tuple[Network, ...] = tuple(networks)
        self._trust_unix = trust_unix
        self._ipv6_prefix = ipv6_prefix
        self._header = lowered
        self._forwarded = lowered == "forwarded"
        self._key_of = lru_cache(maxsize=4096)(self._key_of_text)

    def __repr__(self) -> str:
        trusted = [str(n) for n in self._networks] + (["unix"] if self._trust_unix else [])
        return (
            f"client_ip(trusted_proxies={trusted!r}, ipv6_prefix={self._ipv6_prefix}, "
            f"header={self._header!r})"
        )

    def _trusted(self, addr: IPAddress) -> bool:
        return any(addr in net for net in self._networks)

    def _key(self, addr: IPAddress) -> str:
        if addr.version == 4 or self._ipv6_prefix == 128:
            return f"ip:{addr}"
        network = ipaddress.IPv6Network((int(addr), self._ipv6_prefix), strict=False)
        return f"ip:{network}"

    def _key_of_text(self, text: str) -> tuple[str, bool]:
        """(key, trusted proxy?) of a peer address or a forwarded node; cached."""
        addr = _parse_ip(_node(text))
        if addr is None:
            token = _token(_node(text))
            if not token or token.lower() == "unknown":
                return NO_PEER, False
            return f"peer:{token}", False
        return self._key(addr), bool(self._networks) and self._trusted(addr)

    def from_view(self, view: RequestView) -> str:
        peer = view.peer()
        if peer:
            key, trusted = self._key_of(peer)
            if not trusted:
                return key
        elif self._trust_unix:
            key = NO_PEER
        else:
            return NO_PEER
        # The peer is a trusted proxy: walk its header from the right, skipping trusted proxies.
        value = view.header(self._header)
        if not value:
            return key
        nodes: list[str | None] = (
            _split_forwarded(value) if self._forwarded else list(value.split(","))
        )
        for node in reversed(nodes):
            if node is None:
                return NO_PEER
            if not node.strip():
                continue
            key, trusted = self._key_of(node)
            if not trusted:
                return key
        return key  # every hop is a trusted proxy: the leftmost one is the client


def client_ip(
    trusted_proxies: Iterable[str] = (),
    ipv6_prefix: int = 64,
    header: str = "X-Forwarded-For",
) -> ClientIP:
    """A key function: the client's IP address, safe from spoofing.

    By default the key is the direct peer (the address the TCP connection came from): a
    client cannot change it by sending headers. Behind a reverse proxy or load balancer, name
    its addresses in ``trusted_proxies`` (IP addresses or CIDR networks, such as
    ``["10.0.0.0/8", "2001:db8::/32"]``; ``"unix"`` trusts a peer-less Unix-socket connection).
    Only when the peer is one of them is ``header`` read (``"X-Forwarded-For"``, the default;
    ``"Forwarded"`` for RFC 7239; ``"X-Real-IP"``), from the right: the client is the rightmost
    address that is not a trusted proxy, so addresses a client wrote into the header itself
    are never reached. Name the header your proxy writes: a header it only passes along is
    under the client's control.

    IPv6 clients are grouped by their ``ipv6_prefix`` (default /64; 128 keeps single
    addresses). IPv4-mapped IPv6 addresses count as IPv4. The keys returned are documented
    at the top of :mod:`ratelimit.keys`; a request with no peer gets ``"peer:unknown"``.

    Raises ConfigurationError for a bad network, prefix or header name. The key function
    itself never raises for odd input: what is not an address becomes a ``peer:`` key.
    """
    return ClientIP(trusted_proxies, ipv6_prefix, header)


class Header(KeyFunc):
    """The value of a request header; see :func:`header`."""

    __slots__ = ("_fallback", "_missing", "_name", "_prefix")

    def __init__(self, name: str, fallback: KeyFunc | None = None) -> None:
        if not isinstance(name, str) or not name.strip() or not name.isascii():
            raise ConfigurationError(f"header name must be non-empty ASCII text, got {name!r}")
        if fallback is not None and not isinstance(fallback, KeyFunc):
            raise ConfigurationError(
                f"fallback must be a built-in key function such as keys.client_ip(), got "
                f"{fallback!r}"
            )
        self._name = name.strip().lower()
        self._prefix = f"hdr:{self._name}:"
        self._missing = f"hdr:{self._name}"
        self._fallback = fallback

    def __repr__(self) -> str:
        return f"header({self._name!r}, fallback={self._fallback!r})"

    def from_view(self, view: RequestView) -> str:
        value = view.header(self._name)
        if value is not None:
            value = value.strip()
            if value:
                return self._prefix + value
        if self._fallback is not None:
            return self._fallback.from_view(view)
        return self._missing


def header(name: str, fallback: KeyFunc | None = None) -> Header:
    """A key function: the value of request header ``name`` (such as ``"X-API-Key"``).

    The key is ``"hdr:<lower-case name>:<value>"``. A request without the header (or with an
    empty one) gets ``fallback``'s key when one is given (for example ``keys.client_ip()``),
    else the one shared key ``"hdr:<name>"``: leaving the header out never escapes the limit.
    Several field lines are joined with ``", "``. The value is used as sent; the limiter
    hashes values that are long or hold braces or control characters.

    Raises ConfigurationError for an empty name or a fallback that is not a built-in key.
    """
    return Header(name, fallback)
