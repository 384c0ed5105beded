"""Shared helpers of the web integration tests: a stepping clock and a raw ASGI driver."""

from __future__ import annotations

import warnings
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

import pytest

from tests.support import Clock

# Starlette 1.x warns, on importing its TestClient, that it prefers the httpx2 package over
# httpx. The warning is about the test client's transport, not about our code; import it once
# here so that `filterwarnings = error` does not turn it into a failure of whichever test
# happens to import it first.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=r"Using `httpx` with `starlette.testclient`")
    import starlette.testclient  # noqa: F401

Message = MutableMapping[str, Any]
ASGIApp = Callable[[MutableMapping[str, Any], Any, Any], Awaitable[None]]


@pytest.fixture
def clock() -> Clock:
    return Clock()


def http_scope(
    path: str = "/",
    method: str = "GET",
    headers: Iterable[tuple[str, str]] = (),
    client: tuple[str, int] | None = ("203.0.113.7", 50000),
    **extra: Any,
) -> dict[str, Any]:
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers],
        "client": client,
        "server": ("testserver", 80),
    }
    scope.update(extra)
    return scope


def websocket_scope(path: str = "/ws", extensions: dict[str, Any] | None = None,
                    **extra: Any) -> dict[str, Any]:  # fmt: skip
    scope = http_scope(path, **extra)
    scope["type"] = "websocket"
    scope["scheme"] = "ws"
    del scope["method"]
    scope["subprotocols"] = []
    if extensions is not None:
        scope["extensions"] = extensions
    return scope


async def run_asgi(
    app: ASGIApp, scope: dict[str, Any], incoming: Iterable[Message] = ()
) -> list[Message]:
    """Call ``app`` once with ``scope``; returns every message it sent."""
    queue = list(incoming) or [{"type": "http.request", "body": b"", "more_body": False}]
    sent: list[Message] = []

    async def receive() -> Message:
        if queue:
            return queue.pop(0)
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def header_map(message: Message) -> dict[str, str]:
    """The headers of a start message as a dict of text (last value wins)."""
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in message.get("headers", [])}
