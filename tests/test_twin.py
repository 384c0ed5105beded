"""The Python twin mirrors the Lua one to one: ``ratelimit/_algorithms.py`` has each Lua
algorithm's functions (load, report, charge, settle) under the same names and in the same
order, ``ratelimit/_driver.py`` the entries of ``lua/limiter.lua`` and its ``resolve``; a load
or report never changes the state it is given; and the driver's one-policy fast path
(``check_one``) decides, reports and stores what its general ``check`` does. The Lua/Python
differential tests (test_properties.py, test_leases.py) hold the twin's answers to the scripts'.
"""

from __future__ import annotations

import ast
import copy
import random
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ratelimit as rl
from ratelimit import _algorithms, _driver
from ratelimit._algorithms import ALGORITHMS, State
from ratelimit.scripts import LUA_FILES, lua_dir
from ratelimit.stores.base import Plan

ROOT = Path(__file__).resolve().parent.parent


def _lua(name: str) -> str:
    return (Path(lua_dir()) / name).read_text()


def _lua_tables() -> dict[str, str]:
    """Algorithm code -> the name of its Lua table (``algorithms['f'] = fixed_window``)."""
    tables = {}
    for name in LUA_FILES:
        for code, table in re.findall(r"^algorithms\['(\w+)'\] = (\w+)\s*$", _lua(name), re.M):
            tables[code] = table
    return tables


def _lua_functions() -> list[str]:
    """The algorithms' functions in the Lua, in the order of LUA_FILES and of each file, as
    the twin names them: ``fixed_window.load`` is ``fixed_window_load``, ``settles['f']`` is
    ``fixed_window_settle``."""
    tables = _lua_tables()
    found = []
    for name in LUA_FILES:
        text = _lua(name)
        for match in re.finditer(
            r"^function (\w+)\.(\w+)\(|^settles\['(\w+)'\] = function\(", text, re.M
        ):
            table, function, code = match.groups()
            found.append(f"{table}_{function}" if code is None else f"{tables[code]}_settle")
    return found


def _python_functions(module: str, prefixes: tuple[str, ...]) -> list[str]:
    """The module's top-level functions that start with one of ``prefixes``, in source order."""
    tree = ast.parse((ROOT / module).read_text())
    return [
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and node.name.startswith(prefixes)
    ]


def test_the_twin_has_each_lua_algorithm_function_with_its_name_in_its_order() -> None:
    tables = _lua_tables()
    assert set(tables) == set(ALGORITHMS)
    lua = _lua_functions()
    prefixes = tuple(f"{table}_" for table in tables.values())
    assert len(lua) >= 15  # four algorithms' load, report and charge, three settles
    assert _python_functions("ratelimit/_algorithms.py", prefixes) == lua
    # and ALGORITHMS, the Lua's `algorithms` table, holds them
    for code, table in tables.items():
        algorithm = ALGORITHMS[code]
        for at, part in enumerate(("load", "report", "charge", "settle")):
            twin = getattr(_algorithms, f"{table}_{part}", None)
            assert algorithm[at] is twin, (code, part)
            assert (twin is None) == (f"{table}_{part}" not in lua), (code, part)
        slots = re.search(rf"^local {table} = \{{slots = true\}}", _lua_all(), re.M) is not None
        assert algorithm[4] is slots, code


def _lua_all() -> str:
    return "\n".join(_lua(name) for name in LUA_FILES)


def test_the_driver_has_each_lua_entry_and_resolve_in_its_order() -> None:
    limiter = _lua("limiter.lua")
    match = re.search(r"^local entries = \{(?P<names>[^}]*)\}", limiter, re.M)
    assert match is not None
    entries = re.findall(r"(\w+) = (\w+)", match["names"])
    assert all(name == function for name, function in entries)
    names = [name for name, _ in entries]
    assert list(_driver.ENTRIES) == names
    for name in names:
        assert _driver.ENTRIES[name] is getattr(_driver, name)
    mirrored = {*names, "resolve"}
    lua_order = [f for f in re.findall(r"^local function (\w+)\(", limiter, re.M) if f in mirrored]
    assert lua_order == [
        f for f in _python_functions("ratelimit/_driver.py", ("",)) if f in mirrored
    ]
    assert set(lua_order) == mirrored


