"""The live connections page (trio_djws/dashboard.py) in real Chromium against a real
``manage.py serve --workers 2`` on the RedisBroker: both processes' connections, groups and
presence show live; staff close one connection on each process with 1008 and a reason; the
page's screenshot is checked. Plus the page's and the socket's staff-only rules."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Final

import pytest
import trio
from playwright.sync_api import Dialog, expect
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    WebSocketConnection,
    open_websocket_url,
)

from tests.browser import chromium, new_page
from tests.processes import REPO_ROOT, ServerProcess, child_env
from tests.redis_server import RedisServer
from tests.test_brokers_redis import redis_settings

TIMEOUT: Final = 80.0  # seconds; this module's watchdog (below) allows 90
DEADLINE: Final = 90.0  # seconds: two server processes, a migration and Chromium per test
VIEWPORT: Final = {"width": 1280, "height": 900}
GROUP_NS: Final = "/redis/group/<str:group>/"

# Run in the server's settings: migrate, a staff user and a plain one, their session cookies.
_SETUP = """
import json
import django
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0, interactive=False)
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client
cookies = {}
for name, staff in (("root", True), ("plain", False)):
    User.objects.create_user(name, password="secret-pw", is_staff=staff)
    client = Client()
    assert client.login(username=name, password="secret-pw")
    cookies[name] = client.cookies[settings.SESSION_COOKIE_NAME].value
print(json.dumps(cookies))
"""


@pytest.fixture
async def _deadline(nursery: trio.Nursery) -> None:
    """This module's watchdog (overrides conftest's 60 s one): fail past DEADLINE seconds."""

    async def watchdog() -> None:
        await trio.sleep(DEADLINE)
        raise trio.TooSlowError(f"test still running after {DEADLINE} s")

    nursery.start_soon(watchdog)


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk
    return width, height


def browse(base: str, cookie: str, targets: list[str], shot: Path) -> None:
    """Worker thread: the staff page shows both processes; close each target connection."""
    with chromium() as browser:
        page = new_page(browser, VIEWPORT)  # type: ignore[arg-type]  # a ViewportSize dict
        page.context.add_cookies([{"name": "sessionid", "value": cookie, "url": base}])
        page.goto(f"{base}/admin/trio_djws/connections/")
        expect(page.locator("#djws-status")).to_have_text("open")
        expect(page.locator("#djws-processes")).to_have_text("2")
        expect(page.locator("#djws-namespaces")).to_contain_text(GROUP_NS)
        expect(page.locator("#djws-groups")).to_contain_text("lobby")
        expect(page.locator("#djws-presence")).to_contain_text("lobby")
        expect(page.locator("#djws-rejected")).to_contain_text("HTTP 403")
        expect(page.locator("#djws-workers tbody tr")).to_have_count(2)
        expect(page.locator("#djws-workers")).to_contain_text("RedisBroker (connected)")
        page.on("dialog", lambda dialog: _reason(dialog))
        for target in targets:
            row = page.locator(f'#djws-connections tr[data-id="{target}"]')
            expect(row).to_have_count(1)
            row.locator("button.djws-close").click()
            expect(row).to_have_count(0)  # gone from the next snapshot
        expect(page.locator("#djws-closes")).to_contain_text("1008")
        expect(page.locator("#djws-closes")).to_contain_text("bye from staff")
        page.screenshot(path=str(shot), full_page=False)


def _reason(dialog: Dialog) -> None:
    dialog.accept("bye from staff")


async def _both_workers(
    stack: AsyncExitStack, url: str
) -> dict[str, tuple[str, WebSocketConnection]]:
    # Members of group "lobby" until both worker processes hold one: pid → (the first
    # one's connection id, its client).
    found: dict[str, tuple[str, WebSocketConnection]] = {}
    for _ in range(200):  # which worker accepts is the kernel's choice
        ws = await stack.enter_async_context(open_websocket_url(f"{url}/redis/group/lobby/?id"))
        _, pid, connection_id = str(await ws.get_message()).split()
        found.setdefault(pid, (connection_id, ws))
        if len(found) == 2:
            return found
    raise AssertionError("one worker accepted 200 connections in a row")


SERVE: Final = [sys.executable, "-m", "django", "serve", "--bind", "127.0.0.1:0"]


async def _prepare(
    redis_server: RedisServer, tmp_path: Path
) -> tuple[dict[str, str], dict[str, str]]:
    # The servers' environment (a fresh SQLite file, the Redis broker) and, once migrated,
    # the session cookies of a staff user ("root") and a plain one ("plain").
    env = child_env(
        "tests.dashboard_settings",
        TESTS_SQLITE_PATH=str(tmp_path / "db.sqlite3"),
        LAUNCHER_TEST_SETTINGS=json.dumps(redis_settings(redis_server.url)),
    )
    setup = await trio.run_process(
        [sys.executable, "-c", _SETUP], env=env, cwd=REPO_ROOT, capture_stdout=True
    )
    return env, json.loads(setup.stdout)


async def test_live_page_shows_both_workers_and_staff_close_with_1008(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    with trio.fail_after(TIMEOUT):
        env, cookies = await _prepare(redis_server, tmp_path)
        async with ServerProcess.open([*SERVE, "--workers", "2"], env) as server:
            url = (await server.urls())[0]
            base = url.replace("ws://", "http://")
            await server.stderr.wait_for(r"worker \d \(pid \d+\) starting", 2)
            async with AsyncExitStack() as stack:
                members = await _both_workers(stack, url)
                await stack.enter_async_context(
                    open_websocket_url(f"{url}/redis/presence/lobby/?name=ada")
                )
                with pytest.raises(ConnectionRejected):  # no @Namespace: 403
                    async with open_websocket_url(f"{url}/nowhere/"):
                        pass
                shot = tmp_path / "dashboard.png"
                targets = [connection_id for connection_id, _ in members.values()]
                await trio.to_thread.run_sync(
                    browse, base, cookies["root"], targets, shot, limiter=trio.CapacityLimiter(1)
                )
                closed = []
                for _, ws in members.values():
                    with pytest.raises(ConnectionClosed) as info:
                        while True:
                            await ws.get_message()
                    closed.append((info.value.reason.code, info.value.reason.reason))
    assert closed == [(1008, "bye from staff")] * 2
    data = shot.read_bytes()
    assert png_size(data) == (VIEWPORT["width"], VIEWPORT["height"])
    assert len(data) > 20_000  # tables and a chart, not a blank page


async def test_page_and_socket_are_for_staff_only(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    with trio.fail_after(TIMEOUT):
        env, cookies = await _prepare(redis_server, tmp_path)
        async with ServerProcess.open(SERVE, env, stderr=subprocess.DEVNULL) as server:
            url = (await server.urls())[0]
            for cookie in (None, cookies["plain"]):
                headers = [] if cookie is None else [("Cookie", f"sessionid={cookie}")]
                with pytest.raises(ConnectionRejected) as info:
                    async with open_websocket_url(f"{url}/ws/dashboard/", extra_headers=headers):
                        pass
                assert info.value.status_code == 403
            headers = [("Cookie", f"sessionid={cookies['root']}")]
            async with open_websocket_url(f"{url}/ws/dashboard/", extra_headers=headers) as ws:
                snapshot = json.loads(await ws.get_message())
                assert snapshot["type"] == "snapshot" and snapshot["open"] >= 1
                await ws.send_message("not json")
                assert json.loads(await ws.get_message())["type"] in ("error", "snapshot")
