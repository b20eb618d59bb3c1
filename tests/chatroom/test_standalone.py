"""End to end, standalone mode (``nox -s chatroom_standalone``): gunicorn serves the pages
(``chatroom.wsgi``), ``manage.py runwebsocket`` the WebSockets on another port, and two
Chromium pages chat through it. gunicorn serves no WebSocket at all, so a page that goes
"online" has connected to the WebSocket port.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from contextlib import AbstractAsyncContextManager

import trio
from playwright.sync_api import expect

from tests.browser import chromium
from tests.processes import ServerProcess

from .conftest import CHATROOM_DIR
from .test_browser import SERVER_TIMEOUT, open_room_page, send


class _Process(ServerProcess):
    """A chatroom subprocess, its stderr merged into ``stdout``; every step is bounded."""

    async def wait_for(self, pattern: str) -> str:
        """The first group of ``pattern``'s first match; fails if the process ends first."""
        with trio.fail_after(SERVER_TIMEOUT):
            matches = await self.stdout.wait_for(pattern)
        return matches[0][1]

    async def stop(self, signum: int) -> int:
        with trio.fail_after(SERVER_TIMEOUT):
            return await super().stop(signum)


def started(command: list[str], env: dict[str, str]) -> AbstractAsyncContextManager[_Process]:
    return _Process.open(command, env, cwd=CHATROOM_DIR, stderr=subprocess.STDOUT)


def chat_through_the_websocket_port(base_url: str, ws_port: str, stop_websockets: object) -> None:
    """The browser scenario; runs in a worker thread."""
    assert callable(stop_websockets)
    with chromium() as browser:
        room_url = base_url + "/rooms/lobby/"
        alice = open_room_page(browser, room_url, "alice")
        bob = open_room_page(browser, room_url, "bob")
        expect(alice.locator("#room")).to_have_attribute("data-websocket-port", ws_port)
        # The signals socket ("… is typing") goes to the WebSocket port too.
        alice.locator("#text").press_sequentially("hel")
        expect(bob.locator("#typing")).to_have_text("alice is typing…")
        send(alice, "hello from gunicorn's page")
        bob_messages = bob.locator("#messages .message")
        expect(bob_messages.locator(".text")).to_have_text(["hello from gunicorn's page"])
        expect(bob_messages.locator(".author")).to_have_text(["alice"])
        # The WebSocket server stops; the pages, still served by gunicorn, notice.
        assert stop_websockets() == 0
        expect(alice.locator("#status")).to_have_text("reconnecting")
        expect(bob.locator("#status")).to_have_text("reconnecting")


async def test_pages_from_gunicorn_chat_over_runwebsocket(
    chatroom_env: dict[str, str],  # the fixture, from conftest
) -> None:
    websocket_command = [sys.executable, "manage.py", "runwebsocket", "--bind", "127.0.0.1:0"]
    async with started(websocket_command, chatroom_env) as websockets:
        ws_url = await websockets.wait_for(r"Listening on (ws://\S+)")
        ws_port = ws_url.rpartition(":")[2]
        env = {**chatroom_env, "CHAT_WEBSOCKET_PORT": ws_port}
        http_command = [
            *(sys.executable, "-m", "gunicorn", "--bind", "127.0.0.1:0", "--workers", "2"),
            *("--no-control-socket", "chatroom.wsgi:application"),
        ]
        async with started(http_command, env) as gunicorn:
            base_url = await gunicorn.wait_for(r"Listening at: (http://\S+)")

            def stop_websockets() -> int:
                return trio.from_thread.run(websockets.stop, signal.SIGINT)

            await trio.to_thread.run_sync(
                chat_through_the_websocket_port,
                base_url,
                ws_port,
                stop_websockets,
                limiter=trio.CapacityLimiter(1),
            )
            assert await gunicorn.stop(signal.SIGTERM) == 0
