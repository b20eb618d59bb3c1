"""Namespaces: registration, matching, path converters."""

from __future__ import annotations

import pytest
from django.test import override_settings

from trio_djws import BaseWSClass, ConfigurationError, Namespace
from trio_djws.routing import registry


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
