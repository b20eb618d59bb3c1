"""End to end: the chatroom as a subprocess (``manage.py serve``), two Chromium pages.

Playwright has no trio API, so its sync API runs in one worker thread while trio owns the
server process; the thread asks trio to stop and restart the server through
``trio.from_thread.run``. Playwright's timeouts bound every browser step and
``trio.fail_after`` every server step (the suite's ``_deadline`` bounds the whole test).
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Final

import trio
from playwright.sync_api import Browser, Page, ViewportSize, expect

from tests.browser import chromium, new_page

from .conftest import CHATROOM_DIR

VIEWPORT: Final[ViewportSize] = {"width": 900, "height": 640}
SERVER_TIMEOUT = 30.0  # seconds to migrate, start or stop the server
SCREENSHOT = Path("/tmp/chatroom.png")
_LISTENING = re.compile(r"Listening on (http://\S+)")
_LOG_LINES = 200  # server output kept for failure messages


@dataclass
class ChatroomServer:
    """``python manage.py serve`` in a subprocess, started and stopped from trio."""

    nursery: trio.Nursery
    env: dict[str, str]
    log: deque[str] = field(default_factory=lambda: deque(maxlen=_LOG_LINES))
    process: trio.Process | None = None
    url: str = ""

    async def start(self, bind: str = "127.0.0.1:0") -> str:
        """Start serving on ``bind`` and return ``http://HOST:PORT`` from its "Listening on"
        line. Fails after SERVER_TIMEOUT seconds."""
        command = [sys.executable, "manage.py", "serve", "--bind", bind]
        with trio.fail_after(SERVER_TIMEOUT):
            self.process = await self.nursery.start(
                partial(
                    trio.run_process,
                    command,
                    cwd=CHATROOM_DIR,
                    env=self.env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    check=False,
                )
            )
            url_send, url_receive = trio.open_memory_channel[str](1)
            self.nursery.start_soon(self._read_output, self.process, url_send)
            async with url_receive:
                try:
                    self.url = await url_receive.receive()
                except trio.EndOfChannel:
                    raise AssertionError(f"the server exited:\n{self.output()}") from None
        return self.url

    async def _read_output(
        self, process: trio.Process, url_send: trio.MemorySendChannel[str]
    ) -> None:
        # Drain the pipe to its end (a full pipe would block the server's logging); the first
        # "Listening on" line is the URL.
        assert process.stdout is not None
        pending = b""
        async with url_send:
            async for chunk in process.stdout:
                *lines, pending = (pending + chunk).split(b"\n")
                for raw in lines:
                    line = raw.decode(errors="replace")
                    self.log.append(line)
                    match = _LISTENING.search(line)
                    if match is not None:
                        try:
                            url_send.send_nowait(match[1])
                        except trio.WouldBlock:
                            pass  # a second address; the first one is used

    async def stop(self) -> int:
        """SIGTERM, then wait for the exit status (the server drains WebSockets with 1001)."""
        assert self.process is not None
        with trio.fail_after(SERVER_TIMEOUT):
            self.process.send_signal(signal.SIGTERM)
            return await self.process.wait()

    def output(self) -> str:
        """The server's last output lines."""
        return "\n".join(self.log)


def open_room_page(browser: Browser, url: str, nick: str) -> Page:
    """A page in its own context (own localStorage) on a room, online as ``nick``."""
    page = new_page(browser, VIEWPORT)
    page.goto(url)
    expect(page.locator("#status")).to_have_text("online")
    page.locator("#nick").fill(nick)
    page.locator("#nick").press("Tab")  # "change": saved, and a new socket with ?nick=
    expect(page.locator("#status")).to_have_text("online")
    return page


def send(page: Page, text: str) -> None:
    """Type a message and press Enter."""
    page.locator("#text").fill(text)
    page.locator("#text").press("Enter")


def chat_in_browser(base_url: str, stop: Callable[[], int], restart: Callable[[], str]) -> None:
    """The whole browser scenario; runs in a worker thread."""
    with chromium() as browser:
        # The index lists the seeded rooms; its form creates a room and goes there.
        alice = new_page(browser, VIEWPORT)
        alice.goto(base_url + "/")
        expect(alice.get_by_role("link", name="#Lobby")).to_be_visible()
        expect(alice.get_by_role("link", name="#Random")).to_be_visible()
        alice.get_by_label("Name").fill("Trio fans")
        alice.get_by_role("button", name="Create").click()
        expect(alice).to_have_url(base_url + "/rooms/trio-fans/")
        alice.close()

        room_url = base_url + "/rooms/trio-fans/"
        alice = open_room_page(browser, room_url, "alice")
        bob = open_room_page(browser, room_url, "bob")

        # Typed in one page, shown in the other, as text (never as HTML).
        send(alice, "Hello <b>bob</b> & all")
        bob_messages = bob.locator("#messages .message")
        expect(bob_messages).to_have_count(1)
        expect(bob_messages.locator(".author")).to_have_text("alice")
        expect(bob_messages.locator(".text")).to_have_text("Hello <b>bob</b> & all")
        expect(bob.locator("#messages b")).to_have_count(0)
        send(bob, "hi alice")
        alice_messages = alice.locator("#messages .message")
        expect(alice_messages.locator(".text")).to_have_text(["Hello <b>bob</b> & all", "hi alice"])
        expect(alice_messages.first).to_have_class(re.compile(r"\bmine\b"))

        # After a reload the history shows both, once each, and the nickname is kept.
        bob.reload()
        expect(bob.locator("#status")).to_have_text("online")
        expect(bob.locator("#nick")).to_have_value("bob")
        expect(bob_messages.locator(".text")).to_have_text(["Hello <b>bob</b> & all", "hi alice"])

        # The server goes away: both pages say so, then reconnect on their own and merge
        # the history without duplicates.
        assert stop() == 0
        expect(alice.locator("#status")).to_have_text("reconnecting")
        expect(bob.locator("#status")).to_have_text("reconnecting")
        restart()
        expect(alice.locator("#status")).to_have_text("online")
        expect(bob.locator("#status")).to_have_text("online")
        send(bob, "back again")
        expected = ["Hello <b>bob</b> & all", "hi alice", "back again"]
        expect(alice_messages.locator(".text")).to_have_text(expected)
        expect(bob_messages.locator(".text")).to_have_text(expected)

        alice.screenshot(path=str(SCREENSHOT))


async def run_with_restartable_server(
    env: dict[str, str], scenario: Callable[[str, Callable[[], int], Callable[[], str]], None]
) -> None:
    """Serve the chatroom and run the browser ``scenario(base_url, stop, restart)`` in a
    worker thread; ``stop()`` returns the exit status, ``restart()`` serves on the same port.
    The server must then stop with status 0."""
    async with trio.open_nursery() as nursery:
        server = ChatroomServer(nursery, env)
        base_url = await server.start()
        bind = base_url.removeprefix("http://")  # the same port again after the restart

        def stop() -> int:
            return trio.from_thread.run(server.stop)

        def restart() -> str:
            return trio.from_thread.run(server.start, bind)

        try:
            await trio.to_thread.run_sync(
                scenario, base_url, stop, restart, limiter=trio.CapacityLimiter(1)
            )
            assert await server.stop() == 0
        except BaseException:
            print(server.output())  # shown by pytest for a failed test
            raise


async def test_two_pages_chat_reload_and_reconnect(chatroom_env: dict[str, str]) -> None:
    await run_with_restartable_server(chatroom_env, chat_in_browser)
