"""End to end, logged in: Django's login page in Chromium, then the chat under the username.

The server is ``manage.py serve`` in a subprocess (as in test_browser.py, whose helpers this
reuses); the user is made with ``manage.py createsuperuser --noinput``.
"""

from __future__ import annotations

import re
import sys

import trio
from playwright.sync_api import expect

from tests.browser import chromium, new_page

from .conftest import CHATROOM_DIR
from .test_browser import (
    SERVER_TIMEOUT,
    VIEWPORT,
    ChatroomServer,
    send,
)

USERNAME = "ada"
PASSWORD = "correct-horse-battery"


def log_in_and_chat(base_url: str) -> None:
    """The browser scenario; runs in a worker thread."""
    with chromium() as browser:
        ada = new_page(browser, VIEWPORT)
        ada.goto(base_url + "/rooms/lobby/")
        ada.get_by_role("link", name="Log in").click()
        ada.get_by_label("Username").fill(USERNAME)
        ada.get_by_label("Password").fill(PASSWORD)
        ada.get_by_role("button", name="Log in").click()
        expect(ada).to_have_url(base_url + "/rooms/lobby/")  # ?next= brought us back
        expect(ada.locator("#username")).to_have_text(USERNAME)
        expect(ada.locator("#status")).to_have_text("online")
        expect(ada.locator("#nick")).to_have_value(USERNAME)

        guest = new_page(browser, VIEWPORT)
        guest.goto(base_url + "/rooms/lobby/")
        expect(guest.locator("#status")).to_have_text("online")

        send(ada, "hello, logged in")
        messages = guest.locator("#messages .message")
        expect(messages.locator(".text")).to_have_text(["hello, logged in"])
        expect(messages.locator(".author")).to_have_text([USERNAME])
        expect(ada.locator("#messages .message").first).to_have_class(re.compile(r"\bmine\b"))

        ada.get_by_role("button", name="Log out").click()
        expect(ada.get_by_role("link", name="Log in")).to_be_visible()


async def test_logged_in_user_chats_under_their_username(
    chatroom_env: dict[str, str],  # the fixture, from conftest
) -> None:
    env = {**chatroom_env, "DJANGO_SUPERUSER_PASSWORD": PASSWORD}
    with trio.fail_after(SERVER_TIMEOUT):
        await trio.run_process(
            [
                sys.executable,
                "manage.py",
                "createsuperuser",
                "--noinput",
                "--username",
                USERNAME,
                "--email",
                "ada@example.com",
            ],
            cwd=CHATROOM_DIR,
            env=env,
        )
    async with trio.open_nursery() as nursery:
        server = ChatroomServer(nursery, chatroom_env)
        base_url = await server.start()
        try:
            await trio.to_thread.run_sync(
                log_in_and_chat, base_url, limiter=trio.CapacityLimiter(1)
            )
            assert await server.stop() == 0
        except BaseException:
            print(server.output())  # shown by pytest for a failed test
            raise
