"""Origin validation at the handshake (cross-site WebSocket hijacking)."""

from __future__ import annotations

import pytest
from django.test import override_settings
from trio_websocket import open_websocket_url

from tests.conftest import rejected_status
from trio_djws.asgi import get_asgi_application
from trio_djws.origins import origin_allowed
from trio_djws.testing import HandshakeRejected, WebSocketTestClient


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("http://127.0.0.1:8000", True),
        ("https://localhost", True),
        ("http://evil.example", False),
        ("null", False),
        ("ftp://localhost", False),
        (None, True),
    ],
)
def test_origin_derived_from_allowed_hosts(origin: str | None, allowed: bool) -> None:
    assert origin_allowed(origin) is allowed


@override_settings(WEBSOCKET_REQUIRE_ORIGIN=True)
def test_missing_origin_refused_when_required() -> None:
    assert origin_allowed(None) is False


@override_settings(WEBSOCKET_ALLOWED_ORIGINS=["https://app.example"])
def test_explicit_allowed_origins() -> None:
    assert origin_allowed("https://app.example") is True
    assert origin_allowed("https://app.example/") is True
    assert origin_allowed("http://127.0.0.1") is False


@override_settings(ALLOWED_HOSTS=[".example.com"])
def test_subdomain_pattern_from_allowed_hosts() -> None:
    assert origin_allowed("https://chat.example.com") is True
    assert origin_allowed("https://example.org") is False


async def test_foreign_origin_gets_403_on_the_live_server(ws_url: str) -> None:
    assert await rejected_status(f"{ws_url}/echo/", [("Origin", "http://evil.example")]) == 403
    async with open_websocket_url(
        f"{ws_url}/echo/", extra_headers=[("Origin", "http://127.0.0.1")]
    ) as ws:
        await ws.send_message("ok")
        assert await ws.get_message() == "ok"


async def test_foreign_origin_gets_403_in_memory() -> None:
    with pytest.raises(HandshakeRejected) as info:
        async with WebSocketTestClient(
            get_asgi_application(), "/echo/", headers=[("Origin", "https://evil.example")]
        ):
            pass
    assert info.value.status == 403
