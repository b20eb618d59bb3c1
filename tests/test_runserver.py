"""``manage.py runserver`` (trio_djws.management.commands.runserver) in a fresh startproject
site, as a user runs it: pages, the admin's static files, a WebSocket, the request log, the
autoreloader (a handler edited on disk is served changed), --noreload, --nostatic.

Each server is a subprocess on port 0; the tests wait for what it prints (its banner, the
autoreloader's lines), never for a time.
"""

from __future__ import annotations

import pathlib

import httpx
import pytest
from websockets.sync.client import connect

from tests.sites import Process, add_app, doc_files, run, settings_file, startproject, write

BANNER = r"Starting development server at (http://127\.0\.0\.1:\d+)/"
# The autoreloader logs each file it starts watching at DEBUG: the site's settings show them,
# so that the test edits the handler only once the reloader has its first modification time.
WATCH_LOGGING = """
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        "django.utils.autoreload": {"handlers": ["console"], "level": "DEBUG", "propagate": False}
    },
}
"""
UPPER = """\
from trio_djws import BaseWSClass, Namespace


@Namespace("/echo/")
class Echo(BaseWSClass):
    async def on_message(self, websocket, message):
        await websocket.send(message.upper())
"""


@pytest.fixture
def site(tmp_path: pathlib.Path) -> pathlib.Path:
    """A startproject site set up by the install guide: trio_djws first, its asgi.py, the echo
    handler in a "chat" app; migrated (the admin's login page needs its tables)."""
    site = startproject(tmp_path / "site")
    run(site, "manage.py", "startapp", "chat")
    add_app(site, "chat")
    files = doc_files("howto/install.md")
    for name in ("mysite/asgi.py", "chat/websockets.py"):
        write(site, name, files[name])
    run(site, "manage.py", "migrate", "-v0")
    return site


def echo(url: str, text: str) -> str:
    with connect(url.replace("http://", "ws://") + "/echo/", open_timeout=30) as ws:
        ws.send(text)
        reply = ws.recv(timeout=30)
    assert isinstance(reply, str)
    return reply


def test_runserver_serves_pages_static_files_websockets_and_reloads_on_edit(
    site: pathlib.Path,
) -> None:
    with settings_file(site).open("a") as settings:
        settings.write(WATCH_LOGGING)
    with Process(site, "manage.py", "runserver", "127.0.0.1:0") as server:
        url = server.expect(BANNER)[1]
        assert "System check identified no issues" in server.text
        page = httpx.get(f"{url}/admin/login/", timeout=30)
        assert page.status_code == 200 and "Django administration" in page.text
        css = httpx.get(f"{url}/static/admin/css/base.css", timeout=30)  # DEBUG: staticfiles
        assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
        assert echo(url, "hello") == "hello"
        server.expect(r'"GET /admin/login/ HTTP/1\.1" 200 \d+', since=0)  # runserver's log line

        handler = site / "chat" / "websockets.py"
        server.expect(rf"File {handler} first seen with mtime", since=0)
        mark = len(server.output)
        handler.write_text(UPPER)
        server.expect(rf"{handler} changed, reloading")
        url = server.expect(BANNER)[1]  # the new process (port 0: a new port)
        assert echo(url, "hello") == "HELLO"
        assert "Traceback" not in "\n".join(server.output[mark:])


def test_noreload_serves_and_closes_websockets_with_1001_on_ctrl_c(site: pathlib.Path) -> None:
    with Process(
        site, "manage.py", "runserver", "--noreload", "--nostatic", "127.0.0.1:0"
    ) as server:
        url = server.expect(BANNER)[1]
        assert "Watching for file changes" not in server.text
        assert httpx.get(f"{url}/admin/login/", timeout=30).status_code == 200
        css = httpx.get(f"{url}/static/admin/css/base.css", timeout=30)
        assert css.status_code == 404  # --nostatic
        with connect(url.replace("http://", "ws://") + "/echo/", open_timeout=30) as ws:
            ws.send("hi")
            assert ws.recv(timeout=30) == "hi"
            server.interrupt()
            with pytest.raises(Exception) as closed:
                ws.recv(timeout=30)
            assert ws.close_code == 1001, closed.value
        assert server.wait() == 0


def test_runserver_is_djangos_when_trio_djws_is_listed_after_staticfiles(
    tmp_path: pathlib.Path,
) -> None:
    site = startproject(tmp_path / "site", install=False)
    path = settings_file(site)
    text = path.read_text()
    assert "'django.contrib.staticfiles',\n" in text
    path.write_text(
        text.replace(
            "'django.contrib.staticfiles',\n", "'django.contrib.staticfiles',\n    'trio_djws',\n"
        )
    )
    done = run(site, "manage.py", "check", check=False)
    assert "trio_djws.W072" in done.stderr
    assert "Move 'trio_djws' above 'django.contrib.staticfiles'" in done.stderr
    helped = run(site, "manage.py", "help", "runserver")
    assert "WebSockets" not in helped.stdout  # staticfiles' runserver, as the warning says
