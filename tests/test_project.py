"""Project wiring (trio_djws.project): a fresh startproject site's mistakes are named with
their fix, by ``manage.py check`` and by Hypercorn's trio worker at start-up."""

from __future__ import annotations

import logging
import pathlib

import httpx
import pytest
from django.core import checks
from django.test import override_settings

from tests.sites import Process, add_app, run, startproject, write
from trio_djws.asgi import get_asgi_application
from trio_djws.testing import HandshakeRejected, WebSocketTestClient

FIX = "from trio_djws.asgi import get_asgi_application"
ECHO = """\
from trio_djws import BaseWSClass, Namespace


@Namespace("/echo/")
class Echo(BaseWSClass):
    async def on_message(self, websocket, message):
        await websocket.send(message)
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return startproject(tmp_path_factory.mktemp("project") / "site")


def test_check_names_the_asgi_fix_for_startprojects_asgi_py(site: pathlib.Path) -> None:
    done = run(site, "manage.py", "check", check=False)
    assert "trio_djws.W070" in done.stderr
    assert "mysite/asgi.py" in done.stderr
    assert FIX in done.stderr


def test_plain_hypercorn_on_startprojects_asgi_py_stops_naming_the_fix(
    site: pathlib.Path,
) -> None:
    args = ["-m", "hypercorn", "--worker-class", "trio", "--bind", "127.0.0.1:0"]
    with Process(site, *args, "mysite.asgi:application") as server:
        server.wait()  # Hypercorn exits (with status 0) once its worker process failed
    assert "ImproperlyConfigured" in server.text
    assert FIX in server.text
    assert server.text.count(FIX) == 1  # once per process, not per request


def test_the_named_fix_makes_plain_hypercorn_serve(tmp_path: pathlib.Path) -> None:
    site = startproject(tmp_path / "site")
    asgi = site / "mysite" / "asgi.py"
    asgi.write_text(
        asgi.read_text().replace("from django.core.asgi import get_asgi_application", FIX)
    )
    assert "trio_djws.W070" not in run(site, "manage.py", "check", check=False).stderr
    args = ["-m", "hypercorn", "--worker-class", "trio", "--bind", "127.0.0.1:0"]
    with Process(site, *args, "mysite.asgi:application") as server:
        address = server.expect(r"Running on (http://127\.0\.0\.1:\d+)")[1]
        response = httpx.get(f"{address}/admin/login/", timeout=30)
    assert response.status_code == 200
    assert "Django" in response.text


@override_settings(ASGI_APPLICATION="tests.django_asgi.application")
def test_asgi_application_naming_djangos_handler_is_e070() -> None:
    [error] = [m for m in checks.run_checks(tags=["trio_djws"]) if m.id == "trio_djws.E070"]
    assert "tests.django_asgi" in error.msg
    assert error.hint is not None and FIX in error.hint


def test_no_handler_registered_is_w071_until_its_app_is_installed(tmp_path: pathlib.Path) -> None:
    site = startproject(tmp_path / "site")
    write(site, "echo/websockets.py", ECHO, package=True)
    done = run(site, "manage.py", "check", check=False)
    assert "trio_djws.W071" in done.stderr
    assert "INSTALLED_APPS" in done.stderr
    add_app(site, "echo")
    done = run(site, "manage.py", "check", check=False)
    assert "trio_djws.W071" not in done.stderr, done.stderr


async def test_403_for_an_unknown_path_lists_the_registered_paths(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="trio_djws"):
        with pytest.raises(HandshakeRejected) as rejected:
            async with WebSocketTestClient(get_asgi_application(), "/nowhere/\n"):
                pass
    assert rejected.value.status == 403
    [line] = [r.getMessage() for r in caplog.records if "with 403" in r.getMessage()]
    assert "'/nowhere/\\n'" in line  # the client's path escaped
    assert "registered: '/" in line
    assert "manage.py websocket_routes" in line
