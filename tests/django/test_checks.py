"""The system checks: registered on import, run by Django's own ``run_checks``; the memory
store behind several workers (also logged at run time, where gunicorn runs no checks)."""

from __future__ import annotations

import logging
import sys
from typing import Any

import pytest
from django.core import checks
from django.http import HttpRequest, HttpResponse
from django.test import RequestFactory, override_settings

from ratelimit.django import _conf, limit
from ratelimit.django.checks import check_settings, worker_count


def ratelimit_checks() -> list[tuple[str, str]]:
    return [(m.id, m.msg) for m in checks.run_checks(tags=["ratelimit"])]


@pytest.fixture
def one_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["manage.py", "check"])
    monkeypatch.delenv("WEB_CONCURRENCY", raising=False)
    monkeypatch.delenv("GUNICORN_CMD_ARGS", raising=False)


def test_registered_on_import() -> None:
    assert check_settings in checks.registry.registry.get_checks()


@pytest.mark.usefixtures("one_worker")
def test_good_settings_pass() -> None:
    with override_settings(RATELIMIT={"STORE": "redis://127.0.0.1:1/0", "DEFAULT": "10/s"}):
        assert ratelimit_checks() == []
    assert ratelimit_checks() == []  # the defaults


@pytest.mark.usefixtures("one_worker")
def test_every_unknown_key_is_an_error() -> None:
    with override_settings(RATELIMIT={"STOER": "memory://", "DEFALT": "1/s", "PREFIX": "p"}):
        found = ratelimit_checks()
    assert [i for i, _ in found] == ["ratelimit.E001", "ratelimit.E001"]
    assert "'STOER'; did you mean 'STORE'?" in found[0][1]
    assert "'DEFALT'; did you mean 'DEFAULT'?" in found[1][1]


@pytest.mark.usefixtures("one_worker")
@pytest.mark.parametrize(
    ("config", "text"),
    [({"DEFAULT": "10 per fortnight"}, "unknown time unit 'fortnight'"),
     ({"STORE": "memcached://x"}, "RATELIMIT['STORE']"),
     ({"TRUSTED_PROXIES": ["proxy.local"]}, "'proxy.local' is not an IP address")],
)  # fmt: skip
def test_bad_value_is_an_error(config: dict[str, Any], text: str) -> None:
    with override_settings(RATELIMIT=config):
        found = ratelimit_checks()
    assert len(found) == 1 and found[0][0] == "ratelimit.E002"
    assert text in found[0][1]


@pytest.mark.usefixtures("one_worker")
def test_throttle_rate_that_does_not_parse_is_an_error() -> None:
    rates = {"ok": "5 per minute", "off": None, "bad": "5/fortnight"}
    rest = {"DEFAULT_THROTTLE_CLASSES": ["ratelimit.django.Throttle"],
            "DEFAULT_THROTTLE_RATES": rates}  # fmt: skip
    with override_settings(REST_FRAMEWORK=rest):
        found = ratelimit_checks()
    assert [i for i, _ in found] == ["ratelimit.E003"]
    assert "DEFAULT_THROTTLE_RATES['bad']" in found[0][1]


@pytest.mark.parametrize(
    ("argv", "environ", "workers"),
    [
        (["manage.py", "runserver"], {}, 1),
        (["gunicorn", "app.wsgi", "--workers", "4"], {}, 4),
        (["gunicorn", "app.wsgi", "-w", "3"], {}, 3),
        (["gunicorn", "app.wsgi", "-w5"], {}, 5),
        (["gunicorn", "app.wsgi", "--workers=6"], {}, 6),
        (["uvicorn", "app.asgi:application", "--workers", "2"], {}, 2),
        (["uwsgi", "--processes", "8"], {}, 8),
        (["gunicorn", "app.wsgi"], {"WEB_CONCURRENCY": "3"}, 3),
        (["gunicorn", "app.wsgi"], {"GUNICORN_CMD_ARGS": "--bind :80 --workers 4"}, 4),
        (["gunicorn", "app.wsgi"], {"GUNICORN_CMD_ARGS": "--name 'unbalanced"}, 1),
    ],
)
def test_worker_count(argv: list[str], environ: dict[str, str], workers: int) -> None:
    assert worker_count(argv, environ) == workers


def test_memory_store_behind_several_workers_is_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["gunicorn", "proj.wsgi", "--workers", "4"])
    monkeypatch.delenv("WEB_CONCURRENCY", raising=False)
    found = ratelimit_checks()
    assert [i for i, _ in found] == ["ratelimit.W001"]
    assert "4 worker processes" in found[0][1]
    with override_settings(RATELIMIT={"STORE": "redis://127.0.0.1:1/0"}):
        assert ratelimit_checks() == []  # a shared store: nothing to say


def test_memory_store_behind_several_workers_is_logged_once_at_run_time(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    @limit("5/minute")
    def view(request: HttpRequest) -> HttpResponse:
        return HttpResponse("ok")

    monkeypatch.setattr(sys, "argv", ["gunicorn", "proj.wsgi", "-w", "4"])
    monkeypatch.setattr(_conf, "_warned_workers", False)
    caplog.set_level(logging.WARNING, logger="ratelimit")
    for _ in range(2):
        view(RequestFactory().get("/"))
        _conf.reset(setting="RATELIMIT")
    messages = [r.getMessage() for r in caplog.records if "ratelimit.W001" in r.getMessage()]
    assert len(messages) == 1 and "4 worker processes" in messages[0]
