"""What a store is: where the limiter's state lives and how one check runs there.

A store runs one *plan* (a limiter's policies, and their script arguments) for a list of keys
(one per policy, all of one identifier) and answers with the script's reply: a flat list of
integers, ``[allowed, allowed_1, remaining_1, reset_ms_1, retry_ms_1, allowed_2, ...]``, as
``lua/limiter.lua`` documents. The limiter turns that reply into a :class:`Decision`. Stores
raise :class:`StoreError` (chained from the client's error) for anything that went wrong.

Every store that runs the Lua (Redis, Valkey, Cluster, Upstash; sync and async) shares the
call in :class:`ScriptCalls`: ``FCALL`` of the function library where the store can use it,
else ``EVALSHA``; the one resend when the server does not know the function or script; the
reply check, the retry warning and the error mapping. A store only says how one command is
sent (``_send``) and what its client's errors mean.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from ratelimit._algorithms import ALGORITHMS, Algorithm
from ratelimit._logging import logger
from ratelimit.cache import remember
from ratelimit.errors import StoreError
from ratelimit.scripts import library

if TYPE_CHECKING:
    from ratelimit.breaker import CircuitBreaker
    from ratelimit.policies import Policy

__all__ = ["AsyncScriptStore", "AsyncStore", "Plan", "Reply", "ScriptCalls", "ScriptStore", "Store",
           "unreadable_override"]  # fmt: skip

Reply = list[int]
#: A policy as the Python twin's driver reads it (``read_plan`` in ``lua/limiter.lua``): its
#: algorithm (ratelimit/_algorithms.py), limit, period, rate and unit, as integers.
Step = tuple[Algorithm, int, int, int, int]


# What unreadable_override has logged, so a stored value is logged once, not once per check.
_LOGGED: dict[str, None] = {}


def unreadable_override(message: str) -> StoreError:
    """The StoreError of a check that met an override this version cannot read (written by
    hand, or by another version during a rolling deploy): not an outage (``outage`` False),
    as the store answered. The limiter's breaker stays closed, ``on_error`` decides that
    identifier's checks alone, and every other identifier is checked as usual. Logs
    ``message`` once (a bounded memory of what was logged), never raises."""
    error = StoreError(message)
    error.outage = False
    if message not in _LOGGED:
        remember(_LOGGED, message, None, 1000)
        logger().warning(
            "ratelimit: %s; checks of that identifier follow on_error until its override is "
            "set again or deleted",
            message,
        )
    return error


class Plan:
    """A limiter's policies, ready to run: the script's plan argument (``argv[4]`` of
    ``lua/limiter.lua``, as text and as bytes) and, for the memory store, the Python twin's
    steps. Built once per limiter."""

    __slots__ = ("codes", "policies", "spec", "spec_bytes", "state_ids", "steps", "tail")

    def __init__(self, policies: Sequence[Policy]) -> None:
        self.policies: tuple[Policy, ...] = tuple(policies)
        self.spec: str = " ".join(a for p in self.policies for a in p._argv)
        self.spec_bytes: bytes = self.spec.encode()
        #: the algorithm codes the plan uses, sorted, once each ("f", "ft"...)
        self.codes: str = "".join(sorted({p._argv[0] for p in self.policies}))
        steps: list[Step] = []
        state_ids: list[str] = []
        tail: list[int] = []
        for p in self.policies:
            code, limit, period, rate, unit = p._argv
            steps.append((ALGORITHMS[code], int(limit), int(period), int(rate), int(unit)))
            # the state key's last part, by shape (see "Overrides" in lua/limiter.lua): a
            # changed limit keeps the state, a changed period or unit never reads it
            shape = code + period + ("" if unit == "1" else "t" + unit)
            rank = sum(1 for s in state_ids if s.split(".")[0] == shape) + 1
            state_ids.append(shape if rank == 1 else f"{shape}.{rank}")
            tail += (ord(code), int(limit), int(period), int(rate), int(unit))
        self.steps: tuple[Step, ...] = tuple(steps)
        #: The last part of each policy's state key: ``<code><period>[t<unit>][.<k>]``.
        self.state_ids: tuple[str, ...] = tuple(state_ids)
        #: The plan as a script reply names an override's: five integers per policy.
        self.tail: tuple[int, ...] = tuple(tail)

    def state_keys(self, override_key: str) -> list[str]:
        """The state keys of this plan's policies for the identifier whose override key is
        ``override_key`` (``<prefix>:{<identifier>}:override``), as the script's ``resolve``
        names them."""
        head = override_key[: -len("override")]
        return [head + state_id for state_id in self.state_ids]


class Store:
    """A store the sync :class:`Limiter` can use. Its methods block on the store's I/O."""

    #: True when the store has no clock of its own, so the limiter always passes ``now``.
    needs_clock: bool = False
    #: The circuit breaker of a store that can fail (None for the memory store).
    breaker: CircuitBreaker | None = None
    #: True when :meth:`breaker_for` depends on the keys (one breaker per cluster master).
    per_node_breakers: bool = False

    def breaker_for(self, keys: Sequence[str]) -> CircuitBreaker | None:
        """The breaker that guards a call on ``keys``; :attr:`breaker` unless the store keeps
        one per part of itself that fails alone (a cluster's masters)."""
        return self.breaker

    def evaluate(self, plan: Plan, keys: Sequence[str], now: int | None, cost: int,
                 charge: bool) -> Reply:  # fmt: skip
        """Run ``plan`` on ``keys``; charge ``cost`` if ``charge`` and every policy allows.

        :param plan: the limiter's policies, ready to run.
        :param keys: the identifier's state keys, one per policy, then its override key.
        :param now: milliseconds, or None for the store's own time.
        :param cost: units to check (and charge).
        :param charge: charge ``cost`` when every policy allows it; False only looks.
        :returns: the script's reply (see the module docstring).
        :raises StoreError: for anything that went wrong.
        """
        raise NotImplementedError

    def delete(self, keys: Sequence[str]) -> None:
        """Forget an identifier's state: the state keys and those of its override's policies,
        never the override.

        :param keys: the identifier's state keys, then its override key.
        :raises StoreError: for anything that went wrong.
        """
        raise NotImplementedError

    def set_override(self, key: str, plan: Plan, ttl_ms: int | None, now: int | None) -> None:
        """Store ``plan`` as the override at ``key`` (one ``SET``) and keep the state its
        policies will read until full under them (one script call on a server).

        :param key: the identifier's override key.
        :param plan: the override's policies.
        :param ttl_ms: milliseconds after ``now`` it expires; None: never.
        :param now: milliseconds, or None for the store's own time.
        :raises StoreError: for anything that went wrong.
        """
        raise NotImplementedError

    def get_override(self, key: str, now: int | None) -> str | None:
        """The plan text of the override at ``key``, or None when there is none.

        :raises StoreError: for anything that went wrong.
        """
        raise NotImplementedError

    def delete_override(self, key: str) -> None:
        """Delete the override at ``key`` (one ``DEL``).

        :raises StoreError: for anything that went wrong.
        """
        raise NotImplementedError

    # Leases: the acquire, release, renew and settle entries of lua/limiter.lua, one call each.

    def acquire(self, plan: Plan, keys: Sequence[str], now: int | None, cost: int,
                lease: str) -> Reply:  # fmt: skip
        """As :meth:`evaluate` with a charge, where each Concurrency policy also takes a slot.

        :param lease: the lease's id, the member of the Concurrency keys' sorted sets.
        :returns: the script's reply, ending with the ``now`` used.
        :raises StoreError: for anything that went wrong.
        """
        raise NotImplementedError

    def release(self, keys: Sequence[str], lease: str) -> int:
        """Free ``lease``'s slots in these Concurrency keys.

        :returns: how many slots were freed.
        :raises StoreError: for anything that went wrong.
        """
        raise NotImplementedError

    def renew(self, keys: Sequence[str], now: int | None, lease: str,
              leases_ms: Sequence[int]) -> Reply:  # fmt: skip
        """Hold ``lease`` for ``leases_ms[i]`` from ``now`` again in each key where it is in
        flight.

        :returns: ``[1 if it was in all, else 0, now]``.
        :raises StoreError: for anything that went wrong.
        """
        raise NotImplementedError

    def settle(self, plan: Plan, keys: Sequence[str], now: int | None, acquired: int,
               charged: Sequence[int], actual: int, own: Plan | None = None,
               own_keys: Sequence[str] = ()) -> list[int]:  # fmt: skip
        """Settle each rate policy of ``plan`` (keys in its order): the lease that charged it
        ``charged[i]`` at ``acquired`` (milliseconds) cost ``actual``. For a lease acquired
        under an override, ``own`` is the limiter's own plan and ``own_keys`` its state keys:
        each key settled that ``own`` also reads then lives until full under it too (see
        "Overrides" in ``lua/limiter.lua``).

        :returns: the cost now charged in each (``charged[i]`` where nothing could be given
            back).
        :raises StoreError: for anything that went wrong.
        """
        raise NotImplementedError


