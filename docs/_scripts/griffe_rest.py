"""A griffe extension for the API reference: reads the reST spelling of our docstrings as
Markdown, so the reference shows what the source says.

- Sphinx roles (``:class:`Limiter```, ``:meth:`hit```, ``:mod:`ratelimit.headers```) become
  code spans: `Limiter`.
- A paragraph ending in ``::`` (reST's literal block) ends in ``:``, and the indented block
  after it becomes a fenced Python block.
- A simple table (columns under ``====  ====`` borders, continuation lines with an empty first
  column) becomes a Markdown table.

Loaded by ``mkdocs.yml`` (``extensions: [docs/_scripts/griffe_rest.py]``); it changes only
the text the site renders, never the code.
"""

from __future__ import annotations

import re
import textwrap
from typing import Any

import griffe

_ROLE = re.compile(r":(?:class|meth|func|mod|attr|exc|data|obj):`~?([^`]+)`")
_BORDER = re.compile(r"^\s*=+(?:\s+=+)+\s*$")


def _table(lines: list[str], start: int) -> tuple[list[str], int]:
    """The simple table whose top border is ``lines[start]``, as Markdown lines, and the
    index of the line after its bottom border."""
    border = lines[start]
    columns = [m.start() for m in re.finditer(r"=+", border)]
    sections: list[list[list[str]]] = [[]]
    i = start + 1
    while i < len(lines):
        line = lines[i]
        i += 1
        if _BORDER.match(line):
            if i < len(lines) and lines[i].strip() and not _BORDER.match(lines[i]):
                sections.append([])  # a header row above, the body below
                continue
            break
        if not line.strip():
            continue
        bounds = [*columns[1:], max(len(line), columns[-1]) + 1]
        cells = [line[a:b].strip() for a, b in zip(columns, bounds, strict=True)]
        rows = sections[-1]
        if cells[0] or not rows:
            rows.append(cells)
        else:
            rows[-1] = [f"{old} {new}".strip() for old, new in zip(rows[-1], cells, strict=True)]
    header = sections[0][0] if len(sections) > 1 else [""] * len(columns)
    body = sections[-1]

    def row(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    out = ["", row(header), "| " + " | ".join("---" for _ in columns) + " |"]
    return [*out, *(row(r) for r in body), ""], i


def markdown(text: str) -> str:
    """``text``, a docstring in our reST spelling, as Markdown."""
    text = _ROLE.sub(r"`\1`", text)
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if _BORDER.match(line):
            table, i = _table(lines, i)
            out += table
            continue
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
