"""The room page as a user sees it, in Chromium: anonymous tabs counted, presence cleared while
disconnected, the presence and typing lines inset like the card, the header's spacing, the
favicon. Screenshots of each state go to ``SCREENSHOTS`` (kept for a look after the run).

The server is ``manage.py serve`` in a subprocess (test_browser.py's helpers).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Final

from playwright.sync_api import Page, expect

from tests.browser import chromium, new_page

from .test_browser import (
    VIEWPORT,
    run_with_restartable_server,
)

SCREENSHOTS: Final = Path("/tmp/chatroom-ui")


def content_left(page: Page, selector: str) -> float:
    """Where the content of the first element matching ``selector`` starts (CSS pixels)."""
    return float(
        page.locator(selector).first.evaluate(
            """(e) => {
                const style = getComputedStyle(e);
                return e.getBoundingClientRect().left + parseFloat(style.paddingLeft)
                    + parseFloat(style.borderLeftWidth);
            }"""
        )
    )


def open_anonymous(browser_page: Page, url: str) -> Page:
    browser_page.goto(url)
    expect(browser_page.locator("#status")).to_have_text("online")
    return browser_page


def look_at_the_room(base_url: str, stop: Callable[[], int], restart: Callable[[], str]) -> None:
    """The browser scenario; runs in a worker thread."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    room_url = base_url + "/rooms/lobby/"
    with chromium() as browser:
        first = new_page(browser, VIEWPORT)
        missing: list[str] = []
        first.on("response", lambda r: missing.append(r.url) if r.status == 404 else None)
        open_anonymous(first, room_url)
        expect(first.locator("#presence")).to_have_text("1 anonymous")

        # A second anonymous tab: both count two, not one "anonymous".
        second = open_anonymous(new_page(browser, VIEWPORT), room_url)
        expect(first.locator("#presence")).to_have_text("2 anonymous")
        expect(second.locator("#presence")).to_have_text("2 anonymous")
        named = new_page(browser, VIEWPORT)
        open_anonymous(named, room_url)
        named.locator("#nick").fill("carol")
        named.locator("#nick").press("Tab")  # a new socket with ?nick=carol
        expect(first.locator("#presence")).to_have_text("carol, 2 anonymous")
        first.screenshot(path=str(SCREENSHOTS / "online.png"))

        # The favicon is served, and nothing the page asked for was missing.
        icon = first.locator("link[rel=icon]").get_attribute("href")
        assert icon is not None
        assert first.request.get(base_url + icon).ok
        assert missing == []

        # Presence and typing lines start where the card's header and composer content do.
        head = content_left(first, ".room-head")
        for selector in (".presence", ".typing", ".messages", ".composer"):
            assert abs(content_left(first, selector) - head) < 1, selector
        # The header: "chat" and "All rooms" apart, not "chatAll rooms".
        brand = first.locator(".topbar .brand").bounding_box()
        back = first.locator(".topbar .back").bounding_box()
        assert brand is not None and back is not None
        assert back["x"] - (brand["x"] + brand["width"]) >= 12
        first.locator(".topbar").screenshot(path=str(SCREENSHOTS / "header.png"))

        # The server goes away: the presence line is cleared, not left showing the old list.
        assert stop() == 0
        expect(first.locator("#status")).to_have_text("reconnecting")
        expect(first.locator("#presence")).to_have_text("")
        first.screenshot(path=str(SCREENSHOTS / "disconnected.png"))
        restart()
        expect(first.locator("#status")).to_have_text("online")
        expect(first.locator("#presence")).to_have_text("carol, 2 anonymous")


async def test_room_page_presence_layout_and_favicon(
    chatroom_env: dict[str, str],  # the fixture, from conftest
) -> None:
    await run_with_restartable_server(chatroom_env, look_at_the_room)
