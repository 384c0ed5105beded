"""Loads the Lua from ``lua/``: in an installed wheel from ``ratelimit/lua``, in a source
checkout from the ``lua/`` folder beside the package. The text is read and its SHA1 computed
once, on first use, never at import."""

from __future__ import annotations

import os

__all__ = ["LUA_FILES", "Script", "limiter_script", "lua_dir"]

#: The files joined, in this order, into the one script every store runs.
LUA_FILES = ("common.lua", "fixed_window.lua", "sliding_window.lua", "token_bucket.lua",
             "limiter.lua")  # fmt: skip


def lua_dir() -> str:
    """The folder holding the Lua files. Raises RuntimeError when neither place has them."""
    here = os.path.dirname(os.path.abspath(__file__))
    for candidate in (os.path.join(here, "lua"), os.path.join(os.path.dirname(here), "lua")):
        if os.path.isfile(os.path.join(candidate, "limiter.lua")):
            return candidate
    raise RuntimeError(f"the Lua scripts are missing: looked in {here}/lua and {here}/../lua")


class Script:
    """A Lua script's text and its SHA1, as ``EVALSHA`` names it."""

    __slots__ = ("sha", "text")

    def __init__(self, text: str) -> None:
        import hashlib

        self.text = text
        self.sha = hashlib.sha1(text.encode("utf-8")).hexdigest()

    def __repr__(self) -> str:
        return f"Script(sha={self.sha!r})"


_script: Script | None = None


def limiter_script() -> Script:
    """The limiter script (common helpers, the three algorithms and the driver), loaded once."""
    global _script
    if _script is None:
        folder = lua_dir()
        parts = []
        for name in LUA_FILES:
            with open(os.path.join(folder, name), encoding="utf-8") as f:
                parts.append(f.read())
        _script = Script("\n".join(parts))
    return _script
