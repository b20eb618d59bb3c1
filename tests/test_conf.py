"""Settings: defaults, validation and system checks."""

from __future__ import annotations

import pytest
from django.core import checks
from django.test import override_settings

from trio_djws import ConfigurationError
from trio_djws.conf import Settings, get_settings


def test_defaults() -> None:
    assert get_settings() == Settings(
        handlers=("tests.handlers", "tests.auth_handlers", "tests.hardening_handlers")
    )
    assert get_settings().send_queue_size == 64
    assert get_settings().max_message_size == 1024 * 1024


@override_settings(WEBSOCKET_SEND_QUEUE_SIZE=0)
def test_bad_setting_names_itself() -> None:
    with pytest.raises(
        ConfigurationError,
        match=r"WEBSOCKET_SEND_QUEUE_SIZE must be an int >= 1 \(messages\), got 0",
    ):
        get_settings()


@override_settings(WEBSOCKET_SEND_TIMEOUT="10")
def test_bad_setting_is_a_system_check_error() -> None:
    errors = [e for e in checks.run_checks() if e.id == "trio_djws.E001"]
    assert len(errors) == 1
    assert "WEBSOCKET_SEND_TIMEOUT" in errors[0].msg
    assert errors[0].hint is not None


@override_settings(WEBSOCKET_CLOSE_TIMEOUT=2.5)
def test_override_settings_is_seen() -> None:
    assert get_settings().close_timeout == 2.5


@override_settings(WEBSOCKET_HANDLERS=["tests.handlers", "tests.broken_handlers"])
def test_handler_module_that_fails_to_import_is_a_check_error() -> None:
    errors = [e for e in checks.run_checks() if e.id == "trio_djws.E010"]
    assert len(errors) == 1
    assert "tests.broken_handlers" in errors[0].msg
    assert "broken on purpose" in errors[0].msg


@override_settings(WEBSOCKET_HANDLERS=["tests.broken_handlers"])
def test_autodiscover_raises_for_a_broken_handler_module() -> None:
    from trio_djws.routing import autodiscover, registry

    with pytest.raises(RuntimeError, match="broken on purpose"):
        autodiscover()
    assert "tests.broken_handlers" in registry.import_errors
