"""System checks (trio_djws.checks): each id triggered by a settings override."""

from __future__ import annotations

import pytest
from django.core import checks
from django.test import override_settings

SESSION = "django.contrib.sessions.middleware.SessionMiddleware"
AUTH = "django.contrib.auth.middleware.AuthenticationMiddleware"


def messages(check_id: str) -> list[checks.CheckMessage]:
    return [m for m in checks.run_checks(tags=["trio_djws"]) if m.id == check_id]


def test_the_test_settings_pass_every_check() -> None:
    assert checks.run_checks(tags=["trio_djws"]) == []


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("WEBSOCKET_MIDDLEWARE", "django.contrib.sessions.middleware.SessionMiddleware"),
        ("WEBSOCKET_MIDDLEWARE", [SESSION, 3]),
        ("WEBSOCKET_ACCEPT_ALL", "yes"),
        ("WEBSOCKET_VIEW_THREADS", 0),
        ("WEBSOCKET_COMPRESSION", "gzip"),
        ("WEBSOCKET_COMPRESSION", True),
    ],
)
def test_new_settings_have_type_checks(setting: str, value: object) -> None:
    with override_settings(**{setting: value}):
        found = messages("trio_djws.E001")
    assert len(found) == 1
    assert setting in found[0].msg
    assert found[0].hint is not None and setting in found[0].hint


@pytest.mark.parametrize(
    "overrides",
    [
        {"WEBSOCKET_ALLOWED_ORIGINS": []},
        {"WEBSOCKET_ALLOWED_ORIGINS": ["example.com", "https://example.com/app/"]},
        {"ALLOWED_HOSTS": [], "DEBUG": False},
    ],
)
def test_origins_that_reject_every_browser_are_e041(overrides: dict[str, object]) -> None:
    with override_settings(**overrides):
        [error] = messages("trio_djws.E041")
    assert "every browser" in error.msg
    assert "ALLOWED" in (error.hint or "")


@override_settings(WEBSOCKET_ALLOWED_ORIGINS=["https://example.com", "example.org"])
def test_an_origin_entry_that_never_matches_is_w041() -> None:
    [warning] = messages("trio_djws.W041")
    assert "'example.org'" in warning.msg
    assert messages("trio_djws.E041") == []


@override_settings(ALLOWED_HOSTS=[], DEBUG=True)
def test_debug_defaults_allow_localhost_browsers() -> None:
    assert messages("trio_djws.E041") == []


@override_settings(
    WEBSOCKET_MIDDLEWARE=[
        SESSION,
        AUTH,
        "django.contrib.auth.middleware.SessionAuthenticationMiddleware",
    ]
)
def test_removed_middleware_is_e042_with_a_hint() -> None:
    [error] = messages("trio_djws.E042")
    assert "SessionAuthenticationMiddleware" in error.msg
    assert "Django 2.0" in (error.hint or "")
    assert "WEBSOCKET_MIDDLEWARE" in (error.hint or "")


@override_settings(WEBSOCKET_MIDDLEWARE=[SESSION, "myproject.nowhere.Middleware"])
def test_middleware_that_does_not_import_is_e043() -> None:
    [error] = messages("trio_djws.E043")
    assert "myproject.nowhere.Middleware" in error.msg


@pytest.mark.parametrize("middleware", [[AUTH], [AUTH, SESSION]])
def test_auth_without_session_before_it_is_e044(middleware: list[str]) -> None:
    with override_settings(WEBSOCKET_MIDDLEWARE=middleware):
        [error] = messages("trio_djws.E044")
    assert "SessionMiddleware" in (error.hint or "")


@override_settings(WEBSOCKET_FACTORY_CLASS="dwebsocket.backends.uwsgi.factory.X")
def test_unknown_setting_is_w040() -> None:
    [warning] = messages("trio_djws.W040")
    assert "WEBSOCKET_FACTORY_CLASS" in warning.msg
    assert "dwebsocket" in (warning.hint or "")


def test_check_ids_are_the_documented_ones() -> None:
    import inspect
    import re

    import trio_djws.checks
    import trio_djws.project

    # The settings' checks and the project-wiring checks, both registered by apps.ready().
    source = inspect.getsource(trio_djws.checks) + inspect.getsource(trio_djws.project)
    ids = re.findall(r'id="(trio_djws\.[EW]\d{3})"', source)
    assert sorted(set(ids)) == [
        "trio_djws.E001",
        "trio_djws.E010",
        "trio_djws.E030",
        "trio_djws.E031",
        "trio_djws.E041",
        "trio_djws.E042",
        "trio_djws.E043",
        "trio_djws.E044",
        "trio_djws.E050",
        "trio_djws.E051",
        "trio_djws.E060",
        "trio_djws.E070",
        "trio_djws.E091",
        "trio_djws.E093",
        "trio_djws.E094",
        "trio_djws.W040",
        "trio_djws.W041",
        "trio_djws.W051",
        "trio_djws.W070",
        "trio_djws.W071",
        "trio_djws.W072",
        "trio_djws.W080",
        "trio_djws.W090",
        "trio_djws.W095",
    ]


def test_compression_with_the_trio_websocket_engine_is_a_warning() -> None:
    with override_settings(WEBSOCKET_COMPRESSION="deflate", WEBSOCKET_ENGINE="trio_websocket"):
        [warning] = messages("trio_djws.W080")
    assert "WEBSOCKET_COMPRESSION" in warning.msg
    assert "WEBSOCKET_ENGINE" in (warning.hint or "")
    with override_settings(WEBSOCKET_COMPRESSION="deflate"):
        assert messages("trio_djws.W080") == []
