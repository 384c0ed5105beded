"""A griffe extension for the API reference: reads the reST spelling of our docstrings as
Markdown, so the reference shows what the source says.

- Sphinx roles (``:class:`Limiter```, ``:meth:`hit```, ``:mod:`ratelimit.headers```) become
  code spans: `Limiter`.
- A paragraph ending in ``::`` (reST's literal block) ends in ``:``, and the indented block
  after it becomes a fenced Python block.

Loaded by ``mkdocs.yml`` (``extensions: [docs/_scripts/griffe_rest.py]``); it changes only
the text the site renders, never the code.
"""

from __future__ import annotations

import re
import textwrap
from typing import Any

import griffe

_ROLE = re.compile(r":(?:class|meth|func|mod|attr|exc|data|obj):`~?([^`]+)`")


def markdown(text: str) -> str:
    """``text``, a docstring in our reST spelling, as Markdown."""
    text = _ROLE.sub(r"`\1`", text)
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.rstrip().endswith("::"):
            out.append(line)
            i += 1
            continue
        head = line.rstrip()[:-2].rstrip()
        if head:
            out.append(head + ":")
        i += 1
        block: list[str] = []
        while i < len(lines) and (not lines[i].strip() or lines[i].startswith((" ", "\t"))):
            block.append(lines[i])
            i += 1
        while block and not block[-1].strip():
            block.pop()
        out += [
            "",
            "```python",
            *textwrap.dedent("\n".join(block)).strip("\n").split("\n"),
            "```",
            "",
        ]
    return "\n".join(out)


class ReSTAsMarkdown(griffe.Extension):
    """Rewrites every docstring with :func:`markdown` once the package is loaded."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        self._walk(pkg, set())

    def _walk(self, obj: griffe.Object, seen: set[str]) -> None:
        if obj.path in seen:
            return
        seen.add(obj.path)
        if obj.docstring is not None:
            obj.docstring.value = markdown(obj.docstring.value)
        for member in obj.members.values():
            if not member.is_alias:
                self._walk(member, seen)  # type: ignore[arg-type]