class AsyncStore:
    """A store the :class:`AsyncLimiter` can use: the calls of :class:`Store`, awaitable,
    never blocking the event loop."""

    needs_clock: bool = False
    breaker: CircuitBreaker | None = None
    per_node_breakers: bool = False

    def breaker_for(self, keys: Sequence[str]) -> CircuitBreaker | None:
        """As :meth:`Store.breaker_for`."""
        return self.breaker

    async def aevaluate(self, plan: Plan, keys: Sequence[str], now: int | None, cost: int,
                        charge: bool) -> Reply:  # fmt: skip
        """As :meth:`Store.evaluate`, without blocking the event loop. Raises StoreError."""
        raise NotImplementedError

    async def adelete(self, keys: Sequence[str]) -> None:
        """As :meth:`Store.delete`. Raises StoreError."""
        raise NotImplementedError

    async def aacquire(self, plan: Plan, keys: Sequence[str], now: int | None, cost: int,
                       lease: str) -> Reply:  # fmt: skip
        """As :meth:`Store.acquire`. Raises StoreError."""
        raise NotImplementedError

    async def arelease(self, keys: Sequence[str], lease: str) -> int:
        """As :meth:`Store.release`. Raises StoreError."""
        raise NotImplementedError

    async def arenew(self, keys: Sequence[str], now: int | None, lease: str,
                     leases_ms: Sequence[int]) -> Reply:  # fmt: skip
        """As :meth:`Store.renew`. Raises StoreError."""
        raise NotImplementedError

    async def asettle(self, plan: Plan, keys: Sequence[str], now: int | None, acquired: int,
                      charged: Sequence[int], actual: int, own: Plan | None = None,
                      own_keys: Sequence[str] = ()) -> list[int]:  # fmt: skip
        """As :meth:`Store.settle`. Raises StoreError."""
        raise NotImplementedError

    async def aset_override(self, key: str, plan: Plan, ttl_ms: int | None,
                            now: int | None) -> None:  # fmt: skip
        """As :meth:`Store.set_override`. Raises StoreError."""
        raise NotImplementedError

    async def aget_override(self, key: str, now: int | None) -> str | None:
        """As :meth:`Store.get_override`. Raises StoreError."""
        raise NotImplementedError

    async def adelete_override(self, key: str) -> None:
        """As :meth:`Store.delete_override`. Raises StoreError."""
        raise NotImplementedError


