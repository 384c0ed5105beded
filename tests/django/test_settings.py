"""The RATELIMIT dict: defaults, bad and unknown entries (a clear error at the first request,
every request until fixed), and Django's ``setting_changed`` (``override_settings``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.http import HttpRequest, HttpResponse
from django.test import RequestFactory, override_settings

import ratelimit as rl
from ratelimit.django import _conf, limit

ROOT = Path(__file__).resolve().parents[2]
rf = RequestFactory()


@limit("2/minute")
def view(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok")


def test_defaults_need_no_settings() -> None:
    state = _conf.state()
    assert state.is_memory and state.enabled and state.default is None
    assert state.prefix == "ratelimit" and state.on_error == "allow"
    assert state.renderer.modes == ("ietf",)


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ({"STOER": "memory://"}, r"unknown RATELIMIT setting 'STOER'; did you mean 'STORE'\?"),
        ({"store": "memory://"}, r"unknown RATELIMIT setting 'store'"),
        ({"STORE": "memcached://x"}, r"RATELIMIT\['STORE'\] must be 'memory://' or a redis"),
        ({"STORE": None}, r"RATELIMIT\['STORE'\]"),
        ({"DEFAULT": "100 per fortnight"}, r"RATELIMIT\['DEFAULT'\]: unknown time unit"),
        ({"ON_ERROR": "ignore"}, r"on_error must be 'allow', 'deny' or 'raise', got 'ignore'"),
        ({"PREFIX": "a{b}"}, r"prefix must be non-empty text"),
        ({"HEADERS": "ietf-11"}, r"RATELIMIT\['HEADERS'\]: unknown headers mode 'ietf-11'"),
        ({"TRUSTED_PROXIES": ["10.0.0.0/33"]}, r"RATELIMIT\['TRUSTED_PROXIES'\]: trusted proxy"),
        ({"KEY": "no.such.module.key"}, r"RATELIMIT\['KEY'\]: cannot import 'no.such.module.key'"),
        ({"KEY": 42}, r"RATELIMIT\['KEY'\] must be a callable or its dotted path, got 42"),
        ({"VIEW": "os.sep"}, r"RATELIMIT\['VIEW'\] must be a callable"),
        ({"EXEMPT": ["health"]}, r"RATELIMIT\['EXEMPT'\]: a path pattern must start with '/'"),
    ],
)
def test_bad_entry_is_an_error_at_the_first_request_and_after(config: Any, match: str) -> None:
    with override_settings(RATELIMIT=config):
        for _ in range(2):
            with pytest.raises(rl.ConfigurationError, match=match):
                view(rf.get("/"))
    assert view(rf.get("/")).status_code == 200  # fixed: works again


def test_ratelimit_must_be_a_dict() -> None:
    with (
        override_settings(RATELIMIT=["memory://"]),
        pytest.raises(rl.ConfigurationError, match=r"settings\.RATELIMIT must be a dict"),
    ):
        view(rf.get("/"))


def test_setting_changed_builds_a_new_state_and_store() -> None:
    before = _conf.state()
    assert [view(rf.get("/")).status_code for _ in range(3)] == [200, 200, 429]
    with override_settings(RATELIMIT={"PREFIX": "other", "HEADERS": "draft-6"}):
        during = _conf.state()
        assert during is not before and during.prefix == "other"
        response = view(rf.get("/"))  # a new store: a new count
        assert response.status_code == 200
        assert response["RateLimit-Remaining"] == "1"
    after = _conf.state()
    assert after is not during and after.prefix == "ratelimit"


def test_unrelated_setting_changes_keep_the_state() -> None:
    before = _conf.state()
    with override_settings(USE_I18N=False):
        assert _conf.state() is before


def test_importing_ratelimit_imports_no_django_and_the_package_is_found() -> None:
    code = (
        "import importlib.util, sys\n"
        "import ratelimit\n"
        "assert importlib.util.find_spec('ratelimit.django') is not None\n"
        "assert not [m for m in sys.modules if m.split('.')[0] in ('django', 'rest_framework')]\n"
        "import ratelimit.django\n"
        "assert 'rest_framework' not in sys.modules, 'DRF loads with Throttle only'\n"
        "from django.conf import settings\n"
        "settings.configure()\n"
        "from ratelimit.django import Throttle\n"
        "assert 'rest_framework' in sys.modules\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
