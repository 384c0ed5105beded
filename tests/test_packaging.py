"""The wheel carries the one copy of the Lua, byte for byte, and the type marker."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from ratelimit.scripts import LUA_FILES

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel of this checkout, built once for the module."""
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "-t", "wheel", "-d", str(out)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=120,
    )
    (built,) = out.glob("ratelimit_atomic-*.whl")
    return built


def test_wheel_ships_lua_identical_to_the_source(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        sources = sorted(p.name for p in (ROOT / "lua").glob("*.lua"))
        assert sorted(LUA_FILES) == sources
        for name in sources:
            assert zf.read(f"ratelimit/lua/{name}") == (ROOT / "lua" / name).read_bytes()
        assert "ratelimit/py.typed" in names
        assert not any(n.startswith(("tests/", "benchmarks/", "lua/")) for n in names)


def test_installed_wheel_finds_its_lua(wheel: Path, tmp_path: Path) -> None:
    """Unpacked as an installed wheel (no lua/ beside the package), the loader finds the
    copy inside the package and decides as the source checkout does."""
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    code = (
        "import ratelimit, ratelimit.scripts as s;print(s.lua_dir()); print(s.limiter_script().sha)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.split()
    from ratelimit.scripts import limiter_script

    assert out[0] == str(site / "ratelimit" / "lua")
    assert out[1] == limiter_script().sha


def test_a_checkout_reads_the_one_copy_through_the_package_link() -> None:
    """ratelimit/lua is a link to lua/, read as package data: no second copy, no probing."""
    from ratelimit.scripts import lua_dir

    link = ROOT / "ratelimit" / "lua"
    assert link.is_symlink()
    assert link.resolve() == (ROOT / "lua").resolve()
    assert lua_dir() == str(link)


def test_the_sdist_builds_a_wheel_and_runs_unpacked(tmp_path: Path) -> None:
    """An sdist cannot hold the link: it carries lua/ (the wheel is built from it) and
    ratelimit/lua as files, so the unpacked folder runs too."""
    import tarfile

    subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "-t", "sdist", "-d", str(tmp_path)],
        cwd=ROOT, check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    (sdist,) = tmp_path.glob("ratelimit_atomic-*.tar.gz")
    with tarfile.open(sdist) as tf:
        tf.extractall(tmp_path / "src", filter="data")
    (source,) = (tmp_path / "src").iterdir()
    for name in LUA_FILES:
        assert (source / "ratelimit" / "lua" / name).read_bytes() == (
            ROOT / "lua" / name
        ).read_bytes()
    subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "-t", "wheel", "-d", str(tmp_path / "w")],
        cwd=source, check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    sha = subprocess.run(
        [sys.executable, "-c", "import ratelimit.scripts as s; print(s.limiter_script().sha)"],
        env={"PYTHONPATH": str(source), "PATH": "/usr/bin:/bin"},
        cwd=source, check=True, capture_output=True, text=True, timeout=60,
    ).stdout.strip()  # fmt: skip
    from ratelimit.scripts import limiter_script

    assert sha == limiter_script().sha
    (built,) = (tmp_path / "w").glob("ratelimit_atomic-*.whl")
    with zipfile.ZipFile(built) as zf:
        for name in LUA_FILES:
            assert zf.read(f"ratelimit/lua/{name}") == (ROOT / "lua" / name).read_bytes()
