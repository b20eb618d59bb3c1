"""Django sessions and auth on WebSocket handshakes (trio_djws.mixins, trio_djws.auth),
against a live Hypercorn trio server, logged in with Django's test client."""

from __future__ import annotations

import json
import ssl
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from django.conf import settings
from django.contrib.auth.models import AnonymousUser, Permission, User
from django.test import Client, override_settings
from hypercorn.trio import serve as hypercorn_serve
from trio_websocket import WebSocketConnection, open_websocket_url

from tests.conftest import hypercorn_config, rejected_status
from trio_djws import user_group
from trio_djws.asgi import get_asgi_application
from trio_djws.auth import build_request
from trio_djws.state import current_server
from trio_djws.threads import to_thread

pytestmark = pytest.mark.django_db(transaction=True)  # sessions and users from worker threads

WAIT = 10.0  # seconds; generous bound on one exchange with the live server


def _login(username: str, permissions: tuple[str, ...] = ()) -> str:
    # Worker thread: create the user, log in with Django's test client, return its cookie.
    user = User.objects.create_user(username, password="secret-pw")
    for perm in permissions:
        app_label, codename = perm.split(".")
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )
    client = Client()
    assert client.login(username=username, password="secret-pw")
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"


async def login(username: str, permissions: tuple[str, ...] = ()) -> str:
    """Log ``username`` in; returns the ``Cookie`` header value carrying the session."""
    return await to_thread(_login, username, permissions)


def cookie_header(cookie: str) -> list[tuple[bytes, bytes]]:
    return [(b"cookie", cookie.encode())]


async def receive_json(ws: WebSocketConnection) -> Any:
    with trio.fail_after(WAIT):
        return json.loads(await ws.get_message())


async def test_logged_in_user_is_websocket_user(ws_url: str) -> None:
    cookie = await login("ada")
    async with open_websocket_url(
        f"{ws_url}/auth/whoami/", extra_headers=cookie_header(cookie)
    ) as ws:
        info = await receive_json(ws)
    assert info["user"] == "User"
    assert info["username"] == "ada"
    assert info["authenticated"] is True
    assert info["path"] == "/auth/whoami/"
    assert info["remote_addr"] == "127.0.0.1"
    ada_pk = await to_thread(lambda: User.objects.get(username="ada").pk)
    assert info["groups"] == [f"trio_djws.user.{ada_pk}"]


async def test_no_cookie_is_anonymous_user(ws_url: str) -> None:
    async with open_websocket_url(f"{ws_url}/auth/whoami/") as ws:
        info = await receive_json(ws)
    assert info["user"] == "AnonymousUser"
    assert info["authenticated"] is False
    assert info["groups"] == []


async def test_wsgi_mixin_is_the_old_name(ws_url: str) -> None:
    cookie = await login("grace")
    async with open_websocket_url(
        f"{ws_url}/auth/wsgi-mixin/", extra_headers=cookie_header(cookie)
    ) as ws:
        assert (await receive_json(ws))["username"] == "grace"


async def test_login_required_rejects_anonymous_with_403(ws_url: str) -> None:
    assert await rejected_status(f"{ws_url}/auth/login-required/") == 403
    cookie = await login("linus")
    async with open_websocket_url(
        f"{ws_url}/auth/login-required/", extra_headers=cookie_header(cookie)
    ) as ws:
        assert await ws.get_message() == "hello linus"


async def test_permission_required(ws_url: str) -> None:
    plain = await login("plain")
    assert await rejected_status(f"{ws_url}/auth/permission/", cookie_header(plain)) == 403
    staff = await login("staff", ("auth.change_user",))
    async with open_websocket_url(
        f"{ws_url}/auth/permission/", extra_headers=cookie_header(staff)
    ) as ws:
        assert await ws.get_message() == "allowed"