_NOW = b""  # the script reads the server's TIME
_CHARGE = (b"0", b"1")
Command = list[Any]
# The resend after an unknown function or script: yields the commands to send, receives each
# one's reply (or its error, thrown in), returns the script's reply.
Recovery = Generator[Command, Any, Any]


class ScriptCalls:
    """The script call shared by every store that runs the Lua; does no I/O.

    A subclass sets :attr:`functions` (can its client ``FCALL`` the library?), the client's
    error classes, and says how one command is sent (``_send`` in :class:`ScriptStore` and
    :class:`AsyncScriptStore`). The rest is here, once:

    - ``FCALL <library>_check`` when :attr:`functions`, else ``EVALSHA``;
    - a server that does not know the function: one ``FUNCTION LOAD`` (REPLACE, the library
      being named after its text) and the ``FCALL`` again, three requests at most; one that
      cannot call or load functions (no such command, no permission) makes the store use
      scripts from then on, and the call goes once as ``EVAL``;
    - a server that does not know the script: the same call once as ``EVAL`` with the text;
    - no other error is resent (a hit is not idempotent); every error becomes a StoreError.

    Another entry point of ``lua/limiter.lua`` is called the same way:
    ``self._call(self._entry_command("<entry>", keys, argv))`` (awaited in an async store).
    """

    #: Whether this store's client can call the function library (``FCALL``); a store falls
    #: back to scripts for good when the server cannot load functions.
    functions: bool = False
    #: Whether the client takes ``bytes`` arguments as they are (redis-py), or needs text.
    binary_args: ClassVar[bool] = False
    #: Whether the client hands the script's integers back as ``int`` always (redis-py), so a
    #: list reply needs no look at each item.
    int_replies: ClassVar[bool] = False
    #: The client's class(es) for an error reply of the server (``-ERR ...``).
    _reply_errors: tuple[type[Exception], ...] = ()
    #: Error replies that mean "no such script" even when their text does not say NOSCRIPT.
    _noscript_errors: tuple[type[Exception], ...] = ()

    def _setup_calls(self) -> None:
        lib = library()
        self._library_text = lib.text
        #: entry point (``check``...) -> its function name, and -> its script
        self._function_names = dict(lib.functions)
        self._scripts = dict(lib.scripts)
        # the text to EVAL for a call that named a function or a script the server lacks
        self._texts = {lib.functions[e]: lib.scripts[e].text for e in lib.functions}
        self._texts.update({s.sha: s.text for s in lib.scripts.values()})
        self._check_function = lib.functions["check"]
        self._library = lib
        #: the check script's SHA1 by the algorithm codes of a plan (see Library.script_for)
        self._check_shas: dict[str, str] = {}

    def _check_sha(self, codes: str) -> str:
        """The SHA1 of the check script with only the algorithms ``codes`` (a plan's
        ``codes``), made on first use."""
        sha = self._check_shas.get(codes)
        if sha is None:
            script = self._library.script_for("check", codes)
            self._texts[script.sha] = script.text
            sha = self._check_shas[codes] = script.sha
        return sha

    def _entry_command(self, entry: str, keys: Sequence[str], argv: Sequence[Any]) -> Command:
        """A call of the entry point ``entry`` (see ``lua/limiter.lua``) as one command:
        ``FCALL`` of its function or ``EVALSHA`` of its script, ``numkeys``, keys, ``argv``."""
        if self.functions:
            return ["FCALL", self._function_names[entry], len(keys), *keys, *argv]
        return ["EVALSHA", self._scripts[entry].sha, len(keys), *keys, *argv]

    def _command(self, plan: Plan, keys: Sequence[str], now: int | None, cost: int,
                 charge: bool) -> Command:  # fmt: skip
        """The ``check`` entry point as one command (as :meth:`_entry_command`, inlined: it
        runs on every check)."""
        if self.functions:
            head = ["FCALL", self._check_function, len(keys), *keys]
        else:
            head = ["EVALSHA", self._check_sha(plan.codes), len(keys), *keys]
        if self.binary_args:
            head += (_NOW if now is None else now, cost, _CHARGE[charge], plan.spec_bytes)
        else:
            head += ("" if now is None else now, cost, "1" if charge else "0", plan.spec)
        return head

    def _acquire_command(self, plan: Plan, keys: Sequence[str], now: int | None, cost: int,
                         lease: str) -> Command:  # fmt: skip
        argv = ("" if now is None else now, cost, "1", plan.spec, lease)
        return self._entry_command("acquire", keys, argv)

    def _renew_command(self, keys: Sequence[str], now: int | None, lease: str,
                       leases_ms: Sequence[int]) -> Command:  # fmt: skip
        argv = ("" if now is None else now, lease, " ".join(map(str, leases_ms)))
        return self._entry_command("renew", keys, argv)

    def _settle_command(self, plan: Plan, keys: Sequence[str], now: int | None, acquired: int,
                        charged: Sequence[int], actual: int, own: Plan | None,
                        own_keys: Sequence[str]) -> Command:  # fmt: skip
        argv: tuple[Any, ...] = ("" if now is None else now, acquired,
                                 " ".join(map(str, charged)), actual, plan.spec)  # fmt: skip
        if own is not None:  # acquired under an override: the limiter's own plan and keys
            return self._entry_command("settle", [*keys, *own_keys], (*argv, own.spec))
        return self._entry_command("settle", keys, argv)

    def _whole(self, command: Command) -> Command:
        """``command``, a check that answered ``{-1}`` (an override needs an algorithm its
        script lacks, ``lua/limiter.lua``), sent to the script holding every algorithm: the
        one resend an override with another algorithm costs on the script path. Raises the
        :func:`unreadable_override` StoreError when ``command`` ran with every algorithm
        already (the function library, or the whole script)."""
        whole = self._scripts["check"].sha
        if (command[0] == "FCALL" and self.functions) or command[1] == whole:
            raise self._unreadable(command)
        return ["EVALSHA", whole, *command[2:]]

    def _unreadable(self, command: Command) -> StoreError:
        """The StoreError of ``command``, a call that every algorithm of this version
        answered with ``{-1}``: the override it read names an algorithm this version does
        not know."""
        key = command[2 + int(command[2])]  # the override key ends the keys
        return unreadable_override(
            f"{type(self).__name__}: the override at {key!r} names an algorithm this "
            "version of ratelimit does not know"
        )

    def _override_command(self, key: str, plan: Plan | None, ttl_ms: int | None,
                          now: int | None = None) -> Command:  # fmt: skip
        """The ``set_override`` entry (its ``SET``, and the state its policies will read kept
        until full under them: ``lua/limiter.lua``), or ``DEL`` when ``plan`` is None."""
        if plan is None:
            return ["DEL", key]
        keys = [*plan.state_keys(key), key]
        argv = ("" if now is None else now, plan.spec, "" if ttl_ms is None else ttl_ms)
        return self._entry_command("set_override", keys, argv)

    @staticmethod
    def _text(raw: object) -> str | None:
        """A ``GET`` reply as text."""
        if raw is None or isinstance(raw, str):
            return raw
        if isinstance(raw, bytes):
            return raw.decode("utf-8")
        raise StoreError(f"unexpected override value {raw!r}")

    def _unknown(self, error: BaseException) -> str | None:
        """What the server did not know, when ``error`` says so: ``"script"``, ``"function"``,
        or ``"command"`` (no FCALL or FUNCTION at all); else None."""
        if not isinstance(error, self._reply_errors):
            return None
        if isinstance(error, self._noscript_errors):
            return "script"
        text = str(error)
        if text.startswith("NOSCRIPT"):
            return "script"
        lowered = text.lower()
        if "function not found" in lowered:
            return "function"
        if (
            "unknown command" in lowered
            or "unknown subcommand" in lowered
            or "no permissions" in lowered  # NOPERM: an ACL without it
        ):
            return "command"
        return None

    def _recovery(self, command: Command, error: BaseException) -> Recovery:
        """After ``command`` failed with ``error``: the commands of the one resend allowed, or
        ``error`` raised again when nothing may be resent."""
        unknown = self._unknown(error)
        if command[0] == "FCALL" and unknown in ("function", "command"):
            if unknown == "function":
                try:
                    yield ["FUNCTION", "LOAD", "REPLACE", self._library_text]
                except self._reply_errors as refused:
                    if self._unknown(refused) != "command":
                        raise  # a passing state (busy, read-only): the next check tries again
                    # this server cannot load functions (no such command, not permitted)
                else:
                    return (yield command)
            self.functions = False
        elif not (command[0] == "EVALSHA" and unknown == "script"):
            raise error
        return (yield ["EVAL", self._script_text(command), *command[2:]])

    def _script_text(self, command: Command) -> str:
        """The script text to EVAL for ``command`` (an FCALL or EVALSHA): for the check entry
        called by function, the script the next EVALSHA names (only the plan's algorithms,
        read from the plan argument), so that the text sent once is the one cached."""
        if command[1] != self._check_function:
            return self._texts[command[1]]
        spec = command[3 + int(command[2]) + 3]
        text = spec.decode() if isinstance(spec, bytes) else str(spec)
        codes = "".join(sorted(set(text.split()[::5])))
        return self._texts[self._check_sha(codes)]

    def _reply(self, raw: object) -> Reply:
        """The script's reply as a list of ints (a client may hand numbers back as text);
        anything else is a StoreError."""
        if type(raw) is list and raw:
            if self.int_replies:
                return raw
            for x in raw:
                if type(x) is not int:
                    break
            else:
                return raw
            try:
                return [int(x) for x in raw]
            except (TypeError, ValueError):
                pass
        raise StoreError(f"{type(self).__name__}: unexpected script reply {raw!r}")

    def _describe(self, error: BaseException) -> str:
        """The text of the StoreError for ``error``; stores with more to say override it."""
        return f"{type(self).__name__} failed: {type(error).__name__}: {error}"

    def _failed(self, error: BaseException) -> StoreError:
        return StoreError(self._describe(error))

    def _warn_retries(self, retries: int, how: str, fix: str) -> None:
        """The warning, once per store, that its client resends failed commands."""
        if not retries:
            return
        import warnings

        name = type(self).__name__
        warnings.warn(
            f"{name}: this client retries failed commands ({how}): a hit whose reply was lost "
            "to a timeout would run again and be counted twice, and an outage would stall each "
            f"request through every retry. {fix}",
            RuntimeWarning,
            stacklevel=4,
        )