# ---- load and report read only -----------------------------------------------------------


@st.composite
def _cases(draw: st.DrawFn) -> tuple[str, State | None, int, int, int, int, int]:
    code = draw(st.sampled_from("fstc"))
    limit = draw(st.integers(1, 20))
    period = draw(st.integers(1, 1000))
    rate = draw(st.integers(1, 50)) if code == "t" else 0
    now = draw(st.integers(0, 5000))
    cost = draw(st.integers(0, limit))
    ints = st.integers(-3000, 6000)
    stored: State | None
    if draw(st.booleans()):
        stored = None
    elif code == "f":
        stored = [draw(ints), draw(st.integers(0, limit + 5))]
    elif code == "s":
        stored = [draw(ints), draw(st.integers(0, limit + 5)), draw(st.integers(0, limit + 5))]
    elif code == "t":
        capacity = limit * period
        stored = [draw(st.integers(-capacity, capacity + period)), draw(ints)]
    else:
        stored = [x for i in range(draw(st.integers(0, limit + 2))) for x in (i, draw(ints))]
    return code, stored, now, limit, period, rate, cost


@settings(max_examples=2000, deadline=None)
@given(_cases())
def test_load_and_report_never_change_what_they_are_given(
    case: tuple[str, State | None, int, int, int, int, int],
) -> None:
    code, stored, now, limit, period, rate, cost = case
    load, report, charge, _, slots = ALGORITHMS[code]
    before = copy.deepcopy(stored)
    s = load(stored, now, limit, period, rate)
    assert stored == before  # a load reads only
    loaded = list(s)
    allowed, remaining, reset, retry = report(s, now, limit, period, rate, cost)
    assert s == loaded  # a report reads only
    assert remaining >= 0 and reset >= 0
    assert (retry == 0) if allowed else (retry > 0)
    if allowed and cost and not slots:
        ttl = charge(s, now, limit, period, rate, cost)
        assert ttl > 0
        if s is not stored:  # a charge spends in the loaded state only
            assert stored == before


# ---- the fast path is the driver's check ----------------------------------------------------

FAST_POLICIES = [
    rl.FixedWindow(5, 10),
    rl.SlidingWindow(7, 3),
    rl.TokenBucket(3, 1, burst=4),
    rl.Concurrency(2, lease=3600),  # a peek: checked against the slots in flight
    # large quotas, counted in ticks of 10 ms and 10 s
    rl.SlidingWindow(100_000_000, 86400),
    rl.TokenBucket(5_000_000, 30 * 86400),
]


@pytest.mark.parametrize("policy", FAST_POLICIES, ids=lambda p: p.id)
def test_check_one_decides_reports_and_stores_as_check(policy: rl.Policy) -> None:
    plan = Plan([policy])
    fast, loop = rl.MemoryStore(), rl.MemoryStore()
    if isinstance(policy, rl.Concurrency):  # leases in flight to check against
        for store in (fast, loop):
            for n in range(2):
                store.acquire(plan, ["k0", "k:override"], 999_000 + n, 1, f"{n + 1:x}")
    rng = random.Random(7)
    now = 1_000_000
    costs = [0, 1, 1, 2, 3, min(policy.limit, 1_000_000)]
    for _ in range(3000):
        now += rng.choice([0, 0, 1, 7, 100, 333, 999, 1000, 4000, 30_000, 864_000])
        key = rng.choice(["k0", "k1"])
        cost, charge = rng.choice(costs), rng.random() < 0.7
        allowed, remaining, reset, retry, _ = fast.check_one(plan.steps[0], key, now, cost, charge)
        with loop.lock:
            reply = _driver.check(loop, plan, [key, "k:override"], now, cost, charge)
        assert reply == [allowed, allowed, remaining, reset, retry], (now, key, cost, charge)
        assert fast.entries == loop.entries