async def test_permission_required_without_the_attribute_is_a_500(ws_url: str) -> None:
    cookie = await login("someone")
    url = f"{ws_url}/auth/no-permission-attribute/"
    assert await rejected_status(url, cookie_header(cookie)) == 500


async def test_session_saved_by_a_handler_is_seen_by_the_next_http_request(
    ws_url: str, hypercorn_server: str
) -> None:
    cookie = await login("margaret")
    async with open_websocket_url(
        f"{ws_url}/auth/whoami/", extra_headers=cookie_header(cookie)
    ) as ws:
        await receive_json(ws)
        await ws.send_message("set colour teal")
        with trio.fail_after(WAIT):
            assert await ws.get_message() == "saved"
    async with httpx.AsyncClient(base_url=f"http://{hypercorn_server}", timeout=WAIT) as http:
        response = await http.get("/session/colour/", headers={"cookie": cookie})
    assert response.json() == {"value": "teal"}


def _logout(cookie: str) -> None:
    from importlib import import_module

    key = cookie.partition("=")[2]
    import_module(settings.SESSION_ENGINE).SessionStore(key).flush()


async def test_refresh_user_sees_a_logout(ws_url: str) -> None:
    cookie = await login("barbara")
    async with open_websocket_url(
        f"{ws_url}/auth/whoami/", extra_headers=cookie_header(cookie)
    ) as ws:
        assert (await receive_json(ws))["username"] == "barbara"
        await to_thread(_logout, cookie)
        await ws.send_message("refresh")
        info = await receive_json(ws)
    assert info["user"] == "AnonymousUser"
    assert info["groups"] == []  # left the user's group


async def test_user_group_reaches_every_window_of_that_user(ws_url: str) -> None:
    cookie = await login("alan")
    other = await login("other")
    async with (
        open_websocket_url(f"{ws_url}/auth/whoami/", extra_headers=cookie_header(cookie)) as a,
        open_websocket_url(f"{ws_url}/auth/whoami/", extra_headers=cookie_header(cookie)) as b,
        open_websocket_url(f"{ws_url}/auth/whoami/", extra_headers=cookie_header(other)) as c,
    ):
        for ws in (a, b, c):
            await receive_json(ws)
        await a.send_message("user-group ping")
        with trio.fail_after(WAIT):
            assert await a.get_message() == "ping"
            assert await b.get_message() == "ping"
        # `other` is not in alan's group: its next message is its own.
        await c.send_message("user-group pong")
        with trio.fail_after(WAIT):
            assert await c.get_message() == "pong"


def test_user_group_refuses_anonymous() -> None:
    with pytest.raises(ValueError, match="logged-in user"):
        user_group(AnonymousUser())


@override_settings(
    WEBSOCKET_MIDDLEWARE=[
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        "django.middleware.locale.LocaleMiddleware",
    ],
    LANGUAGES=[("en", "English"), ("fr", "French")],
    LANGUAGE_CODE="en",
)
async def test_language_comes_from_locale_middleware(ws_url: str) -> None:
    async with open_websocket_url(
        f"{ws_url}/auth/whoami/", extra_headers=[(b"accept-language", b"fr-FR,fr;q=0.9")]
    ) as ws:
        assert (await receive_json(ws))["language"] == "fr"
    async with open_websocket_url(f"{ws_url}/auth/whoami/") as ws:
        assert (await receive_json(ws))["language"] == "en"


@pytest.mark.parametrize(("deny", "status"), [("403", 403), ("302", 302), ("boom", 500)])
@override_settings(
    WEBSOCKET_MIDDLEWARE=[
        "django.contrib.sessions.middleware.SessionMiddleware",
        "tests.auth_handlers.DenyMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
    ]
)
async def test_a_middleware_response_rejects_with_its_status(
    ws_url: str, deny: str, status: int
) -> None:
    assert await rejected_status(f"{ws_url}/auth/whoami/?deny={deny}") == status
    async with open_websocket_url(f"{ws_url}/auth/whoami/") as ws:  # the others pass
        assert (await receive_json(ws))["authenticated"] is False


