"""A Flask app factory with per-view limits and an app-wide default.

Run it:   gunicorn -w 4 'examples.flask_app:create_app()' -b 127.0.0.1:8000
          (set RATELIMIT_STORE=redis://localhost:6379/0 so the four workers share limits;
           on the memory store each worker counts on its own)
          or: flask --app examples.flask_app run

- every request: 20 per minute per client (``RATELIMIT_DEFAULT``), except ``/health``;
- ``POST /login``: 5 per minute per client, on top;
- ``/items/<item_id>``: every item shares the view's limit;
- ``/stream`` streams its body, and async views work as sync ones do.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

from flask import Flask, Response, stream_with_context

from ratelimit.flask import FlaskRateLimit

limits = FlaskRateLimit()


def create_app(config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config["RATELIMIT_DEFAULT"] = "20/minute"
    app.config["RATELIMIT_STORE"] = os.environ.get("RATELIMIT_STORE")  # a redis:// URL, or None
    # text from the environment, such as "10.0.0.0/8, 192.168.0.0/16", is read as a list
    app.config["RATELIMIT_TRUSTED_PROXIES"] = os.environ.get("TRUSTED_PROXIES", "")
    app.config.update(config or {})
    limits.init_app(app)

    @app.get("/")
    def index() -> dict[str, str]:
        return {"hello": "world"}

    @app.get("/health")
    @limits.exempt
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/login")
    @limits.limit("5/minute")
    def login() -> dict[str, str]:
        return {"token": "not-a-real-token"}

    @app.get("/items/<int:item_id>")
    @limits.limit("10/minute")
    async def item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    @app.get("/stream")
    def stream() -> Response:
        def lines() -> Iterator[str]:
            for i in range(5):
                yield f"line {i}\n"
                time.sleep(0.05)  # a slow producer: the client sees each line arrive

        return Response(stream_with_context(lines()), mimetype="text/plain")

    return app


app = create_app()
