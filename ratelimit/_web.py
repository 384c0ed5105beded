"""What every HTTP integration shares, with no I/O: rules and path patterns, option checks,
the choice of the limit that applies to a request, and the merge of header fields.

The ASGI middleware, the WSGI middleware, the FastAPI dependency and the Flask extension
differ only in how they read a request, call the limiter (awaiting or not) and write a
response; everything else lives here. Entry points for an integration (Django's included):

- :class:`Selector` (built once from ``limiter``, ``key``, ``rules``, ``exempt``, ``cost``):
  ``select(path, method)`` gives the :class:`Target` of a request, or None when nothing
  limits it. Pass the path and method *as the framework routes them*: for WSGI,
  :func:`wsgi_path` and :func:`wsgi_method` of the environ.
- :func:`key_and_cost` (sync) or :func:`akey_and_cost` (awaits async callables): a request's
  key and cost, given the key function and cost (a Target's, a view limit's), a
  :class:`ratelimit.keys.RequestView` of the request (built-in keys read it, building no
  request object) and a callable returning the framework's request (for custom key and cost
  callables, built only when one needs it). The identifier to hit is ``target.prefix + key``.
- :func:`merge_fields`: header fields to add to a response that may already carry some of
  its own (a route's limit under an app-wide one): one value per single-valued field, the
  response's own (the limit closest to the view) winning; list-valued ``RateLimit`` and
  ``RateLimit-Policy`` keep every item.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Collection, Iterable, MutableMapping
from typing import TYPE_CHECKING, Any, AnyStr, Final, Generic, TypeAlias, TypeVar

from ratelimit.errors import ConfigurationError
from ratelimit.keys import KeyFunc, KeyFunction, RequestView
from ratelimit.lease import Lease
from ratelimit.limiter import AsyncLimiter, Limiter
from ratelimit.stores.memory import MemoryStore

if TYPE_CHECKING:
    from ratelimit.decision import Decision
    from ratelimit.lease import AsyncLease

__all__ = [
    "HEADERS_SCOPE_KEY",
    "SINGLE_VALUED",
    "Cost",
    "Exempt",
    "Rule",
    "Selector",
    "Target",
    "akey_and_cost",
    "async_hit",
    "call",
    "key_and_cost",
    "merge_fields",
    "route_path",
    "template_name",
    "wsgi_method",
    "wsgi_path",
]

#: ``count=``: a callable of the response status; a false result gives the request's cost
#: back (``settle(0)``), so ``count=lambda status: status >= 400`` counts failures only.
Count: TypeAlias = "Callable[[int], object]"
#: ``cost=``: units per request, or a callable of the request returning them.
Cost: TypeAlias = "int | Callable[[Any], Any]"
#: ``exempt=``: path patterns, or a callable of the request returning True for exempt ones.
Exempt: TypeAlias = "str | Iterable[str] | Callable[[Any], Any]"
AnyLimiter: TypeAlias = "AsyncLimiter | Limiter | str"

H = TypeVar("H")

# A Starlette path parameter: {name} or {name:converter}.
_BRACES: Final = re.compile(r"{([a-zA-Z_][a-zA-Z0-9_]*)(?::([a-zA-Z_][a-zA-Z0-9_]*))?}")
# A Flask/Werkzeug path parameter: <name> or <converter:name>.
_ANGLES: Final = re.compile(r"<(?:([^:<>]+):)?([a-zA-Z_][a-zA-Z0-9_]*)>")
# A path parameter of Starlette ({name:converter}) or Flask (<converter:name>).
_PARAM: Final = re.compile(_BRACES.pattern + r"|<(?:[^:<>]+:)?([a-zA-Z_][a-zA-Z0-9_]*)>")
_TEMPLATE: Final = re.compile(_BRACES.pattern + "|" + _ANGLES.pattern)
# Each converter's regex as the framework that spells it that way defines it.
_STARLETTE: Final = {
    "str": "[^/]+",
    "path": ".*",
    "int": "[0-9]+",
    "float": r"[0-9]+(?:\.[0-9]+)?",
    "uuid": "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
}
_WERKZEUG: Final = {
    "default": "[^/]+",
    "string": "[^/]+",
    "path": "[^/].*",
    "int": "[0-9]+",
    "float": r"[0-9]+\.[0-9]+",
    "uuid": _STARLETTE["uuid"],
}
#: Header fields that hold one value: a response carries each at most once.
SINGLE_VALUED: Final = frozenset(
    ("ratelimit-limit", "ratelimit-remaining", "ratelimit-reset", "x-ratelimit-limit",
     "x-ratelimit-remaining", "x-ratelimit-reset", "retry-after")
)  # fmt: skip
_SINGLE_ANY: Final[frozenset[str | bytes]] = SINGLE_VALUED | {
    n.encode("latin-1") for n in SINGLE_VALUED
}
_SLASHES: Final = re.compile("/{2,}")


def check_key_function(key: object) -> None:
    """Raises ConfigurationError unless ``key`` is callable."""
    if not callable(key):
        raise ConfigurationError(f"key must be a callable of the request, got {key!r}")


def check_key(result: object, key: object) -> str:
    """A custom key function's result, checked. Raises ConfigurationError (as the decorator
    does) for anything but a str."""
    if isinstance(result, str):
        return result
    raise ConfigurationError(f"key function {key!r} returned {result!r}; it must return a str")


async def call(function: Callable[..., Any], *arguments: Any) -> Any:
    """``function(*arguments)``, awaited when it returns an awaitable (sync or async)."""
    result = function(*arguments)
    if inspect.isawaitable(result):
        result = await result
    return result


def key_and_cost(
    key: KeyFunction, cost: Cost, view: RequestView, request: Callable[[], Any]
) -> tuple[str, int]:
    """The key and cost of a request, in sync code: a built-in key reads ``view``; a custom
    key or cost callable gets ``request()``. Raises ConfigurationError when a key returns no
    str, and whatever a custom callable raises."""
    identifier = key.from_view(view) if isinstance(key, KeyFunc) else check_key(key(request()), key)
    if not isinstance(cost, int):
        cost = cost(request())
    return identifier, cost  # type: ignore[return-value]


async def akey_and_cost(
    key: KeyFunction, cost: Cost, view: RequestView, request: Callable[[], Any]
) -> tuple[str, int]:
    """As :func:`key_and_cost`, awaiting key and cost callables that return awaitables."""
    if isinstance(key, KeyFunc):
        identifier = key.from_view(view)
    else:
        identifier = check_key(await call(key, request()), key)
    if not isinstance(cost, int):
        cost = await call(cost, request())
    return identifier, cost  # type: ignore[return-value]


def check_count(count: object) -> None:
    """Raises ConfigurationError unless ``count`` is None or a callable of the status."""
    if count is not None and not callable(count):
        raise ConfigurationError(
            f"count must be a callable of the response status (or None), got {count!r}"
        )


def uses_lease(limiter: object, count: object) -> bool:
    """Whether a request on ``limiter`` takes a lease (``acquire``, then release after the
    response) rather than a hit: the limiter has a Concurrency policy, or ``count`` may give
    the request's cost back."""
    return count is not None or bool(getattr(limiter, "needs_acquire", False))


