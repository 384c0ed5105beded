"""The first thing to run: the FastAPI example, served for real, hit by a burst.

    pip install -e '.[web]' && python examples/demo.py

It starts ``examples/fastapi_app.py`` on the memory store under uvicorn on a free loopback
port, sends a burst of 13 requests with httpx, prints each status with its rate-limit headers
(the 200s turn into 429s with ``Retry-After``), stops the server and says how to run it.
"""

from __future__ import annotations

import socket
import sys
import threading
import time
from pathlib import Path

import httpx
import uvicorn

# This file's folder, so that the example imports the same way from any working directory.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from fastapi_app import create_app

import ratelimit as rl

BURST = 13


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(port: int) -> tuple[uvicorn.Server, threading.Thread]:
    config = uvicorn.Config(
        create_app(rl.MemoryStore()), host="127.0.0.1", port=port, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise SystemExit("the server did not start")
        time.sleep(0.02)
    return server, thread


def main() -> None:
    port = free_port()
    server, thread = serve(port)
    base = f"http://127.0.0.1:{port}"
    print(f"serving examples/fastapi_app.py on {base} (memory store, 10 requests/minute)\n")
    try:
        with httpx.Client(base_url=base, timeout=5, trust_env=False) as client:
            for i in range(1, BURST + 1):
                response = client.get("/")
                status = f"{response.status_code} {response.reason_phrase}"
                line = f"{i:>2}  {status:<22} RateLimit: {response.headers.get('RateLimit')}"
                if "Retry-After" in response.headers:
                    line += f"  Retry-After: {response.headers['Retry-After']}"
                print(line)
            print(f"\n    RateLimit-Policy: {response.headers.get('RateLimit-Policy')}")
            print(f"    429 body: {response.text}")
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    print(
        "\nRun the server for real:\n"
        "    uvicorn examples.fastapi_app:app --port 8000\n"
        "    REDIS_URL=redis://localhost:6379/0 uvicorn examples.fastapi_app:app --workers 4\n"
        "then: curl -i localhost:8000/"
    )


if __name__ == "__main__":
    main()