class ScriptStore(ScriptCalls, Store):
    """A sync store that runs the Lua: says only how one command is sent (``_send``)."""

    def _send(self, command: Command) -> Any:
        """Send one command, block for its reply. Raises the client's errors."""
        raise NotImplementedError

    def evaluate(self, plan: Plan, keys: Sequence[str], now: int | None, cost: int,
                 charge: bool) -> Reply:  # fmt: skip
        command = self._command(plan, keys, now, cost, charge)
        reply = self._call(command)
        if reply[0] < 0:  # an override with an algorithm this script lacks: the whole script
            whole = self._whole(command)
            reply = self._call(whole)
            if reply[0] < 0:  # ...which lacks it too: this version cannot read the override
                raise self._unreadable(whole)
        return reply

    def _call(self, command: Command) -> Reply:
        """Run one entry-point call (:meth:`_entry_command`), with the one resend allowed.
        Blocks. Raises StoreError."""
        try:
            try:
                raw = self._send(command)
            except Exception as error:
                raw = self._resend(self._recovery(command, error))
        except Exception as error:
            raise self._failed(error) from error
        return self._reply(raw)

    def _resend(self, steps: Recovery) -> Any:
        reply: Any = None
        failure: Exception | None = None
        while True:
            try:
                command = steps.send(reply) if failure is None else steps.throw(failure)
            except StopIteration as done:
                return done.value
            try:
                reply, failure = self._send(command), None
            except Exception as error:
                failure = error

    def delete(self, keys: Sequence[str]) -> None:
        self._call(self._entry_command("forget", keys, ()))

    def set_override(self, key: str, plan: Plan, ttl_ms: int | None, now: int | None) -> None:
        self._call(self._override_command(key, plan, ttl_ms, now))

    def get_override(self, key: str, now: int | None) -> str | None:
        return self._text(self._plain(["GET", key]))

    def delete_override(self, key: str) -> None:
        self._plain(self._override_command(key, None, None))

    def _plain(self, command: Command) -> Any:
        """Send a command that is not a script call. Blocks. Raises StoreError."""
        try:
            return self._send(command)
        except Exception as error:
            raise self._failed(error) from error

    def acquire(self, plan: Plan, keys: Sequence[str], now: int | None, cost: int,
                lease: str) -> Reply:  # fmt: skip
        command = self._acquire_command(plan, keys, now, cost, lease)
        reply = self._call(command)
        if reply[0] < 0:  # the acquire entry holds every algorithm: {-1, now} is unreadable
            raise self._unreadable(command)
        return reply

    def release(self, keys: Sequence[str], lease: str) -> int:
        return self._call(self._entry_command("release", keys, (lease,)))[0]

    def renew(self, keys: Sequence[str], now: int | None, lease: str,
              leases_ms: Sequence[int]) -> Reply:  # fmt: skip
        return self._call(self._renew_command(keys, now, lease, leases_ms))

    def settle(self, plan: Plan, keys: Sequence[str], now: int | None, acquired: int,
               charged: Sequence[int], actual: int, own: Plan | None = None,
               own_keys: Sequence[str] = ()) -> list[int]:  # fmt: skip
        command = self._settle_command(plan, keys, now, acquired, charged, actual, own, own_keys)
        return self._call(command)[1:]