def _counted(count: Count | None, status: int | None) -> bool:
    return count is None or status is None or bool(count(status))


def finish(lease: Lease, count: Count | None, status: int | None) -> None:
    """After a response of ``status`` (None when unknown: a client gone before it), give
    the cost back when ``count`` says it does not count, then release the lease, always.
    Raises what ``count`` raises (the lease is released all the same)."""
    try:
        if not _counted(count, status):
            lease.settle(0)
    finally:
        lease.release()


async def afinish(lease: Lease | AsyncLease, count: Count | None, status: int | None) -> None:
    """As :func:`finish`, awaiting an :class:`AsyncLease`."""
    if isinstance(lease, Lease):
        finish(lease, count, status)
        return
    try:
        if not _counted(count, status):
            await lease.settle(0)
    finally:
        await lease.release()


async def aacquire(limiter: AsyncLimiter | Limiter, key: str, cost: int) -> Lease | AsyncLease:
    """``limiter.acquire(key, cost)``, awaited for an :class:`AsyncLimiter` (a sync
    :class:`Limiter` here is on a MemoryStore: no I/O)."""
    if isinstance(limiter, AsyncLimiter):
        return await limiter.acquire(key, cost)
    return limiter.acquire(key, cost)


def check_cost(cost: object) -> None:
    """Raises ConfigurationError unless ``cost`` is a non-negative int or a callable."""
    if callable(cost):
        return
    if isinstance(cost, bool) or not isinstance(cost, int) or cost < 0:
        raise ConfigurationError(
            f"cost must be a non-negative int or a callable of the request, got {cost!r}"
        )


