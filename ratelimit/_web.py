"""What every HTTP integration shares, with no I/O: rules and path patterns, option checks,
and the choice of the limit that applies to a request.

The ASGI middleware, the WSGI middleware, the FastAPI dependency and the Flask extension
differ only in how they read a request, call the limiter (awaiting or not) and write a
response; everything else lives here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable
from typing import TYPE_CHECKING, Any, Final, Generic, TypeAlias, TypeVar

from ratelimit.errors import ConfigurationError
from ratelimit.keys import KeyFunc, KeyFunction

if TYPE_CHECKING:
    from ratelimit.limiter import AsyncLimiter, Limiter

__all__ = ["Cost", "Exempt", "Rule", "Selector", "Target", "template_name"]

#: ``cost=``: units per request, or a callable of the request returning them.
Cost: TypeAlias = "int | Callable[[Any], Any]"
#: ``exempt=``: path patterns, or a callable of the request returning True for exempt ones.
Exempt: TypeAlias = "str | Iterable[str] | Callable[[Any], Any]"
AnyLimiter: TypeAlias = "AsyncLimiter | Limiter | str"

H = TypeVar("H")

# A Starlette path parameter: {name} or {name:converter}.
_BRACES: Final = re.compile(r"{([a-zA-Z_][a-zA-Z0-9_]*)(?::([a-zA-Z_][a-zA-Z0-9_]*))?}")
# A path parameter of Starlette ({name:converter}) or Flask (<converter:name>).
_PARAM: Final = re.compile(_BRACES.pattern + r"|<(?:[^:<>]+:)?([a-zA-Z_][a-zA-Z0-9_]*)>")
_CONVERTERS: Final = {
    "str": "[^/]+",
    "path": ".*",
    "int": "[0-9]+",
    "float": r"[0-9]+(?:\.[0-9]+)?",
    "uuid": "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
}


def check_key_function(key: object) -> None:
    """Raises ConfigurationError unless ``key`` is callable."""
    if not callable(key):
        raise ConfigurationError(f"key must be a callable of the request, got {key!r}")


def check_key(result: object, key: object) -> str:
    """A custom key function's result, checked. Raises TypeError for anything but a str."""
    if isinstance(result, str):
        return result
    raise TypeError(f"key function {key!r} returned {result!r}; it must return a str")


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


def matcher(pattern: str) -> Callable[[str], bool]:
    """A path pattern as a predicate: ``*`` (every path), ``/static/*`` (the prefix, and
    ``/static`` itself), a route template (``/items/{item_id}``, with converters ``str``,
    ``int``, ``float``, ``uuid``, ``path``), or an exact path.

    Raises ConfigurationError for anything else."""
    if not isinstance(pattern, str) or not (pattern == "*" or pattern.startswith("/")):
        raise ConfigurationError(f"a path pattern must start with '/' or be '*', got {pattern!r}")
    if pattern == "*":
        return lambda path: True
    if pattern.endswith("*"):
        prefix = pattern[:-1]
        bare = prefix.rstrip("/")
        return lambda path: path.startswith(prefix) or path == bare
    if "{" not in pattern and "}" not in pattern:
        return pattern.__eq__
    regex, at = "", 0
    for m in _BRACES.finditer(pattern):
        converter = m.group(2) or "str"
        if converter not in _CONVERTERS:
            raise ConfigurationError(f"unknown converter {converter!r} in path {pattern!r}")
        literal = pattern[at : m.start()]
        if "{" in literal or "}" in literal:
            raise ConfigurationError(f"cannot read path template {pattern!r}")
        regex += re.escape(literal) + _CONVERTERS[converter]
        at = m.end()
    if "{" in pattern[at:] or "}" in pattern[at:]:
        raise ConfigurationError(f"cannot read path template {pattern!r}")
    compiled = re.compile(regex + re.escape(pattern[at:]))
    return lambda path: compiled.fullmatch(path) is not None


class Rule:
    """One limit for the requests it matches (used by both middlewares).

    ``path``: ``"*"``, a prefix ``"/static/*"``, a route template ``"/items/{item_id}"`` or an
    exact path; matched against the path the app's routes see. ``limiter``: a limiter, or
    text such as ``"5/minute"`` (the middleware builds a limiter on a MemoryStore: an
    :class:`AsyncLimiter` under ASGI, a :class:`Limiter` under WSGI). ``methods``: the HTTP
    methods it applies to (None: all; a WebSocket handshake counts as ``GET``). ``key`` and
    ``cost``, when given, override the middleware's. ``name`` is the text the limit is
    counted under (default: the template, with its methods), so two rules sharing a limiter
    count separately unless given the same name.

    Raises ConfigurationError for a bad pattern, key, method or cost.
    """

    __slots__ = ("cost", "key", "limiter", "match", "methods", "name", "path")

    def __init__(
        self,
        path: str,
        limiter: AnyLimiter,
        *,
        methods: Collection[str] | None = None,
        key: KeyFunction | None = None,
        cost: Cost | None = None,
        name: str | None = None,
    ) -> None:
        self.path = path
        self.match = matcher(path)
        self.limiter = limiter
        if isinstance(methods, str):
            methods = [methods]
        self.methods = None if methods is None else frozenset(m.upper() for m in methods)
        if key is not None:
            check_key_function(key)
        self.key = key
        if cost is not None:
            check_cost(cost)
        self.cost = cost
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
    prefix of its identifiers. ``builtin`` is the key when it is a built-in key function."""

    __slots__ = ("builtin", "cost", "hit", "key", "limiter", "match", "methods", "prefix")

    def __init__(
        self, rule: Rule | None, limiter: Any, hit: H, key: KeyFunction, cost: Cost
    ) -> None:
        self.match = rule.match if rule else None
        self.methods = rule.methods if rule else None
        self.limiter = limiter
        self.hit = hit
        self.key = key
        self.builtin: KeyFunc | None = key if isinstance(key, KeyFunc) else None
        self.cost = cost
        self.prefix = rule.name + "|" if rule else ""


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