class AsyncScriptStore(ScriptCalls, AsyncStore):
    """An async store that runs the Lua: says only how one command is sent (``_send``)."""

    async def _send(self, command: Command) -> Any:
        """Send one command, await its reply. Raises the client's errors."""
        raise NotImplementedError

    async def aevaluate(self, plan: Plan, keys: Sequence[str], now: int | None, cost: int,
                        charge: bool) -> Reply:  # fmt: skip
        command = self._command(plan, keys, now, cost, charge)
        reply = await self._call(command)
        if reply[0] < 0:  # as in ScriptStore.evaluate
            whole = self._whole(command)
            reply = await self._call(whole)
            if reply[0] < 0:
                raise self._unreadable(whole)
        return reply

    async def _call(self, command: Command) -> Reply:
        """As :meth:`ScriptStore._call`, awaiting the client."""
        try:
            try:
                raw = await self._send(command)
            except Exception as error:
                raw = await self._resend(self._recovery(command, error))
        except Exception as error:
            raise self._failed(error) from error
        return self._reply(raw)

    async def _resend(self, steps: Recovery) -> Any:
        reply: Any = None
        failure: Exception | None = None
        while True:
            try:
                command = steps.send(reply) if failure is None else steps.throw(failure)
            except StopIteration as done:
                return done.value
            try:
                reply, failure = await self._send(command), None
            except Exception as error:
                failure = error

    async def adelete(self, keys: Sequence[str]) -> None:
        await self._call(self._entry_command("forget", keys, ()))

    async def aset_override(self, key: str, plan: Plan, ttl_ms: int | None,
                            now: int | None) -> None:  # fmt: skip
        await self._call(self._override_command(key, plan, ttl_ms, now))

    async def aget_override(self, key: str, now: int | None) -> str | None:
        return self._text(await self._plain(["GET", key]))

    async def adelete_override(self, key: str) -> None:
        await self._plain(self._override_command(key, None, None))

    async def _plain(self, command: Command) -> Any:
        """As :meth:`ScriptStore._plain`, awaiting the client."""
        try:
            return await self._send(command)
        except Exception as error:
            raise self._failed(error) from error

    async def aacquire(self, plan: Plan, keys: Sequence[str], now: int | None, cost: int,
                       lease: str) -> Reply:  # fmt: skip
        command = self._acquire_command(plan, keys, now, cost, lease)
        reply = await self._call(command)
        if reply[0] < 0:  # as in ScriptStore.acquire
            raise self._unreadable(command)
        return reply

    async def arelease(self, keys: Sequence[str], lease: str) -> int:
        return (await self._call(self._entry_command("release", keys, (lease,))))[0]

    async def arenew(self, keys: Sequence[str], now: int | None, lease: str,
                     leases_ms: Sequence[int]) -> Reply:  # fmt: skip
        return await self._call(self._renew_command(keys, now, lease, leases_ms))

    async def asettle(self, plan: Plan, keys: Sequence[str], now: int | None, acquired: int,
                      charged: Sequence[int], actual: int, own: Plan | None = None,
                      own_keys: Sequence[str] = ()) -> list[int]:  # fmt: skip
        command = self._settle_command(plan, keys, now, acquired, charged, actual, own, own_keys)
        return (await self._call(command))[1:]