def test_handshake_request_is_djangos_own() -> None:
    request = build_request(
        {
            "type": "websocket",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "scheme": "ws",
            "path": "/a/b/",
            "raw_path": b"/a/b/?x=1&x=2",
            "query_string": b"x=1&x=2",
            "root_path": "",
            "headers": [
                (b"host", b"testserver:8000"),
                (b"cookie", b"a=1; b=2"),
                (b"user-agent", b"test"),
            ],
            "client": ("10.0.0.7", 5000),
            "server": ("127.0.0.1", 8000),
            "subprotocols": [],
        }
    )
    assert request.method == "GET"
    assert request.path == "/a/b/"
    assert request.GET.getlist("x") == ["1", "2"]
    assert request.COOKIES == {"a": "1", "b": "2"}
    assert request.headers["User-Agent"] == "test"
    assert request.META["REMOTE_ADDR"] == "10.0.0.7"
    assert request.get_host() == "testserver:8000"


async def test_djwebsockets_classmethod_hooks_keep_working(ws_url: str) -> None:
    from tests.auth_handlers import LEGACY_CLOSED

    LEGACY_CLOSED.clear()
    async with open_websocket_url(f"{ws_url}/auth/legacy/") as ws:
        with trio.fail_after(WAIT):
            assert await ws.get_message() == "Legacy /auth/legacy/ False"
            await ws.send_message("hi")
            assert await ws.get_message() == "Legacy:HI"  # the mixin's classmethod ran first
    with trio.fail_after(WAIT):
        await current_server().wait_idle()
    assert LEGACY_CLOSED == ["Legacy"]  # the classmethod on_close ran, once
    assert LEGACY_CLOSED == ["Legacy"]


async def _tls_server(nursery: trio.Nursery, directory: Path) -> tuple[str, ssl.SSLContext]:
    # Hypercorn over TLS with a throw-away self-signed certificate for 127.0.0.1.
    cert, key = directory / "cert.pem", directory / "key.pem"
    openssl = "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1"
    command = [*openssl.split(), "-addext", "subjectAltName=IP:127.0.0.1"]
    command += ["-keyout", str(key), "-out", str(cert)]
    await trio.run_process(command, capture_stdout=True, capture_stderr=True)
    config = hypercorn_config()
    config.certfile, config.keyfile = str(cert), str(key)
    binds = await nursery.start(
        partial(
            hypercorn_serve, get_asgi_application(), config, shutdown_trigger=trio.sleep_forever
        )
    )
    client_context = ssl.create_default_context(cafile=str(cert))
    return binds[0].replace("https://", "wss://"), client_context


@override_settings(
    SECURE_SSL_REDIRECT=True,
    WEBSOCKET_MIDDLEWARE=[
        "django.middleware.security.SecurityMiddleware",
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
    ],
    MIDDLEWARE=["django.middleware.security.SecurityMiddleware", *settings.MIDDLEWARE],
)
async def test_wss_handshakes_are_secure_requests(tmp_path: Path) -> None:
    # A wss:// handshake is an https request to Django (request.is_secure()): with
    # SECURE_SSL_REDIRECT, SecurityMiddleware must let it through instead of answering 301,
    # for DjangoMiddlewareMixin handlers and for dwebsocket-style views alike.
    async with trio.open_nursery() as nursery:
        url, context = await _tls_server(nursery, tmp_path)
        with trio.fail_after(WAIT):
            async with open_websocket_url(f"{url}/auth/whoami/", ssl_context=context) as ws:
                assert (await receive_json(ws))["authenticated"] is False
            async with open_websocket_url(f"{url}/dws/echo_once/", ssl_context=context) as ws:
                await ws.send_message("over TLS")
                assert await ws.get_message() == "over TLS"
        nursery.cancel_scope.cancel()
