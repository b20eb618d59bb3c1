"""The pytest plugin (pytest_trio_djws): its fixtures here, its lazy loading, and the documented
set-up and test run verbatim in a fresh startproject site."""

from __future__ import annotations

import importlib.metadata
import pathlib
from collections.abc import Callable

import pytest
from trio_websocket import open_websocket_url

from tests.sites import add_app, doc_files, run, startproject, write
from trio_djws.testing import HandshakeRejected, LiveServer, WebSocketTestClient


def test_the_plugin_is_a_pytest11_entry_point() -> None:
    [entry] = importlib.metadata.entry_points(group="pytest11", name="trio_djws")
    assert entry.value == "pytest_trio_djws"


def test_loading_the_plugin_imports_neither_django_nor_pytest_trio(tmp_path: pathlib.Path) -> None:
    # A project without Django settings and without pytest-django or pytest-trio loaded: the
    # plugin is active and its import pulled in none of them.
    (tmp_path / "test_unrelated.py").write_text(
        "import sys\n\n"
        "def test_unrelated(request):\n"
        "    assert request.config.pluginmanager.has_plugin('trio_djws')\n"
        "    loaded = {'django', 'trio', 'pytest_trio', 'trio_djws'} & set(sys.modules)\n"
        "    assert not loaded, loaded\n"
    )
    done = run(
        tmp_path, "-m", "pytest", "-p", "no:django", "-p", "no:trio", "-p", "no:anyio", check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout


async def test_websocket_client_fixture_echoes(
    websocket_client: Callable[..., WebSocketTestClient],
) -> None:
    async with websocket_client("/echo/") as client:
        await client.send("hi")
        assert await client.receive() == "hi"


async def test_websocket_client_fixture_reports_a_refused_handshake(
    websocket_client: Callable[..., WebSocketTestClient],
) -> None:
    with pytest.raises(HandshakeRejected) as refused:
        async with websocket_client("/reject/"):
            pass
    assert refused.value.status == 403


async def test_websocket_live_server_fixture_serves_a_real_client(
    websocket_live_server: LiveServer,
) -> None:
    assert websocket_live_server.url.startswith("http://127.0.0.1:")
    async with open_websocket_url(f"{websocket_live_server.ws_url}/echo/") as ws:
        await ws.send_message("hi")
        assert await ws.get_message() == "hi"


def test_the_documented_test_passes_in_a_fresh_startproject_site(tmp_path: pathlib.Path) -> None:
    # The install guide's steps in order (its settings.py excerpt as add_app), then the
    # testing guide's pytest.ini and test file, written verbatim from the pages.
    site = startproject(tmp_path / "site")
    run(site, "manage.py", "startapp", "chat")
    add_app(site, "chat")
    install = doc_files("howto/install.md")
    install.pop("mysite/settings.py")  # an excerpt: applied by startproject() and add_app()
    testing = doc_files("howto/testing.md")
    assert set(install) == {"mysite/asgi.py", "chat/websockets.py"}
    assert set(testing) == {"pytest.ini", "tests/test_echo.py"}
    for name, text in {**install, **testing}.items():
        write(site, name, text)
    done = run(site, "-m", "pytest", "-q", "-p", "no:cacheprovider", check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout, done.stdout
