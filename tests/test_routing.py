"""Namespaces: registration, matching, path converters."""

from __future__ import annotations

import pytest
from django.test import override_settings

import tests.handlers  # noqa: F401  (registers /echo/, /items/<int:pk>/ ...)
from tests.scopes import websocket_scope
from trio_djws import BaseWSClass, ConfigurationError, Namespace
from trio_djws.routing import Refusal, autodiscover, registry


def test_two_handlers_on_one_path_is_an_error_naming_both() -> None:
    with pytest.raises(
        ConfigurationError, match=r"'/echo/' is registered twice: .*Echo and .*Other"
    ):

        @Namespace("/echo/")
        class Other(BaseWSClass):
            pass


def test_registering_the_same_class_again_is_harmless() -> None:
    from tests.handlers import Echo

    Namespace("/echo/")(Echo)
    assert registry.resolve("/echo/") is not None


def test_namespace_must_decorate_a_handler_class() -> None:
    with pytest.raises(TypeError, match="BaseWSClass subclass"):
        Namespace("/x/")(object)  # type: ignore[type-var]
    with pytest.raises(ValueError, match="starting with '/'"):
        Namespace("x/")


def test_exact_match_and_converters() -> None:
    assert registry.resolve("/echo") is None
    assert registry.resolve("/echo/extra/") is None
    found = registry.resolve("/items/7/")
    assert found is not None and found[1] == {"pk": 7}
    assert registry.resolve("/items/seven/") is None


@override_settings(WEBSOCKET_BASE_URI="/ws")
def test_base_uri_prefixes_every_namespace() -> None:
    assert registry.resolve("/echo/") is None
    found = registry.resolve("/ws/echo/")
    assert found is not None and found[0].handler.__name__ == "Echo"


def test_a_namespace_wins_over_the_fallback_resolvers() -> None:
    found = registry.resolve_scope(websocket_scope("/items/7/"))
    assert isinstance(found, tuple) and found[0].__name__ == "Item" and found[1] == {"pk": 7}


def test_the_views_fallback_is_registered_by_the_app_and_answers_unmatched_paths() -> None:
    # AppConfig.ready() registered trio_djws.views.resolve_fallback: routing names no feature.
    from trio_djws.views import resolve_fallback

    assert resolve_fallback in registry.fallbacks()
    assert registry.resolve_scope(websocket_scope("/no/such/path/")) is None


def test_a_fallback_refusal_carries_its_status_and_cause() -> None:
    found = registry.resolve_scope(websocket_scope("/dws/plain/"))
    assert isinstance(found, Refusal)
    assert found.status == 400 and "does not accept WebSockets" in found.why


_ran: list[str] = []


def _first_hook() -> None:
    _ran.append("first")


def _second_hook() -> None:
    _ran.append("second")


def test_autodiscover_runs_the_discovery_hooks_once_each_in_order() -> None:
    _ran.clear()
    for hook in (_first_hook, _second_hook, _first_hook):
        registry.add_discovery(hook)  # the second _first_hook is ignored
    autodiscover()
    assert _ran == ["first", "second"]
    assert registry.discovery_hooks()[-2:] == [_first_hook, _second_hook]
    # AppConfig.ready()'s signals hook ran too: the endpoint is at WEBSOCKET_SIGNALS_PATH.
    found = registry.resolve("/ws/signals/")
    assert found is not None and found[0].handler.__name__ == "SignalHandler"
