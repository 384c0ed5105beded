"""A Flask app behind the WSGI middleware, for gunicorn in ``test_e2e.py``: ``/login`` limited
to 2 per minute by a rule, served at the root and again under ``/api`` through Werkzeug's
``DispatcherMiddleware`` (each app with its own limit)."""

from __future__ import annotations

from flask import Flask
from werkzeug.middleware.dispatcher import DispatcherMiddleware

from ratelimit.wsgi import Rule, WSGIRateLimitMiddleware


def create_app() -> Flask:
    app = Flask(__name__)

    @app.route("/login", methods=["GET", "POST"])
    def login() -> str:
        return "login"

    @app.route("/café")
    def cafe() -> str:
        return "café"

    rules = [Rule("/login", "2/minute"), Rule("/café", "2/minute")]
    app.wsgi_app = WSGIRateLimitMiddleware(app.wsgi_app, rules=rules)  # type: ignore[method-assign]
    return app


app = DispatcherMiddleware(create_app(), {"/api": create_app()})
