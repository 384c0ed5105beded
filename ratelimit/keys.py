"""Key functions: *who* is asking, as the text a limiter counts under.

The built-in key functions :func:`client_ip` and :func:`header` take the framework's request
and return a str. They work in every integration (a Starlette/FastAPI ``Request`` or
``WebSocket``, a raw ASGI scope, a Flask or Werkzeug request, a raw WSGI environ, Django's
request) because they read it through one small request view (:func:`request_view`). A custom
key is any callable of the framework's request, sync or async, returning a str. See the Keys
and proxies page of the docs.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any, Final, TypeAlias

from ratelimit.cache import remember
from ratelimit.errors import ConfigurationError

__all__ = ["KeyFunction", "client_ip", "header"]

#: A key function: the framework's request in, the key (or an awaitable of it) out.
KeyFunction: TypeAlias = Callable[[Any], str | Awaitable[str]]

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
Network: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network

#: The key of a request that has no peer address.
NO_PEER: Final = "peer:unknown"
_MAX_TOKEN: Final = 100
# Addresses whose key a ClientIP remembers; only real addresses are kept (never text a
# client wrote), and the whole table is dropped when it is full.
_CACHE_SIZE: Final = 4096


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
        """Every field line of header ``name`` (lower case), joined with ``", "``; or None.
        What a list-valued header (``X-Forwarded-For``, ``Forwarded``) holds in all."""
        raise NotImplementedError

    def field(self, name: str) -> str | None:
        """Header ``name`` (lower case) as the framework's own ``request.headers[name]`` gives
        it to the application, or None: what a key naming the client by a header must read,
        so the limiter counts the value the application acts on."""
        return self.header(name)


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

    def field(self, name: str) -> str | None:
        # Starlette's Headers.__getitem__ (and so FastAPI's) returns the first field line.
        wanted = name.encode("latin-1")
        for k, v in self.scope.get("headers", ()):
            if k == wanted:
                return str(v.decode("latin-1"))
        return None


class EnvironView(RequestView):
    """A request view of a WSGI environ (or of Django's ``request.META``): the server has
    already joined repeated field lines into one value, which is what the application sees
    too."""

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
    """The request view a key function reads ``request`` through.

    :param request: an ASGI scope, a WSGI environ, or an object with a ``META`` (Django's
        request), a ``scope`` (Starlette's ``Request``/``WebSocket``) or an ``environ``
        (Flask/Werkzeug).
    :returns: the :class:`RequestView`.
    :raises TypeError: for anything else.
    """
    if isinstance(request, RequestView):
        return request
    meta = getattr(request, "META", None)
    if isinstance(meta, dict):  # Django, under WSGI or ASGI: META is what its views read
        return EnvironView(meta)
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
    raise TypeError(
        f"cannot read a request from {request!r}: pass an ASGI scope, a WSGI environ, or a "
        "Starlette, FastAPI, Flask, Werkzeug or Django request"
    )


# --- built-in key functions ---------------------------------------------------------------------


class KeyFunc:
    """Base of the built-in key functions: callable with any framework's request.

    Integrations call :meth:`from_view` with a view they already hold, so a built-in key costs
    no request object."""

    __slots__ = ()

    def __call__(self, request: object) -> str:
        """The key of ``request``.

        :param request: any request :func:`request_view` reads.
        :returns: the key text.
        :raises TypeError: for an object that is not a request.
        """
        return self.from_view(request_view(request))

    def from_view(self, view: RequestView) -> str:
        """The key of the request ``view`` shows; each key function defines it."""
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


# RFC 7239: forwarded-element = [ pair ] *( ";" [ pair ] ); pair = token "=" value;
# value = token / quoted-string. Optional whitespace around ";" is tolerated.
_TOKEN: Final = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_QUOTED: Final = r'"(?:[^"\\\x00-\x08\x0a-\x1f\x7f]|\\[\x09\x20-\x7e\x80-\xff])*"'
_PAIR: Final = re.compile(rf"[ \t]*({_TOKEN})=({_TOKEN}|{_QUOTED})[ \t]*")
_QUOTED_PAIR: Final = re.compile(r"\\(.)")
# A forwarded node: an IPv4 address, a bracketed IPv6 address, "unknown" or an obfuscated
# identifier, with an optional port (RFC 7239 section 6).
_OBFUSCATED: Final = re.compile(r"_[A-Za-z0-9._-]+")
_PORT: Final = re.compile(r"[0-9]{1,5}|_[A-Za-z0-9._-]+")
#: A forwarded element that cannot be read: malformed, never a key of its own.
MALFORMED: Final = object()


def _elements(value: str) -> list[str]:
    """The elements of a ``Forwarded`` value, split at the commas outside quoted strings,
    found from the *right*: each trusted proxy appends a well-formed element, so the ones a
    walk from the right reads are split correctly whatever a client wrote to their left (an
    unclosed quote can only spoil the client's own elements)."""
    elements: list[str] = []
    end = len(value)
    quoted = False
    at = end - 1
    while at >= 0:
        c = value[at]
        if c == '"':
            # a quote preceded by an odd number of backslashes is escaped (inside quotes)
            slashes = 0
            while at - 1 - slashes >= 0 and value[at - 1 - slashes] == "\\":
                slashes += 1
            if not (quoted and slashes % 2):
                quoted = not quoted
        elif c == "," and not quoted:
            elements.append(value[at + 1 : end])
            end = at
        at -= 1
    elements.append(value[:end])
    elements.reverse()
    return elements


def _forwarded_for(element: str) -> str | object | None:
    """The ``for=`` node of one ``Forwarded`` element (unquoted), None when it names none,
    or :data:`MALFORMED` when the element is not valid RFC 7239 (an unclosed quote, a pair
    without ``=``, text after a quoted string, a node that is no node, a repeated ``for``)."""
    node: str | None = None
    for pair in element.split(";") if '"' not in element else _pairs(element):
        if not pair.strip():
            continue
        m = _PAIR.fullmatch(pair)
        if m is None:
            return MALFORMED
        if m.group(1).lower() != "for":
            continue
        if node is not None:
            return MALFORMED
        text = m.group(2)
        if text.startswith('"'):
            text = _QUOTED_PAIR.sub(r"\1", text[1:-1])
        if not _valid_node(text):
            return MALFORMED
        node = text
    return node


def _pairs(element: str) -> list[str]:
    """The ``;``-separated pairs of an element whose values may be quoted strings."""
    pairs: list[str] = []
    start = 0
    quoted = escaped = False
    for at, c in enumerate(element):
        if escaped:
            escaped = False
        elif quoted and c == "\\":
            escaped = True
        elif c == '"':
            quoted = not quoted
        elif c == ";" and not quoted:
            pairs.append(element[start:at])
            start = at + 1
    pairs.append(element[start:])
    return pairs


def _valid_node(text: str) -> bool:
    """Whether ``text`` is an RFC 7239 node: ``unknown``, an obfuscated identifier, an IPv4
    address or a bracketed IPv6 address, each with an optional port. A bare IPv6 address is
    tolerated (some proxies write one)."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or ":" not in text[1:end] or _parse_ip(text[1:end]) is None:
            return False
        rest = text[end + 1 :]
        return not rest or (rest[0] == ":" and _PORT.fullmatch(rest[1:]) is not None)
    if text.count(":") > 1:
        return _parse_ip(text) is not None
    name, colon, port = text.partition(":")
    if colon and _PORT.fullmatch(port) is None:
        return False
    if name.lower() == "unknown" or _OBFUSCATED.fullmatch(name):
        return True
    return isinstance(_parse_ip(name), ipaddress.IPv4Address)


def _split_forwarded(value: str) -> list[str | object | None]:
    """The ``for=`` node of each element of an RFC 7239 ``Forwarded`` value, in order: the
    node's text, None for an element without ``for=`` (that hop's client is unknown), or
    :data:`MALFORMED`. Quoted strings (which may hold commas and semicolons) are respected;
    an empty element (``a,,b``) is skipped."""
    return [_forwarded_for(e) for e in _elements(value) if e.strip(" \t")]


def _mapped_networks(network: Network) -> tuple[Network, ...]:
    """``network`` and, for an IPv6 network that covers IPv4-mapped addresses
    (``::ffff:10.0.0.0/104``), the IPv4 network it covers: addresses are compared as IPv4
    once collapsed (see :func:`_parse_ip`), so the network must be too."""
    if not isinstance(network, ipaddress.IPv6Network):
        return (network,)
    mapped = ipaddress.IPv6Network("::ffff:0:0/96")
    if network.prefixlen >= 96 and network.subnet_of(mapped):
        ipv4 = ipaddress.IPv4Network(
            (int(network.network_address) & 0xFFFFFFFF, network.prefixlen - 96)
        )
        return (network, ipv4)
    if network.prefixlen < 96 and mapped.subnet_of(network):
        return (network, ipaddress.IPv4Network("0.0.0.0/0"))
    return (network,)


class ClientIP(KeyFunc):
    """The client's IP address; see :func:`client_ip`."""

    __slots__ = ("_cache", "_forwarded", "_header", "_ipv6_prefix", "_networks", "_trust_unix")

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
        self._networks: tuple[Network, ...] = tuple(
            n for net in networks for n in _mapped_networks(net)
        )
        self._trust_unix = trust_unix
        self._ipv6_prefix = ipv6_prefix
        self._header = lowered
        self._forwarded = lowered == "forwarded"
        self._cache: dict[str, tuple[str, bool]] = {}

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

    def _address(self, text: str) -> tuple[str, bool] | None:
        """(key, trusted proxy?) of text holding an IP address (brackets and a port allowed),
        or None when it holds none. Cached for addresses only."""
        cached = self._cache.get(text)
        if cached is not None:
            return cached
        addr = _parse_ip(_node(text))
        if addr is None:
            return None
        found = (self._key(addr), bool(self._networks) and self._trusted(addr))
        return remember(self._cache, text, found, _CACHE_SIZE)

    def _peer(self, text: str) -> tuple[str, bool]:
        """(key, trusted proxy?) of the direct peer as the server reports it: an address, or
        ``peer:<text>`` for a server that names peers otherwise (a test client)."""
        found = self._address(text)
        if found is not None:
            return found
        token = _token(_node(text))
        if not token or token.lower() == "unknown":
            return NO_PEER, False
        return f"peer:{token}", False

    def _hop(self, node: str | object | None) -> tuple[str, bool]:
        """(key, trusted proxy?) of one forwarded entry that a trusted proxy passed on: an
        address, an RFC 7239 obfuscated identifier, else ``peer:unknown`` (a hop that did not
        say, or text that is malformed: never a key of the client's choosing)."""
        if not isinstance(node, str):
            return NO_PEER, False
        found = self._address(node)
        if found is not None:
            return found
        if self._forwarded:
            name = node.strip().partition(":")[0]
            if _OBFUSCATED.fullmatch(name):
                return f"peer:{name[:_MAX_TOKEN]}", False
        return NO_PEER, False

    def from_view(self, view: RequestView) -> str:
        peer = view.peer()
        if peer:
            key, trusted = self._peer(peer)
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
        nodes: list[str | object | None]
        if self._forwarded:
            nodes = _split_forwarded(value)
        else:
            nodes = [n for n in value.split(",") if n.strip()]
        for node in reversed(nodes):
            key, trusted = self._hop(node)
            if not trusted:
                return key
        return key  # every hop is a trusted proxy: the leftmost one is the client


def client_ip(
    trusted_proxies: Iterable[str] = (),
    ipv6_prefix: int = 64,
    header: str = "X-Forwarded-For",
) -> ClientIP:
    """A key function: the client's IP address, safe from spoofing.

    By default the key is the direct peer (the address the TCP connection came from), which a
    client cannot change by sending headers. When the peer is a trusted proxy, ``header`` is
    read from the right: the client is the rightmost address that is not a trusted proxy, so
    addresses a client wrote into the header itself are never reached.

    The keys it returns (documented, stable): ``"ip:203.0.113.7"`` for an IPv4 client
    (IPv4-mapped IPv6 too); ``"ip:2001:db8:1:2::/64"`` for an IPv6 client, grouped by
    ``ipv6_prefix``; ``"peer:unknown"`` for no peer address (a Unix-socket server, a trusted
    proxy's ``for=unknown``) or a malformed forwarded entry, never ``127.0.0.1``;
    ``"peer:<text>"`` for a direct peer that is not an IP address (a test client's
    ``"testclient"``) or an RFC 7239 obfuscated node (``_hidden``) a trusted proxy wrote.

    :param trusted_proxies: the addresses of your reverse proxies or load balancers: IP
        addresses or CIDR networks (``["10.0.0.0/8", "2001:db8::/32"]``); ``"unix"`` trusts a
        peer-less Unix-socket connection.
    :param ipv6_prefix: the prefix length IPv6 clients are grouped by (one person usually
        holds a whole /64); 128 keeps single addresses.
    :param header: the header your proxy writes: ``"X-Forwarded-For"`` (the default),
        ``"Forwarded"`` (RFC 7239) or ``"X-Real-IP"``. A header the proxy only passes along
        is under the client's control.
    :returns: the key function, a callable of the request returning a str; it never raises
        for odd input (what is not an address becomes a ``peer:`` key).
    :raises ConfigurationError: for a bad network, prefix or header name.
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
        value = view.field(self._name)
        if value is not None:
            value = value.strip()
            if value:
                return self._prefix + value
        if self._fallback is not None:
            return self._fallback.from_view(view)
        return self._missing


def header(name: str, fallback: KeyFunc | None = None) -> Header:
    """A key function: the value of request header ``name``, as ``"hdr:<lower-case
    name>:<value>"``.

    With several field lines the key reads what the framework gives the application:
    Starlette and FastAPI (``request.headers[name]``) the first line; a WSGI server, and so
    Flask and Django, the lines joined into one value. The value is used as sent; the limiter
    hashes values that are long or hold braces or control characters.

    :param name: the header, such as ``"X-API-Key"``; non-empty ASCII.
    :param fallback: a built-in key function (such as ``keys.client_ip()``) whose key a
        request without the header, or with an empty one, gets; without it such requests share
        the one key ``"hdr:<name>"``, so leaving the header out never escapes the limit.
    :returns: the key function, a callable of the request returning a str.
    :raises ConfigurationError: for an empty or non-ASCII name, or a fallback that is not a
        built-in key function.
    """
    return Header(name, fallback)
