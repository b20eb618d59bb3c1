"""The chatroom's live connections page (trio_djws' admin page, staff only) in Chromium: a staff
user logs in through the admin's login page and watches the rooms' groups, presence and
connections come and go as room pages open and close, without reloading; the page's
screenshot is checked.

The server is ``manage.py serve`` in a subprocess (test_browser.py's helpers); the staff user
is made by ``manage.py createsuperuser --noinput``, as the chatroom's README says.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Final

import trio
from playwright.sync_api import ViewportSize, expect

from tests.browser import chromium, new_page

from .conftest import CHATROOM_DIR, MIGRATE_TIMEOUT
from .test_browser import run_with_restartable_server

VIEWPORT: Final[ViewportSize] = {"width": 1280, "height": 900}
STAFF: Final = ("staff", "staff-secret-pw")
CHAT_NS: Final = "/ws/chat/<slug:room>/"


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk
    return width, height


def watch_the_rooms(shot: Path, base_url: str, stop: Callable[[], int], _: object) -> None:
    """The browser scenario; runs in a worker thread."""
    with chromium() as browser:
        admin = new_page(browser, VIEWPORT)
        admin.goto(base_url + "/admin/trio_djws/connections/")
        # Not logged in: the admin's login page, which brings the user back here.
        expect(admin.locator("#id_username")).to_be_visible()
        admin.locator("#id_username").fill(STAFF[0])
        admin.locator("#id_password").fill(STAFF[1])
        admin.locator("input[type=submit]").click()
        expect(admin.locator("#djws-status")).to_have_text("open")
        groups = admin.locator("#djws-groups")
        expect(groups).not_to_contain_text("chat.")

        lobby = new_page(browser, VIEWPORT)
        lobby.goto(base_url + "/rooms/lobby/")
        expect(lobby.locator("#status")).to_have_text("online")
        expect(groups).to_contain_text("chat.lobby")
        expect(admin.locator("#djws-namespaces")).to_contain_text(CHAT_NS)
        expect(admin.locator("#djws-presence")).to_contain_text("chat.lobby")

        trio_room = new_page(browser, VIEWPORT)
        trio_room.goto(base_url + "/rooms/trio/")
        expect(trio_room.locator("#status")).to_have_text("online")
        expect(groups).to_contain_text("chat.trio")
        expect(admin.locator("#djws-connections")).to_contain_text(CHAT_NS)
        # Every table stays inside its card, long group names (signals windows) included.
        for table in admin.locator("#djws section table").all():
            card = table.locator("xpath=ancestor::section[1]").bounding_box()
            box = table.bounding_box()
            assert card is not None and box is not None
            right = card["x"] + card["width"] + 1
            assert box["x"] + box["width"] <= right, table.get_attribute("id")
        admin.screenshot(path=str(shot), full_page=False)

        # A room whose last page closes leaves the page with the next snapshot.
        trio_room.context.close()
        expect(groups).not_to_contain_text("chat.trio")
        expect(groups).to_contain_text("chat.lobby")


async def test_admin_page_shows_the_chatrooms_rooms_live(
    chatroom_env: dict[str, str],  # the fixture, from conftest
    tmp_path: Path,
) -> None:
    env = {
        **chatroom_env,
        "DJANGO_SUPERUSER_PASSWORD": STAFF[1],
        "DJANGO_SUPERUSER_EMAIL": "staff@example.com",
    }
    with trio.fail_after(MIGRATE_TIMEOUT):
        await trio.run_process(
            [sys.executable, "manage.py", "createsuperuser", "--noinput", "--username", STAFF[0]],
            cwd=CHATROOM_DIR,
            env=env,
        )
    shot = tmp_path / "admin.png"

    def scenario(base_url: str, stop: Callable[[], int], restart: Callable[[], str]) -> None:
        watch_the_rooms(shot, base_url, stop, restart)

    await run_with_restartable_server(chatroom_env, scenario)
    data = shot.read_bytes()
    assert png_size(data) == (VIEWPORT["width"], VIEWPORT["height"])
    assert len(data) > 20_000  # tables and a chart, not a blank page
