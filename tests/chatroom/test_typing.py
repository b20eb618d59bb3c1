"""The room's "… is typing" indicator (chat/signals.py, chat/typing.js) end to end: the
chatroom as a subprocess, three Chromium pages, signals through ``/ws/signals/``."""

from __future__ import annotations

import shutil
from collections.abc import Callable

import trio
from playwright.sync_api import Browser, Page, expect, sync_playwright

from . import test_browser
from .test_browser import BROWSER_TIMEOUT_MS, CHROMIUM_ARGS, ChatroomServer

chatroom_env = test_browser.chatroom_env  # the fixture: a fresh, migrated database


def open_room(browser: Browser, url: str, nick: str) -> Page:
    page = browser.new_context().new_page()
    page.set_default_timeout(BROWSER_TIMEOUT_MS)
    page.goto(url)
    expect(page.locator("#status")).to_have_text("online")
    page.locator("#nick").fill(nick)
    page.locator("#nick").press("Tab")
    expect(page.locator("#status")).to_have_text("online")
    page.wait_for_function("TrioDJWS.state === 'open'")
    return page


def typing_in_browser(base_url: str, stop: Callable[[], int], restart: Callable[[], str]) -> None:
    expect.set_options(timeout=BROWSER_TIMEOUT_MS)
    chromium = shutil.which("chromium")
    assert chromium is not None, "Chromium is needed: apt-get install chromium"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            alice = open_room(browser, base_url + "/rooms/lobby/", "alice")
            bob = open_room(browser, base_url + "/rooms/lobby/", "bob")
            carol = open_room(browser, base_url + "/rooms/random/", "carol")

            alice.locator("#text").press_sequentially("hel")
            expect(bob.locator("#typing")).to_have_text("alice is typing…")
            expect(alice.locator("#typing")).to_have_text("")  # not to herself
            # Another room's page got nothing: the next thing it shows is its own room's.
            bob2 = open_room(browser, base_url + "/rooms/random/", "dave")
            bob2.locator("#text").press_sequentially("x")
            expect(carol.locator("#typing")).to_have_text("dave is typing…")
            # The indicator goes away by itself.
            expect(bob.locator("#typing")).to_have_text("", timeout=BROWSER_TIMEOUT_MS)

            # The server restarts: the signals sockets reconnect by themselves (backoff).
            assert stop() == 0
            alice.wait_for_function("TrioDJWS.state === 'reconnecting'")
            restart()
            for page in (alice, bob):
                page.wait_for_function("TrioDJWS.state === 'open'")
            alice.locator("#text").press_sequentially("lo")
            expect(bob.locator("#typing")).to_have_text("alice is typing…")
        finally:
            browser.close()


async def test_typing_indicator_reaches_the_rooms_other_windows_only(
    chatroom_env: dict[str, str],
) -> None:
    async with trio.open_nursery() as nursery:
        server = ChatroomServer(nursery, chatroom_env)
        base_url = await server.start()
        bind = base_url.removeprefix("http://")  # the same port again after the restart

        def stop() -> int:
            return trio.from_thread.run(server.stop)

        def restart() -> str:
            return trio.from_thread.run(server.start, bind)

        try:
            await trio.to_thread.run_sync(
                typing_in_browser, base_url, stop, restart, limiter=trio.CapacityLimiter(1)
            )
            assert await server.stop() == 0
        except BaseException:
            print(server.output())
            raise
