"""Django system checks for the mistakes users make with rate limits (``manage.py check``,
``runserver`` and ``migrate`` run them; registered when :mod:`ratelimit.django` is imported).

========================  ===================================================================
``ratelimit.E001``        ``RATELIMIT`` is not a dict, or holds a key that is no setting
``ratelimit.E002``        a ``RATELIMIT`` value is bad (a limit that does not parse, a store
                          URL, ``ON_ERROR``, ``HEADERS``, ``TRUSTED_PROXIES``, ``KEY``, ...)
``ratelimit.E003``        a DRF ``DEFAULT_THROTTLE_RATES`` rate that does not parse
``ratelimit.W001``        the memory store behind several worker processes: each counts alone
``ratelimit.W002``        (logged at request time, once) ``X-Forwarded-For`` from a private
                          address while ``TRUSTED_PROXIES`` is empty
========================  ===================================================================

W001 is also logged once per process at the first request, since servers such as gunicorn
do not run checks.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from django.conf import settings
from django.core import checks

from ratelimit.django._conf import State, policies_of, unknown_keys
from ratelimit.errors import ConfigurationError

__all__ = ["check_settings", "worker_count"]

_WORKER_FLAGS = ("-w", "--workers", "--processes", "-p")


def _flag_count(args: Sequence[str]) -> int:
    """The largest ``--workers N`` / ``-w N`` / ``--processes=N`` in ``args``, or 0."""
    found = 0
    for i, arg in enumerate(args):
        value: str | None = None
        name, eq, rest = arg.partition("=")
        if eq and name in _WORKER_FLAGS:
            value = rest
        elif arg in _WORKER_FLAGS and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith("-w") and arg[2:].isdigit():
            value = arg[2:]
        if value is not None and value.isdigit():
            found = max(found, int(value))
    return found


def worker_count(argv: Sequence[str] | None = None,
                 environ: Mapping[str, str] | None = None) -> int:  # fmt: skip
    """How many worker processes this server runs, as far as its command line
    (gunicorn, uvicorn, hypercorn, uWSGI, daphne), ``GUNICORN_CMD_ARGS`` and
    ``WEB_CONCURRENCY`` tell; 1 when nothing says."""
    argv = sys.argv if argv is None else argv
    environ = os.environ if environ is None else environ
    count = _flag_count(list(argv[1:]))
    with contextlib.suppress(ValueError):  # unbalanced quotes: nothing to read
        count = max(count, _flag_count(shlex.split(environ.get("GUNICORN_CMD_ARGS", ""))))
    concurrency = environ.get("WEB_CONCURRENCY", "")
    if concurrency.isdigit():
        count = max(count, int(concurrency))
    return max(count, 1)


def memory_warning(workers: int) -> str:
    return (
        f"RATELIMIT['STORE'] is the in-process memory store, but this server runs {workers} "
        "worker processes: each counts on its own, so clients get up to that many times "
        "their limit"
    )


def check_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """The ratelimit checks of the current settings."""
    config = getattr(settings, "RATELIMIT", {})
    errors: list[checks.CheckMessage] = []
    if not isinstance(config, Mapping):
        return [checks.Error(f"settings.RATELIMIT must be a dict, got {config!r}",
                             id="ratelimit.E001")]  # fmt: skip
    for message in unknown_keys(config):
        errors.append(checks.Error(message, id="ratelimit.E001"))
    known = {k: v for k, v in config.items() if not unknown_keys({k: v})}
    state: State | None = None
    try:
        state = State(known)
    except ConfigurationError as error:
        errors.append(checks.Error(str(error), id="ratelimit.E002"))
    errors += _throttle_rates()
    if state is not None and state.is_memory:
        workers = worker_count()
        if workers > 1:
            errors.append(
                checks.Warning(
                    memory_warning(workers),
                    hint="Set RATELIMIT['STORE'] = 'redis://...' so every worker shares one count.",
                    id="ratelimit.W001",
                )
            )
    return errors


def _throttle_rates() -> list[checks.CheckMessage]:
    framework = getattr(settings, "REST_FRAMEWORK", None)
    if not isinstance(framework, Mapping):
        return []
    rates = framework.get("DEFAULT_THROTTLE_RATES") or {}
    classes = framework.get("DEFAULT_THROTTLE_CLASSES") or ()
    names = [c if isinstance(c, str) else str(getattr(c, "__module__", "")) for c in classes]
    ours = any(n.startswith("ratelimit.django") for n in names)
    if not ours or not isinstance(rates, Mapping):
        return []
    errors: list[checks.CheckMessage] = []
    for scope, rate in rates.items():
        if rate is None:
            continue
        try:
            policies_of(rate, f"DEFAULT_THROTTLE_RATES[{scope!r}]")
        except ConfigurationError as error:
            errors.append(checks.Error(str(error), id="ratelimit.E003"))
    return errors