def template_name(template: str) -> str:
    """A route template as it appears in rate-limit keys: ``/items/{id:int}`` and Flask's
    ``/items/<int:id>`` become ``/items/:id`` (braces would make the limiter hash the key)."""
    return _PARAM.sub(lambda m: ":" + (m.group(1) or m.group(3)), template)


def _template_regex(template: str) -> str | None:
    """The regex of a route template (Starlette's ``{id:int}`` or Flask's ``<int:id>``), or
    None when it holds no parameter. Raises ConfigurationError for an unknown converter or
    a brace or angle bracket that is not part of a parameter."""
    if any(c in _TEMPLATE.sub("", template) for c in "{}<>"):
        raise ConfigurationError(f"cannot read path template {template!r}")
    regex, at = "", 0
    for m in _TEMPLATE.finditer(template):
        if m.group(1) is not None:
            table, converter = _STARLETTE, m.group(2) or "str"
        else:
            table, converter = _WERKZEUG, m.group(3) or "default"
        if converter not in table:
            raise ConfigurationError(f"unknown converter {converter!r} in path {template!r}")
        regex += re.escape(template[at : m.start()]) + table[converter]
        at = m.end()
    return regex + re.escape(template[at:]) if at else None


def matcher(pattern: str) -> Callable[[str], bool]:
    """A path pattern as a predicate: ``*`` (every path), ``/static/*`` (the prefix, and
    ``/static`` itself), a route template (Starlette's ``/items/{item_id}`` with converters
    ``str``, ``int``, ``float``, ``uuid``, ``path``, or Flask's ``/items/<int:item_id>`` with
    ``string``, ``int``, ``float``, ``uuid``, ``path``), a template before a trailing ``*``
    (``/items/{item_id}/*``), or an exact path.

    Raises ConfigurationError for anything else (a ``*`` before the end, an unknown
    converter, a stray brace), so a pattern never silently matches nothing."""
    if not isinstance(pattern, str) or not (pattern == "*" or pattern.startswith("/")):
        raise ConfigurationError(f"a path pattern must start with '/' or be '*', got {pattern!r}")
    if pattern == "*":
        return lambda path: True
    prefixed = pattern.endswith("*")
    body = pattern[:-1] if prefixed else pattern
    if "*" in body:
        raise ConfigurationError(
            f"'*' may only end a path pattern (such as '/static/*'), got {pattern!r}"
        )
    regex = _template_regex(body)
    if regex is None:
        if not prefixed:
            return pattern.__eq__
        bare = body.rstrip("/")
        return lambda path: path.startswith(body) or path == bare
    if prefixed:
        if body.endswith("/"):  # "/items/{id}/*": the item itself and everything under it
            regex = regex[: -len(re.escape("/"))] + "(?:/.*)?"
        else:
            regex += ".*"
    compiled = re.compile(regex)
    return lambda path: compiled.fullmatch(path) is not None


def merge_fields(
    present: Iterable[tuple[AnyStr, AnyStr]], added: Iterable[tuple[AnyStr, AnyStr]]
) -> list[tuple[AnyStr, AnyStr]]:
    """The fields of ``added`` that a response already carrying ``present`` may take: all
    but the single-valued ones (:data:`SINGLE_VALUED`, any case, text or bytes) it already
    has, so the response's own value wins and each such field appears once."""
    names = {name.lower() for name, _ in present}
    return [f for f in added if f[0].lower() not in names or f[0].lower() not in _SINGLE_ANY]


def wsgi_path(environ: dict[str, Any]) -> str:
    """The path a WSGI app's routes see, as Werkzeug (Flask) routes it: ``PATH_INFO``
    (``SCRIPT_NAME`` is the mount) decoded from PEP 3333's latin-1 back to UTF-8, with runs
    of slashes merged (``//login`` reaches ``/login``)."""
    path = environ.get("PATH_INFO") or "/"
    if not isinstance(path, str):
        return "/"
    if not path.isascii():
        path = path.encode("latin-1", "replace").decode("utf-8", "replace")
    if "//" in path:
        path = _SLASHES.sub("/", path)
    return path


