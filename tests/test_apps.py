"""The ``trio_djws`` app (trio_djws/apps.py): required in ``INSTALLED_APPS``, since its
``ready()`` registers the features' routing hooks; every entry point says so by name."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command
from django.test import override_settings

from trio_djws.asgi import get_asgi_application
from trio_djws.management.commands import (
    runwebsocket,
    serve,
    websocket_publish,
    websocket_routes,
)
from trio_djws.routing import autodiscover
from trio_djws.servers import serve as serve_process
from trio_djws.servers.standalone import serve_sockets
from trio_djws.servers.wsgi import get_wsgi_application, server_thread

FIX = r'"trio_djws" in INSTALLED_APPS'


@pytest.fixture
def without_the_app() -> Iterator[None]:
    apps = [app for app in settings.INSTALLED_APPS if app != "trio_djws"]
    with override_settings(INSTALLED_APPS=apps):
        yield


@pytest.mark.usefixtures("without_the_app")
def test_get_asgi_application_names_the_missing_app() -> None:
    with pytest.raises(ImproperlyConfigured, match=FIX):
        get_asgi_application()


@pytest.mark.usefixtures("without_the_app")
def test_autodiscover_names_the_missing_app() -> None:
    with pytest.raises(ImproperlyConfigured, match=FIX):
        autodiscover()


@pytest.mark.usefixtures("without_the_app")
async def test_the_standalone_server_names_the_missing_app() -> None:
    with pytest.raises(ImproperlyConfigured, match=FIX):
        await serve_sockets([])


@pytest.mark.usefixtures("without_the_app")
def test_the_serve_process_names_the_missing_app() -> None:
    with pytest.raises(ImproperlyConfigured, match=FIX):
        serve_process.run([])


@pytest.mark.usefixtures("without_the_app")
def test_the_wsgi_side_thread_server_names_the_missing_app_and_starts_no_thread() -> None:
    with pytest.raises(ImproperlyConfigured, match=FIX):
        get_wsgi_application()
    assert server_thread() is None


@pytest.mark.usefixtures("without_the_app")
@pytest.mark.parametrize(
    ("command", "args"),
    [
        (serve.Command(), ["--bind", "127.0.0.1:0"]),
        (runwebsocket.Command(), ["--bind", "127.0.0.1:0"]),
        (websocket_publish.Command(), ["lobby", "hello"]),
        (websocket_routes.Command(), []),
    ],
    ids=["serve", "runwebsocket", "websocket_publish", "websocket_routes"],
)
def test_the_commands_name_the_missing_app(command: object, args: list[str]) -> None:
    with pytest.raises(CommandError, match=FIX):
        call_command(command, *args)


def test_ready_registered_the_views_fallback_and_the_signals_hook() -> None:
    from trio_djws.routing import registry
    from trio_djws.views import resolve_fallback

    assert resolve_fallback in registry.fallbacks()
    assert [hook.__qualname__ for hook in registry.discovery_hooks()][:1] == ["_discover_signals"]
