"""The room's "… is typing" indicator (chat/signals.py, chat/typing.js) end to end: the
chatroom as a subprocess, three Chromium pages, signals through ``/ws/signals/``."""

from __future__ import annotations

from collections.abc import Callable

from playwright.sync_api import Browser, Page, expect

from tests.browser import BROWSER_TIMEOUT_MS, chromium

from .test_browser import open_room_page, run_with_restartable_server


def open_room(browser: Browser, url: str, nick: str) -> Page:
    page = open_room_page(browser, url, nick)
    page.wait_for_function("TrioDJWS.state === 'open'")
    return page


def typing_in_browser(base_url: str, stop: Callable[[], int], restart: Callable[[], str]) -> None:
    with chromium() as browser:
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


async def test_typing_indicator_reaches_the_rooms_other_windows_only(
    chatroom_env: dict[str, str],
) -> None:
    await run_with_restartable_server(chatroom_env, typing_in_browser)