def wsgi_method(environ: dict[str, Any]) -> str:
    """The request method a WSGI framework routes by: upper case, as Werkzeug and Django
    make it (a server may pass ``post`` through)."""
    method = environ.get("REQUEST_METHOD") or "GET"
    return method.upper() if isinstance(method, str) else "GET"


class Rule:
    """One limit for the requests it matches, in ``rules=`` of
    :class:`~ratelimit.asgi.RateLimitMiddleware` and
    :class:`~ratelimit.wsgi.WSGIRateLimitMiddleware`.

    :param path: ``"*"``, a prefix ``"/static/*"``, a route template ``"/items/{item_id}"``
        (converters ``str``, ``int``, ``float``, ``uuid``, ``path``; Flask's
        ``"/items/<int:item_id>"`` too), a template before a trailing ``*``, or an exact path;
        matched against the path the app's routes see.
    :param limiter: a limiter, or text such as ``"5/minute"``, for which the middleware builds
        a limiter on a MemoryStore (an :class:`~ratelimit.AsyncLimiter` under ASGI, a
        :class:`~ratelimit.Limiter` under WSGI).
    :param methods: the HTTP methods it applies to; None: all. A WebSocket handshake counts as
        ``GET``; ``GET`` also covers ``HEAD``, which Starlette and Werkzeug serve through
        ``GET`` routes.
    :param key: the key function for these requests, in place of the middleware's.
    :param cost: the cost of these requests, in place of the middleware's.
    :param name: the text the limit is counted under; default the template with its methods,
        so two rules sharing a limiter count separately unless given the same name.
    :param count: a callable of the response status; when it returns False the request's cost
        is given back (``settle(0)``): ``count=lambda status: status >= 400`` counts failed
        requests only.
    :raises ConfigurationError: for a bad pattern, method, key, cost or count.
    """

    __slots__ = ("cost", "count", "key", "limiter", "match", "matched_methods", "methods", "name",
                 "path")  # fmt: skip

    def __init__(
        self,
        path: str,
        limiter: AnyLimiter,
        *,
        methods: Collection[str] | None = None,
        key: KeyFunction | None = None,
        cost: Cost | None = None,
        name: str | None = None,
        count: Count | None = None,
    ) -> None:
        self.path = path
        self.match = matcher(path)
        self.limiter = limiter
        if isinstance(methods, str):
            methods = [methods]
        if methods is not None and not all(isinstance(m, str) and m for m in methods):
            raise ConfigurationError(f"methods must be HTTP method names, got {methods!r}")
        self.methods = None if methods is None else frozenset(m.upper() for m in methods)
        # What the rule matches: the frameworks serve HEAD through a GET route (the view runs)
        self.matched_methods = self.methods
        if self.methods is not None and "GET" in self.methods:
            self.matched_methods = self.methods | {"HEAD"}
        if key is not None:
            check_key_function(key)
        self.key = key
        if cost is not None:
            check_cost(cost)
        self.cost = cost
        check_count(count)
        self.count = count
        if name is None:
            name = template_name(path)
            if self.methods:
                name = ",".join(sorted(self.methods)) + " " + name
        self.name = name

    def __repr__(self) -> str:
        methods = "" if self.methods is None else f", methods={sorted(self.methods)!r}"
        return f"Rule({self.path!r}, {self.limiter!r}{methods})"


class Target(Generic[H]):
    """A limit resolved for one integration: its ``hit`` (sync or async), key, cost and the
    prefix of its identifiers. ``builtin`` is the key when it is a built-in key function.
    ``leased``: requests take a lease (:func:`uses_lease`), finished by ``count``."""

    __slots__ = ("builtin", "cost", "count", "hit", "key", "leased", "limiter", "match",
                 "methods", "prefix")  # fmt: skip

    def __init__(
        self, rule: Rule | None, limiter: Any, hit: H, key: KeyFunction, cost: Cost
    ) -> None:
        self.match = rule.match if rule else None
        self.methods = rule.matched_methods if rule else None
        self.limiter = limiter
        self.hit = hit
        self.key = key
        self.builtin: KeyFunc | None = key if isinstance(key, KeyFunc) else None
        self.cost = cost
        self.prefix = rule.name + "|" if rule else ""
        self.count = rule.count if rule else None
        self.leased = uses_lease(limiter, self.count)


