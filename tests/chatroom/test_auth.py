"""Logged-in chat and the dwebsocket examples in the chatroom, against a live Hypercorn trio
server: a real login POST to Django's login page, then the session cookie on the handshake."""

from __future__ import annotations

import json
import re

import httpx
import pytest
import trio
from chat.models import Room
from django.contrib.auth.models import User
from trio_websocket import ConnectionClosed, open_websocket_url

from trio_djws import to_thread

pytestmark = pytest.mark.django_db(transaction=True)  # the handler's ORM runs in threads

WAIT = 10.0  # seconds; generous bound on one exchange with the live server
_CSRF_INPUT = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


@pytest.fixture(autouse=True)
def rooms(transactional_db: None) -> None:
    Room.objects.get_or_create(slug="lobby", defaults={"name": "Lobby"})


async def log_in(base_url: str, username: str, password: str) -> httpx.Cookies:
    """Log in through the login form like a browser: GET it, POST it with the CSRF token."""
    async with httpx.AsyncClient(base_url=base_url, timeout=WAIT) as http:
        page = await http.get("/accounts/login/")
        assert page.status_code == 200
        match = _CSRF_INPUT.search(page.text)
        assert match is not None, "the login page has no CSRF token"
        response = await http.post(
            "/accounts/login/",
            data={
                "username": username,
                "password": password,
                "csrfmiddlewaretoken": match[1],
                "next": "/rooms/lobby/",
            },
        )
        assert response.status_code == 302, response.text
        assert response.headers["location"] == "/rooms/lobby/"
        return http.cookies


def cookie_header(cookies: httpx.Cookies) -> list[tuple[bytes, bytes]]:
    value = "; ".join(f"{name}={value}" for name, value in cookies.items())
    return [(b"cookie", value.encode())]


async def next_of_type(ws: object, kind: str) -> dict[str, object]:
    with trio.fail_after(WAIT):
        while True:
            frame = json.loads(await ws.get_message())  # type: ignore[attr-defined]
            if frame["type"] == kind:
                return frame  # type: ignore[no-any-return]


async def test_logged_in_user_chats_under_their_username(
    hypercorn_server: str, ws_url: str
) -> None:
    await to_thread(User.objects.create_user, "ada", None, "correct-horse")
    cookies = await log_in(f"http://{hypercorn_server}", "ada", "correct-horse")
    async with httpx.AsyncClient(
        base_url=f"http://{hypercorn_server}", timeout=WAIT, cookies=cookies
    ) as http:
        page = await http.get("/rooms/lobby/")
    assert 'data-user="ada"' in page.text
    assert "Log out" in page.text
    # ?nick= is ignored once logged in: the author comes from the session.
    async with open_websocket_url(
        f"{ws_url}/ws/chat/lobby/?nick=impostor", extra_headers=cookie_header(cookies)
    ) as ws:
        await next_of_type(ws, "history")
        await ws.send_message(json.dumps({"type": "message", "text": "hello as ada"}))
        message = await next_of_type(ws, "message")
    assert message["author"] == "ada"
    assert message["text"] == "hello as ada"


async def test_anonymous_visitor_still_uses_the_nickname(
    hypercorn_server: str, ws_url: str
) -> None:
    async with httpx.AsyncClient(base_url=f"http://{hypercorn_server}", timeout=WAIT) as http:
        page = await http.get("/rooms/lobby/")
    assert "Log in" in page.text
    async with open_websocket_url(f"{ws_url}/ws/chat/lobby/?nick=guest") as ws:
        await next_of_type(ws, "history")
        await ws.send_message(json.dumps({"type": "message", "text": "hi"}))
        assert (await next_of_type(ws, "message"))["author"] == "guest"


async def test_wrong_password_does_not_log_in(hypercorn_server: str, ws_url: str) -> None:
    await to_thread(User.objects.create_user, "bob", None, "right-pw")
    async with httpx.AsyncClient(base_url=f"http://{hypercorn_server}", timeout=WAIT) as http:
        page = await http.get("/accounts/login/")
        match = _CSRF_INPUT.search(page.text)
        assert match is not None
        response = await http.post(
            "/accounts/login/",
            data={"username": "bob", "password": "wrong", "csrfmiddlewaretoken": match[1]},
        )
        assert response.status_code == 200  # the form again, with its error
        cookies = http.cookies
    async with open_websocket_url(
        f"{ws_url}/ws/chat/lobby/?nick=notbob", extra_headers=cookie_header(cookies)
    ) as ws:
        await next_of_type(ws, "history")
        await ws.send_message(json.dumps({"type": "message", "text": "x"}))
        assert (await next_of_type(ws, "message"))["author"] == "notbob"


async def test_dwebsocket_examples_are_mounted(hypercorn_server: str, ws_url: str) -> None:
    async with open_websocket_url(f"{ws_url}/dws/echo_once/") as ws:
        await ws.send_message("Echo me")
        with trio.fail_after(WAIT):
            assert await ws.get_message() == "Echo me"
            with pytest.raises(ConnectionClosed):
                await ws.get_message()
    async with open_websocket_url(f"{ws_url}/dws/lower_case/") as ws:
        await ws.send_message("LOUD")
        with trio.fail_after(WAIT):
            assert await ws.get_message() == "loud"
    async with httpx.AsyncClient(base_url=f"http://{hypercorn_server}", timeout=WAIT) as http:
        response = await http.get("/dws/lower_case/", params={"message": "QUIET"})
    assert response.text == "quiet"
