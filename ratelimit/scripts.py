"""Loads the Lua, package data of ``ratelimit`` read with :mod:`importlib.resources` from
``ratelimit/lua``: in a wheel the files themselves (hatchling's ``force-include`` of ``lua/``),
in a source checkout a link to the one copy in ``lua/``. The text is read and its SHA1
computed once, on first use, never at import.

The files are joined into one chunk (:data:`LUA_FILES`, in order) that ends by naming its
entry points (``local entries = {check = check, ...}`` in ``limiter.lua``). From that chunk
come two forms of the same code:

- a Redis function library (``FUNCTION LOAD``; each entry is the function
  ``<library>_<entry>``, called with ``FCALL``), named after the SHA1 of the chunk so that two
  versions of this package on one server never call each other's code;
- one script per entry (``EVALSHA``), for servers and clients without functions; and, for a
  limiter whose policies use only some algorithms, the same script with only their files
  (:meth:`Library.script_for`): an ``EVALSHA`` rebuilds every function of its script on each
  call, so a script without the algorithms it never runs costs the server less.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from importlib.abc import Traversable  # importlib.resources.abc from Python 3.11

__all__ = ["LUA_FILES", "Library", "Script", "library", "limiter_script", "lua_dir"]

#: The files joined, in this order, into the library and the scripts every store runs.
LUA_FILES = ("common.lua", "fixed_window.lua", "sliding_window.lua", "token_bucket.lua",
             "concurrency.lua", "settle.lua", "limiter.lua")  # fmt: skip

_ENTRIES = re.compile(r"^local entries = \{(?P<names>[^}]*)\}\s*$", re.MULTILINE)
# how an algorithm file names itself: algorithms['f'] = fixed_window
_ALGORITHM = re.compile(r"^algorithms\['(?P<code>\w+)'\] = ", re.MULTILINE)


def _lua() -> Traversable:
    """The package's ``lua`` folder. Raises RuntimeError when it lacks the files."""
    from importlib.resources import files  # on first use: import ratelimit stays light

    folder = files("ratelimit").joinpath("lua")
    if not folder.joinpath("limiter.lua").is_file():
        raise RuntimeError(
            f"the Lua scripts are missing from {folder}: in a source checkout, ratelimit/lua "
            "must be the link to ../lua (git clone with symlinks on)"
        )
    return folder


def lua_dir() -> str:
    """The folder holding the Lua files, as text. Raises RuntimeError when it lacks them."""
    return str(_lua())


def _sha1(text: str) -> str:
    import hashlib

    return hashlib.sha1(text.encode("utf-8")).hexdigest()


class Script:
    """A Lua script's text and its SHA1, as ``EVALSHA`` names it."""

    __slots__ = ("sha", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.sha = _sha1(text)

    def __repr__(self) -> str:
        return f"Script(sha={self.sha!r})"


class Library:
    """The Lua chunk in both forms: ``text`` for ``FUNCTION LOAD``, with ``functions[entry]``
    the name to ``FCALL``; ``scripts[entry]`` the script to ``EVALSHA``."""

    __slots__ = ("_parts", "_subsets", "functions", "name", "scripts", "text")

    def __init__(self, body: str, parts: list[str] | None = None) -> None:
        #: the files' texts, in order (``body`` joined); algorithm files name their code
        self._parts = parts if parts is not None else [body]
        self._subsets: dict[tuple[str, str], Script] = {}
        match = _ENTRIES.search(body)
        if match is None:
            raise RuntimeError("limiter.lua must end by listing its entry points in `entries`")
        entries = [part.split("=")[0].strip() for part in match["names"].split(",")]
        self.name = "ratelimit_" + _sha1(body)[:12]
        self.functions = {entry: f"{self.name}_{entry}" for entry in entries}
        register = "".join(
            f"\nredis.register_function('{self.functions[e]}', entries.{e})" for e in entries
        )
        self.text = f"#!lua name={self.name}\n{body}{register}\n"
        self.scripts = {e: Script(f"{body}\nreturn entries.{e}(KEYS, ARGV)\n") for e in entries}

    def script_for(self, entry: str, codes: str) -> Script:
        """The script of ``entry`` with only the algorithm files whose codes are in ``codes``
        (``"f"``, ``"fs"``...); the whole script when a code is unknown."""
        key = (entry, codes)
        script = self._subsets.get(key)
        if script is None:
            kept = []
            found: set[str] = set()
            for part in self._parts:
                named = _ALGORITHM.search(part)
                if named is None or named["code"] in codes:
                    kept.append(part)
                    if named is not None:
                        found.add(named["code"])
            if found != set(codes):
                script = self.scripts[entry]
            else:
                script = Script(f"{chr(10).join(kept)}\nreturn entries.{entry}(KEYS, ARGV)\n")
            self._subsets[key] = script
        return script

    def __repr__(self) -> str:
        return f"Library(name={self.name!r}, entries={sorted(self.functions)!r})"


_library: Library | None = None


def library() -> Library:
    """The limiter's Lua (common helpers, the algorithms and the driver), loaded once."""
    global _library
    if _library is None:
        folder = _lua()
        parts = [folder.joinpath(name).read_text(encoding="utf-8") for name in LUA_FILES]
        _library = Library("\n".join(parts), parts)
    return _library


def limiter_script() -> Script:
    """The script of the ``check`` entry point (see ``lua/limiter.lua``)."""
    return library().scripts["check"]