class Selector(Generic[H]):
    """Picks the limit of a request from its path and method: exempt patterns first, then the
    first matching rule, then the default. ``resolve`` turns a limiter (or text) into
    ``(limiter, hit)`` for the integration. Raises ConfigurationError for bad options."""

    __slots__ = ("default", "exempt_call", "exempt_paths", "needs_path", "rules", "targets")

    def __init__(
        self,
        resolve: Callable[[AnyLimiter], tuple[Any, H]],
        limiter: AnyLimiter | None,
        key: KeyFunction | None,
        rules: Iterable[Rule],
        exempt: Exempt,
        cost: Cost,
        default_key: Callable[[], KeyFunction],
    ) -> None:
        if key is None:
            key = default_key()
        check_key_function(key)
        check_cost(cost)
        self.default: Target[H] | None = None
        if limiter is not None:
            resolved, hit = resolve(limiter)
            self.default = Target(None, resolved, hit, key, cost)
        self.rules = tuple(rules)
        targets: list[Target[H]] = []
        for rule in self.rules:
            if not isinstance(rule, Rule):
                raise ConfigurationError(f"rules must be Rule objects, got {rule!r}")
            resolved, hit = resolve(rule.limiter)
            rule_cost = cost if rule.cost is None else rule.cost
            targets.append(Target(rule, resolved, hit, rule.key or key, rule_cost))
        self.targets = tuple(targets)
        self.exempt_call: Callable[[Any], Any] | None = None
        self.exempt_paths: tuple[Callable[[str], bool], ...] = ()
        if callable(exempt):
            self.exempt_call = exempt
        elif isinstance(exempt, str):
            self.exempt_paths = (matcher(exempt),)
        else:
            self.exempt_paths = tuple(matcher(p) for p in exempt)
        self.needs_path = bool(self.exempt_paths or self.targets)

    @property
    def active(self) -> bool:
        """Whether any request can be limited at all."""
        return self.default is not None or bool(self.targets)

    def select(self, path: str, method: str) -> Target[H] | None:
        """The target limiting a request to ``path`` with ``method``, or None."""
        for matches in self.exempt_paths:
            if matches(path):
                return None
        for target in self.targets:
            if target.match(path) and (target.methods is None or method in target.methods):  # type: ignore[misc]
                return target
        return self.default


# --- ASGI: shared by the middleware and the FastAPI dependency ---------------------------------

Hit: TypeAlias = Callable[[str, int], Awaitable["Decision"]]

#: Where the middleware keeps the header fields that FastAPI ``RateLimit`` dependencies add
#: to this request's response: a list of ``(bytes, bytes)``.
HEADERS_SCOPE_KEY: Final = "ratelimit.headers"


def async_hit(limiter: AnyLimiter) -> tuple[AsyncLimiter | Limiter, Hit]:
    """The limiter ``limiter`` names and an awaitable ``hit`` for it.

    Text builds an :class:`AsyncLimiter` on a new :class:`MemoryStore`. A sync
    :class:`Limiter` is accepted only on a MemoryStore (its hit does no I/O, so it cannot block
    the event loop). Raises ConfigurationError otherwise."""
    if isinstance(limiter, str):
        limiter = AsyncLimiter(limiter)
    if isinstance(limiter, AsyncLimiter):
        return limiter, limiter.hit
    if isinstance(limiter, Limiter):
        if not isinstance(limiter.store, MemoryStore):
            raise ConfigurationError(
                f"{limiter!r} is a sync Limiter on {limiter.store!r}: it would block the event "
                "loop on every request; use AsyncLimiter with an async store"
            )
        sync_hit = limiter.hit

        async def hit(key: str, cost: int) -> Decision:
            return sync_hit(key, cost)

        return limiter, hit
    raise ConfigurationError(
        f"limiter must be an AsyncLimiter, a Limiter on a MemoryStore, or text such as "
        f"'10/minute', got {limiter!r}"
    )


def route_path(scope: MutableMapping[str, Any]) -> str:
    """The request path as the application's routes see it (``root_path`` removed)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        rest = path[len(root) :]
        if not rest:
            return "/"
        if rest[0] == "/":
            return rest
    return path
