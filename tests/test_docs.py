"""The documentation builds, links resolve, and the code it shows runs.

- ``mkdocs build --strict`` (the config turns link and anchor checks into warnings, strict
  turns warnings into errors) passes, and fails on a broken link or API reference.
- Every ```` ```python ```` block of every page in ``docs/`` and of the README runs, in order,
  each page in one fresh namespace, on the memory store. A page whose code names
  ``redis://localhost:6379/0`` runs against the suite's real Redis server instead (the URL is
  replaced by the server's). A block preceded by ``<!-- not run: <reason> -->`` is skipped,
  and the reason must be given.
- The README's links into the repository (``docs/...md#anchor``, images) resolve; the
  site's own links are checked by the strict build.
- The algorithm plot's numbers, from the real limiter, tell the story its page tells.
"""

from __future__ import annotations

import ast
import asyncio
import importlib.util
import inspect
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import ratelimit as rl
from tests.conftest import _Servers
from tests.servers import Server

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = [*sorted(p for p in DOCS.rglob("*.md") if "_scripts" not in p.parts), ROOT / "README.md"]
DOC_URL = "redis://localhost:6379/0"
_OPEN = re.compile(r"^(?P<fence>`{3,})(?P<lang>[\w+-]*)")
_NOT_RUN = re.compile(r"^<!--\s*not run:\s*(?P<reason>\S.*?)\s*-->$")


@dataclass
class Block:
    """One fenced code block of a page."""

    page: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    not_run: str | None  # the reason, when marked as not run


def blocks(page: Path) -> list[Block]:
    """The fenced blocks of ``page``, outermost only (a fence inside a longer one is text)."""
    lines = page.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        opening = _OPEN.match(lines[i])
        if not opening:
            i += 1
            continue
        fence, start = opening["fence"], i
        i += 1
        body: list[str] = []
        while i < len(lines) and not (
            lines[i].startswith(fence) and not lines[i].strip("`").strip()
        ):
            body.append(lines[i])
            i += 1
        if i == len(lines):
            raise AssertionError(f"{page}:{start + 1}: code block never closed")
        previous = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        marker = _NOT_RUN.match(previous.strip())
        reason = marker["reason"] if marker else None
        found.append(Block(page, start + 1, opening["lang"], "\n".join(body) + "\n", reason))
        i += 1
    return found


def _runnable(page: Path) -> list[Block]:
    return [b for b in blocks(page) if b.lang == "python" and b.not_run is None]


def _needs_redis(page: Path) -> bool:
    return any(DOC_URL in b.code for b in _runnable(page))


def _page_params() -> list[Any]:
    params = []
    for page in PAGES:
        marks = [pytest.mark.redis_server] if _needs_redis(page) else []
        params.append(pytest.param(page, marks=marks, id=str(page.relative_to(ROOT))))
    return params


def _close_clients(namespace: dict[str, Any], loop: asyncio.AbstractEventLoop) -> None:
    """Close the Redis clients a page built, so no connection outlives its test."""
    for value in list(namespace.values()):
        client = getattr(value, "client", None) if isinstance(value, rl.RedisStore) else None
        if client is not None:
            client.close()
        if isinstance(value, rl.AsyncRedisStore):
            closing = getattr(value.client, "aclose", None)
            if closing is not None:
                loop.run_until_complete(closing())


