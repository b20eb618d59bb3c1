"""The ASGI application: lifespan, shutdown drain, request data on the websocket object."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio
from django.test import override_settings

from trio_djws import ConnectionClosed
from trio_djws.asgi import get_asgi_application
from trio_djws.state import current_server
from trio_djws.testing import HandshakeRejected, WebSocketTestClient


class _Lifespan:
    def __init__(self) -> None:
        self.to_app, self._app_receive = trio.open_memory_channel[dict[str, Any]](1)
        self._app_send, self.from_app = trio.open_memory_channel[dict[str, Any]](1)

    async def run(self) -> None:
        app = get_asgi_application()
        await app(
            {"type": "lifespan", "asgi": {"version": "3.0"}},
            self._app_receive.receive,
            self._app_send.send,
        )

    async def start(self, nursery: trio.Nursery) -> dict[str, Any]:
        """Run the app's lifespan scope; send ``lifespan.startup`` and return its answer."""
        nursery.start_soon(self.run)
        await self.to_app.send({"type": "lifespan.startup"})
        return await self.from_app.receive()


async def test_lifespan_startup_then_shutdown_drains_connections_with_1001(
    nursery: trio.Nursery,
) -> None:
    lifespan = _Lifespan()
    assert (await lifespan.start(nursery))["type"] == "lifespan.startup.complete"

    async with WebSocketTestClient(get_asgi_application(), "/greet-then-close/") as client:
        assert len(current_server().connections) == 1
        await lifespan.to_app.send({"type": "lifespan.shutdown"})
        # Queued messages are flushed before the 1001 close frame.
        assert [await client.receive() for _ in range(5)] == [f"hello {i}" for i in range(5)]
        with pytest.raises(ConnectionClosed) as info:
            await client.receive()
        assert info.value.code == 1001
        assert info.value.reason == "going away"
    assert (await lifespan.from_app.receive())["type"] == "lifespan.shutdown.complete"
    # Handshakes during or after the drain are refused with 503.
    with pytest.raises(HandshakeRejected) as rejected:
        async with WebSocketTestClient(get_asgi_application(), "/echo/"):
            pass
    assert rejected.value.status == 503


@override_settings(WEBSOCKET_BROKER={"BACKEND": "no.such.Broker"})
async def test_lifespan_startup_fails_with_a_message_naming_the_setting(
    nursery: trio.Nursery,
) -> None:
    event = await _Lifespan().start(nursery)
    assert event["type"] == "lifespan.startup.failed"
    assert "WEBSOCKET_BROKER" in event["message"]


@override_settings(WEBSOCKET_MAX_MESSAGE_SIZE=10)
async def test_message_over_the_limit_closes_with_1009() -> None:
    async with WebSocketTestClient(get_asgi_application(), "/echo/") as client:
        await client.send("x" * 10)
        assert await client.receive() == "x" * 10
        await client.send("é" * 6)  # 6 characters, 12 bytes of UTF-8
        with pytest.raises(ConnectionClosed) as info:
            await client.receive()
        assert info.value.code == 1009


async def test_request_data_on_the_websocket_object() -> None:
    async with WebSocketTestClient(
        get_asgi_application(),
        "/inspect/3/",
        query_string="tag=a&tag=b",
        headers=[("Cookie", "sessionid=abc; theme=dark"), ("X-Twice", "1"), ("X-Twice", "2")],
    ) as client:
        assert json.loads(await client.receive()) == {
            "cookies": {"sessionid": "abc", "theme": "dark"},
            "twice": "1, 2",
            "tags": ["a", "b"],
            "kwargs": {"pk": 3},
            "id_length": 32,
            "when": "2026-11-21T12:00:00Z",
        }
