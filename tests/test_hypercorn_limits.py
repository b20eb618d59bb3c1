"""What Hypercorn's trio worker decides on the ASGI path and the app cannot
(docs/reference/close-codes.md, "On the ASGI path, Hypercorn owns the protocol"). These tests
pin the actual behaviour, so a Hypercorn upgrade that changes it is noticed; the standalone
server gets these cases right."""

from __future__ import annotations

import base64
import os

import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from tests import handlers


async def _raw_handshake(host_port: str, path: str) -> trio.SocketStream:
    host, port = host_port.rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host_port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    await stream.send_all(request.encode())
    response = b""
    while b"\r\n\r\n" not in response:
        chunk = await stream.receive_some(4096)
        assert chunk, "server closed during the handshake"
        response += chunk
    assert response.startswith(b"HTTP/1.1 101"), response
    return stream


def _masked_frame(opcode: int, payload: bytes) -> bytes:
    assert len(payload) < 126
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked


async def test_client_close_code_reaches_the_app_as_1006(hypercorn_ws_url: str) -> None:
    handlers.EVENTS.clear()
    handlers.GUARD_EXITED = trio.Event()
    async with open_websocket_url(f"{hypercorn_ws_url}/mixins/") as ws:
        await ws.aclose(code=4001, reason="bye")
    await handlers.GUARD_EXITED.wait()
    # Upstream issue 127: the client's 4001 is reported to the app as 1006.
    assert "handler.close:1006" in handlers.EVENTS


async def test_oversized_message_is_closed_with_1009_by_hypercorn(hypercorn_ws_url: str) -> None:
    async with open_websocket_url(
        f"{hypercorn_ws_url}/echo/", max_message_size=4 * 1024 * 1024
    ) as ws:
        await ws.send_message(b"x" * (1024 * 1024 + 1))  # WEBSOCKET_MAX_MESSAGE_SIZE + 1
        with pytest.raises(ConnectionClosed) as info:
            await ws.get_message()
        assert info.value.reason.code == 1009


async def test_invalid_utf8_gets_no_close_frame_from_hypercorn(hypercorn_server: str) -> None:
    stream = await _raw_handshake(hypercorn_server, "/echo/")
    async with stream:
        await stream.send_all(_masked_frame(0x1, b"\xff\xfe"))
        await stream.send_all(_masked_frame(0x1, b"after"))
        received = b""
        with trio.fail_after(10):  # real time: the peer is Hypercorn's socket
            while chunk := await stream.receive_some(4096):
                received += chunk
        # Hypercorn drops the TCP connection without any close frame and without echoing
        # the next message (RFC 6455 §8.1 wants a 1007 close frame).
        assert received == b""
