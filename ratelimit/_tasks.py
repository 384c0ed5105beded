"""Tasks a limiter starts and does not await: an async ``on_event`` listener's call, a lease
release sent again after a cancellation. ``asyncio`` is imported by the caller, which runs on
an event loop; ``import ratelimit`` never imports it."""

from __future__ import annotations

from collections.abc import Coroutine
from functools import partial
from typing import TYPE_CHECKING, Any

from ratelimit._logging import logger

if TYPE_CHECKING:
    import asyncio

# Tasks running, kept until done: an event loop holds its tasks only weakly.
_RUNNING: set[asyncio.Task[Any]] = set()


def spawn(loop: asyncio.AbstractEventLoop, coroutine: Coroutine[Any, Any, Any],
          failure: str) -> None:  # fmt: skip
    """Run ``coroutine`` as a task of ``loop``, kept until it is done; an exception it ends
    with is logged (logger ``"ratelimit"``) after ``failure``. Never raises, never blocks."""
    task = loop.create_task(coroutine)
    _RUNNING.add(task)
    task.add_done_callback(partial(_done, failure))


def _done(failure: str, task: asyncio.Task[Any]) -> None:
    _RUNNING.discard(task)
    if not task.cancelled() and task.exception() is not None:
        logger().error("ratelimit: %s", failure, exc_info=task.exception())