def run_page(page: Path, redis_url: str | None) -> int:
    """Run the runnable blocks of ``page`` in order in one namespace; the number run."""
    namespace: dict[str, Any] = {"__name__": f"docs:{page.name}"}
    loop = asyncio.new_event_loop()
    ran = 0
    try:
        for block in _runnable(page):
            code = block.code
            if redis_url is not None:
                code = code.replace(DOC_URL, redis_url)
            name = f"{page.relative_to(ROOT)}:{block.line}"
            compiled = compile(code, name, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
            result = eval(compiled, namespace)
            if inspect.iscoroutine(result):
                loop.run_until_complete(result)
            ran += 1
        _close_clients(namespace, loop)
    finally:
        loop.close()
    return ran


@pytest.fixture(scope="module")
def mkdocs_env() -> dict[str, str]:
    return {**os.environ, "NO_MKDOCS_2_WARNING": "1"}


def _build(config: Path, site: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
        cwd=config.parent,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def test_site_builds_strict(tmp_path: Path, mkdocs_env: dict[str, str]) -> None:
    done = _build(ROOT / "mkdocs.yml", tmp_path / "site", mkdocs_env)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "site" / "reference" / "core" / "index.html").exists()
    assert (tmp_path / "site" / "images" / "algorithms.png").exists()
    assert (tmp_path / "site" / "images" / "core.png").stat().st_size > 10_000


def test_site_build_fails_on_broken_link_and_reference(
    tmp_path: Path, mkdocs_env: dict[str, str]
) -> None:
    """The same config over a copy of the docs with one broken link, one broken anchor and
    one broken API reference: the build fails, naming each."""
    copy = tmp_path / "project"
    shutil.copytree(DOCS, copy / "docs", symlinks=False)
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    config = config.replace("paths: [.]", f"paths: [{ROOT}]")
    (copy / "mkdocs.yml").write_text(config, encoding="utf-8")
    page = copy / "docs" / "keys.md"
    page.write_text(
        page.read_text(encoding="utf-8")
        + "\nSee [gone](no-such-page.md), [nowhere](stores.md#no-such-anchor) and "
        "[`Nope`][ratelimit.Nope].\n",
        encoding="utf-8",
    )
    done = _build(copy / "mkdocs.yml", tmp_path / "site", mkdocs_env)
    assert done.returncode != 0
    assert "no-such-page.md" in done.stderr
    assert "no-such-anchor" in done.stderr
    assert "ratelimit.Nope" in done.stderr


@pytest.mark.parametrize("page", _page_params())
def test_page_code_runs(page: Path, servers: _Servers) -> None:
    url = None
    if _needs_redis(page):
        server = servers.get("redis")
        assert isinstance(server, Server)
        server.reset()  # each page starts on an empty server, as a reader's would
        url = server.url
    assert run_page(page, url) == len(_runnable(page))


def test_blocks_marked_not_run_give_a_reason() -> None:
    marked = [b for page in PAGES for b in blocks(page) if b.not_run is not None]
    assert marked, "the marker is in use, so the rule is exercised"
    for block in marked:
        assert block.lang == "python", f"{block.page}:{block.line}: only python blocks run"
        assert len(block.not_run or "") > 10, f"{block.page}:{block.line}: say why"


def test_block_parser_skips_marked_and_nested_blocks(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "````markdown\n```python\nraise SystemExit\n```\n````\n\n"
        "<!-- not run: needs a service -->\n```python\nraise SystemExit\n```\n\n"
        "```python\nx = 1\n```\n\n```bash\nexit 1\n```\n",
        encoding="utf-8",
    )
    found = blocks(page)
    assert [(b.lang, b.not_run) for b in found] == [
        ("markdown", None), ("python", "needs a service"), ("python", None), ("bash", None)
    ]  # fmt: skip
    assert [b.code for b in _runnable(page)] == ["x = 1\n"]


_LINK = re.compile(r"\]\((?P<target>[^)\s]+)\)")


def _slug(heading: str) -> str:
    """The anchor MkDocs' ``toc`` extension gives a heading."""
    text = re.sub(r"[^\w\s-]", "", heading.replace("`", "")).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def test_readme_links_resolve() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    links = [m["target"] for m in _LINK.finditer(text) if "://" not in m["target"]]
    assert any(link.startswith("docs/") for link in links)
    for link in links:
        path, _, anchor = link.partition("#")
        target = ROOT / path
        assert target.exists(), f"README links to a missing {link}"
        if anchor:
            headings = re.findall(r"^#+ (.+)$", target.read_text(encoding="utf-8"), re.M)
            assert anchor in {_slug(h) for h in headings}, f"README links to a missing {link}"


def _script(name: str) -> Any:
    path = DOCS / "_scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reference_reads_rest_docstrings_as_markdown() -> None:
    """docs/_scripts/griffe_rest.py: roles, literal blocks and simple tables of our
    docstrings come out as Markdown in the API reference."""
    text = (
        "Uses :class:`Limiter` and :meth:`~ratelimit.Limiter.hit`::\n\n"
        "    limiter.hit(key)\n\n"
        "Settings:\n\n"
        "=====  ==========\n"
        "``A``  first line\n"
        "       and more\n"
        "``B``  b | c\n"
        "=====  ==========\n\n"
        "End."
    )
    assert _script("griffe_rest").markdown(text).split("\n") == [
        "Uses `Limiter` and `ratelimit.Limiter.hit`:",
        "",
        "```python",
        "limiter.hit(key)",
        "```",
        "",
        "Settings:",
        "",
        "",
        "|  |  |",
        "| --- | --- |",
        "| ``A`` | first line and more |",
        "| ``B`` | b \\| c |",
        "",
        "",
        "End.",
    ]


def test_algorithm_plot_tells_what_its_page_says() -> None:
    """docs/algorithms.md: the fixed window admits 19 within two seconds of its boundary, the
    sliding window never more than 10 in any 10 s of this traffic, the token bucket its burst
    and then one per second."""
    plot = _script("plot_algorithms")
    outcome = plot.simulate()
    fixed = [t for t, ok in outcome["fixed window"] if ok]
    assert sum(1 for t in fixed if 9.0 <= t < 11.0) == 19
    assert plot.most_in_any_period(outcome["fixed window"]) == 19
    assert plot.most_in_any_period(outcome["sliding window"]) == 10
    bucket = [t for t, ok in outcome["token bucket"] if ok]
    assert plot.most_in_any_period(outcome["token bucket"]) == 19
    drained = [t for t in bucket if 35.0 <= t < 45.0]
    assert len(drained) == 10  # its burst spent, the bucket admits its refill: one per second
    assert (DOCS / "images" / "algorithms.png").stat().st_size > 10_000
