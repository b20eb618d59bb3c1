"""The standalone server (trio_djws.servers.standalone) on each engine: bad input, stalled readers,
close codes, shutdown drain, keepalive. The connection model's own tests run on these engines
through the parametrised ``ws_url`` fixture (tests/conftest.py)."""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import socket

import pytest
import trio
import trio.testing
from django.core import checks
from django.test import override_settings
from trio_websocket import ConnectionClosed, open_websocket_url
from websockets.client import ClientProtocol as WebSocketsClient
from websockets.frames import Close, Frame, Opcode
from websockets.protocol import State
from websockets.trio.client import connect as trio_connect
from websockets.uri import parse_uri
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Pong,
    Request,
    TextMessage,
)

from tests import server_handlers
from tests.conftest import start_transport
from trio_djws.conf import ENGINES
from trio_djws.engines import get_engine
from trio_djws.server import serve

WAIT = 20  # seconds; real time: the peers are sockets


@pytest.fixture(autouse=True)
def _record() -> server_handlers.Record:
    server_handlers.RECORD = server_handlers.Record()
    return server_handlers.RECORD


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=[*ENGINES, "serve"])
def server_kind(request: pytest.FixtureRequest) -> str:
    """An engine name, or ``"serve"`` (``manage.py serve``: the websockets engine behind its
    listener)."""
    return str(request.param)


@pytest.fixture
async def server(server_kind: str, nursery: trio.Nursery) -> str:
    """``host:port`` of the standalone server on each engine, and of ``manage.py serve``."""
    return await start_transport(nursery, server_kind)


async def start_stoppable(
    nursery: trio.Nursery, engine: str
) -> tuple[str, trio.CancelScope, trio.Event]:
    """The standalone server in its own cancel scope: ``(host:port, scope, stopped)``;
    cancelling the scope starts the shutdown, ``stopped`` is set once it is done."""
    scope = trio.CancelScope()
    stopped = trio.Event()

    async def run(*, task_status: trio.TaskStatus[str]) -> None:
        try:
            with scope:
                await serve("127.0.0.1", 0, engine=engine, task_status=task_status)
        finally:
            stopped.set()

    addresses = await nursery.start(run)
    host, port = addresses[0]
    return f"{host}:{port}", scope, stopped


class RawClient:
    """A WebSocket client on wsproto that can also write raw (invalid) bytes."""

    def __init__(self, stream: trio.SocketStream, host_port: str) -> None:
        self.stream = stream
        self.host_port = host_port
        self.ws = WSConnection(ConnectionType.CLIENT)

    @classmethod
    async def connect(cls, host_port: str, path: str, *, rcvbuf: int | None = None) -> RawClient:
        host, port = host_port.rsplit(":", 1)
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:  # before connect, so the window is small from the start
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        await sock.connect((host, int(port)))
        client = cls(trio.SocketStream(sock), host_port)
        await client.stream.send_all(client.ws.send(Request(host=host_port, target=path)))
        while not any(isinstance(e, AcceptConnection) for e in await client.read()):
            pass
        return client

    async def read(self) -> list[Event]:
        data = await self.stream.receive_some(65536)
        self.ws.receive_data(data or None)
        return list(self.ws.events())

    async def events_until_eof(self) -> list[Event]:
        events: list[Event] = []
        while data := await self.stream.receive_some(65536):
            self.ws.receive_data(data)
            events.extend(self.ws.events())
        return events


def masked_frame(opcode: int, payload: bytes) -> bytes:
    # A client frame with a payload wsproto would refuse to produce (invalid UTF-8).
    assert len(payload) < 126
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked


async def http_exchange(host_port: str, request: bytes) -> bytes:
    host, port = host_port.rsplit(":", 1)
    async with await trio.open_tcp_stream(host, int(port)) as stream:
        await stream.send_all(request)
        response = b""
        while chunk := await stream.receive_some(65536):
            response += chunk
    return response


async def assert_echo(host_port: str) -> None:
    async with open_websocket_url(f"ws://{host_port}/server/echo/") as ws:
        await ws.send_message("still serving")
        assert await ws.get_message() == "still serving"


async def test_invalid_utf8_closes_with_1007(server: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="trio_djws")
    client = await RawClient.connect(server, "/server/echo/")
    await client.stream.send_all(masked_frame(0x1, b"ok \xff\xfe"))
    with trio.fail_after(WAIT):
        events = await client.events_until_eof()
        await server_handlers.RECORD.closed.wait()
    closes = [e for e in events if isinstance(e, CloseConnection)]
    assert [c.code for c in closes] == [1007]
    assert server_handlers.RECORD.close is not None
    assert server_handlers.RECORD.close[0] == 1007  # the application sees it too
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("1007" in w and "UTF-8" in w.replace("utf-8", "UTF-8") for w in warnings), warnings
    await assert_echo(server)


FRESH_CONNECTIONS = 200  # the trio_websocket engine lost the close frame on 1 in 6 of them
CONCURRENT = 20  # connections at once


async def test_invalid_utf8_gets_a_close_frame_on_every_fresh_connection(server: str) -> None:
    # The client's close frame follows the invalid one at once, often in the same read: the
    # trio_websocket engine used to close the socket with it unread (a reset that lost the
    # 1007), and the websockets library answers a close frame as soon as it parses it (1000,
    # before the engine had decoded the text).
    codes: list[list[int]] = []

    async def one() -> None:
        client = await RawClient.connect(server, "/server/echo/")
        async with client.stream:
            # As conformance clients do: the invalid frame, then a close frame at once.
            await client.stream.send_all(masked_frame(0x1, b"\xff"))
            await client.stream.send_all(masked_frame(0x8, b"\x03\xe8"))
            try:
                events = await client.events_until_eof()
            except trio.BrokenResourceError:  # reset: the server closed with unread data
                events = [*client.ws.events(), CloseConnection(code=0, reason="reset")]
        codes.append([e.code for e in events if isinstance(e, CloseConnection)])

    with trio.fail_after(WAIT):
        for _ in range(FRESH_CONNECTIONS // CONCURRENT):
            async with trio.open_nursery() as nursery:
                for _ in range(CONCURRENT):
                    nursery.start_soon(one)
    counts = collections.Counter(tuple(c) for c in codes)
    assert counts == {(1007,): FRESH_CONNECTIONS}


@pytest.mark.parametrize(
    "message", [b"x" * 1025, "é" * 600], ids=["binary", "text-1200-utf8-bytes"]
)
@override_settings(WEBSOCKET_MAX_MESSAGE_SIZE=1024)
async def test_oversized_message_closes_with_1009_and_logs_the_limit(
    server: str, message: str | bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trio_djws")
    async with open_websocket_url(f"ws://{server}/server/echo/") as ws:
        await ws.send_message(message)
        with pytest.raises(ConnectionClosed) as info, trio.fail_after(WAIT):
            await ws.get_message()
    assert info.value.reason.code == 1009
    with trio.fail_after(WAIT):
        await server_handlers.RECORD.closed.wait()
    assert server_handlers.RECORD.close is not None
    assert server_handlers.RECORD.close[0] == 1009
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("WEBSOCKET_MAX_MESSAGE_SIZE (1024 bytes)" in w for w in warnings), warnings
    await assert_echo(server)


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GARBAGE\r\n\r\n",
        b"GET /server/echo/ HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n",  # no Sec-WebSocket-Key
    ],
    ids=["not-http", "no-key"],
)
async def test_malformed_handshake_gets_400_and_the_server_goes_on(
    server: str, request_bytes: bytes
) -> None:
    with trio.fail_after(WAIT):
        response = await http_exchange(server, request_bytes)
    assert response.startswith(b"HTTP/1.1 400 "), response
    await assert_echo(server)


async def test_stray_byte_after_the_handshake_harms_only_that_connection(server: str) -> None:
    # Hypercorn issue 225: this packet kills Hypercorn's trio worker.
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    request = (
        f"GET /server/echo/ HTTP/1.1\r\nHost: {server}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\nx"
    ).encode()
    host, port = server.rsplit(":", 1)
    async with await trio.open_tcp_stream(host, int(port)) as stream:
        await stream.send_all(request)
        response = await stream.receive_some(65536)
        assert response.startswith(b"HTTP/1.1 101 ")
    await assert_echo(server)


async def test_fragmented_messages_are_reassembled_and_pings_answered(server: str) -> None:
    client = await RawClient.connect(server, "/server/echo/")
    async with client.stream:
        for part, last in (("frag", False), ("mented ", False), ("text", True)):
            await client.stream.send_all(client.ws.send(TextMessage(part, message_finished=last)))
        await client.stream.send_all(client.ws.send(Ping(b"are you there")))
        for part, last in ((b"\x00", False), (b"\x01", True)):
            await client.stream.send_all(client.ws.send(BytesMessage(part, message_finished=last)))
        events: list[Event] = []
        with trio.fail_after(WAIT):
            while len([e for e in events if isinstance(e, TextMessage | BytesMessage)]) < 2:
                events.extend(await client.read())
    pongs = [e.payload for e in events if isinstance(e, Pong)]
    messages = [e.data for e in events if isinstance(e, TextMessage | BytesMessage)]
    assert pongs == [b"are you there"]
    assert messages == ["fragmented text", b"\x00\x01"]
    assert all(e.message_finished for e in events if isinstance(e, TextMessage | BytesMessage))


async def test_4_mib_message_at_the_1_mib_limit_gets_1009_and_the_tcp_connection_closes(
    server: str,
) -> None:
    # Plain Hypercorn sends its 1009 and then never closes the TCP connection (docs,
    # "Transports"); manage.py serve and the standalone engines close it.
    client = await RawClient.connect(server, "/server/echo/")
    message = b"x" * (4 * 1024 * 1024)  # WEBSOCKET_MAX_MESSAGE_SIZE: 1 MiB, the default
    closed_at: float | None = None
    codes: list[int] = []

    async def send() -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await client.stream.send_all(client.ws.send(BytesMessage(message)))

    with trio.fail_after(WAIT):
        async with client.stream, trio.open_nursery() as nursery:
            nursery.start_soon(send)
            while data := await _receive_or_reset(client.stream):
                client.ws.receive_data(data)
                for event in client.ws.events():
                    if isinstance(event, CloseConnection):
                        codes.append(event.code)
                        closed_at = trio.current_time()
            eof_at = trio.current_time()
            nursery.cancel_scope.cancel()
    assert codes == [1009]
    assert closed_at is not None
    assert eof_at - closed_at < 1.0


async def _receive_or_reset(stream: trio.SocketStream) -> bytes:
    try:
        return bytes(await stream.receive_some(65536))
    except trio.BrokenResourceError:
        return b""


async def test_invalid_utf8_in_the_first_fragment_fails_before_the_message_ends(
    server: str,
) -> None:
    # RFC 6455 §8.1: fail as soon as the bytes cannot be UTF-8; the message never ends here.
    client = await RawClient.connect(server, "/server/echo/")
    first = bytearray(masked_frame(0x1, b"ok \xff\xfe"))
    first[0] &= 0x7F  # FIN clear: more fragments would follow
    with trio.fail_after(WAIT):
        async with client.stream:
            await client.stream.send_all(bytes(first))
            events = await client.events_until_eof()
    assert [e.code for e in events if isinstance(e, CloseConnection)] == [1007]


async def test_protocol_error_gets_a_1002_close_frame(server: str) -> None:
    client = await RawClient.connect(server, "/server/echo/")
    # RSV1 set without a negotiated extension: a protocol error (RFC 6455 §5.2).
    frame = bytearray(masked_frame(0x1, b"hello"))
    frame[0] |= 0x40
    with trio.fail_after(WAIT):
        async with client.stream:
            await client.stream.send_all(bytes(frame))
            events = await client.events_until_eof()
    assert [e.code for e in events if isinstance(e, CloseConnection)] == [1002]


@pytest.mark.parametrize("compression", [None, "deflate"])
async def test_permessage_deflate_is_negotiated_only_when_the_setting_asks(
    server_kind: str, compression: str | None, nursery: trio.Nursery
) -> None:
    message = "compressible " * 1000
    with override_settings(WEBSOCKET_COMPRESSION=compression):
        server = await start_transport(nursery, server_kind)
        async with trio_connect(f"ws://{server}/server/echo/", compression="deflate") as ws:
            await ws.send(message)
            with trio.fail_after(WAIT):
                assert await ws.recv() == message
            negotiated = [extension.name for extension in ws.protocol.extensions]
    # trio-websocket negotiates no extension (system check W080 says so).
    expected = ["permessage-deflate"] if compression and server_kind != "trio_websocket" else []
    assert negotiated == expected


async def test_client_close_code_and_reason_reach_the_app(server: str) -> None:
    async with open_websocket_url(f"ws://{server}/server/echo/") as ws:
        await ws.aclose(code=4001, reason="bye")
    with trio.fail_after(WAIT):
        await server_handlers.RECORD.closed.wait()
    assert server_handlers.RECORD.close == (4001, "bye")


@override_settings(
    WEBSOCKET_SEND_TIMEOUT=1, WEBSOCKET_SEND_QUEUE_SIZE=1000, WEBSOCKET_CLOSE_TIMEOUT=1
)
async def test_stalled_reader_is_closed_with_1008_at_the_write_deadline_and_blocks_no_one(
    server: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The send queue holds the whole flood, so only the engine's write deadline can end it.
    caplog.set_level(logging.INFO, logger="trio_djws")
    stalled = await RawClient.connect(server, "/server/flood/", rcvbuf=4096)
    async with stalled.stream:
        await assert_echo(server)  # while the flood is stuck on the stalled client
        with trio.fail_after(WAIT):
            await server_handlers.RECORD.flood_closed.wait()
    assert server_handlers.RECORD.flood_close == 1008  # a slow consumer
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("took no data" in w and "WEBSOCKET_SEND_TIMEOUT" in w for w in warnings), warnings
    await assert_echo(server)


@override_settings(
    WEBSOCKET_SEND_TIMEOUT=0.5, WEBSOCKET_SEND_QUEUE_SIZE=1000, WEBSOCKET_CLOSE_TIMEOUT=0.5
)
async def test_write_deadline_hit_while_a_hook_runs_and_a_message_waits_closes_with_1008(
    server: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The hook floods a client that reads nothing (the queue holds the flood: only the write
    # deadline ends it); the client's second message waits in the reader for the hook. The
    # write deadline makes it a slow consumer: the connection closes with 1008 (the close
    # frame is dropped WEBSOCKET_CLOSE_TIMEOUT later, unread), not with 1011.
    stalled = await RawClient.connect(server, "/server/flood-in-hook/", rcvbuf=4096)
    async with stalled.stream:
        both = stalled.ws.send(TextMessage("flood")) + stalled.ws.send(TextMessage("next"))
        await stalled.stream.send_all(both)  # one write: read together by the server
        with trio.fail_after(WAIT):
            await server_handlers.RECORD.flood_closed.wait()
    assert server_handlers.RECORD.flood_close == 1008
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, errors


async def test_a_message_written_in_parts_is_followed_by_the_queued_ones_in_order(
    server: str,
) -> None:
    # On the websockets engine, once the writer idles, send() writes at once; a message too
    # big for the socket is written in part and its rest goes first through the queue.
    client = await RawClient.connect(server, "/server/burst/", rcvbuf=4096)
    async with client.stream:
        await client.stream.send_all(client.ws.send(TextMessage("warm")))
        received: list[str] = []
        with trio.fail_after(WAIT):
            while received != ["warm"]:
                received += [e.data for e in await client.read() if isinstance(e, TextMessage)]
            await client.stream.send_all(client.ws.send(TextMessage("go")))
            expected = [server_handlers.BURST_BIG, *map(str, range(20))]
            text = ""
            while len(received) < 1 + len(expected):
                for event in await client.read():
                    if isinstance(event, TextMessage):
                        text += event.data
                        if event.message_finished:
                            received.append(text)
                            text = ""
    assert received[1:] == expected


@override_settings(
    WEBSOCKET_SEND_TIMEOUT=30, WEBSOCKET_SEND_QUEUE_SIZE=4, WEBSOCKET_CLOSE_TIMEOUT=1
)
async def test_broadcast_closes_a_stalled_member_with_1008_and_the_rest_get_all_in_order(
    server: str,
) -> None:
    # Group fan-out never waits for a member: once the stalled member's socket and its send
    # queue (4 messages) are full, the next broadcast closes it with 1008 at once (long
    # before the 30 s write deadline), and the members that read get every message in order.
    stalled = await RawClient.connect(server, "/server/room/?name=stalled", rcvbuf=4096)
    async with (
        stalled.stream,
        open_websocket_url(f"ws://{server}/server/room/?name=reader") as reader,
        open_websocket_url(f"ws://{server}/server/room/?name=sender") as sender,
    ):
        padding = "p" * 16384
        sent = 0
        extra = 3  # rounds after the stalled member was closed
        with trio.fail_after(WAIT):
            while extra:
                message = f"{sent:06d}{padding}"
                await sender.send_message(message)
                assert await sender.get_message() == message
                assert await reader.get_message() == message
                sent += 1
                if server_handlers.RECORD.stalled_closed.is_set():
                    extra -= 1
    assert server_handlers.RECORD.room_closes["stalled"] == 1008
    assert sent > extra  # the stalled member took a few before its buffers filled


@override_settings(
    WEBSOCKET_SEND_TIMEOUT=30, WEBSOCKET_SEND_QUEUE_SIZE=1, WEBSOCKET_CLOSE_TIMEOUT=1
)
async def test_abort_mid_frame_finishes_the_frame_then_sends_the_close_frame(
    server: str,
) -> None:
    # abort() cancels the writer part way through a frame. A close frame written after the
    # half frame would corrupt the stream: the engine keeps the frame's rest and writes it
    # first, so a peer that reads again (within WEBSOCKET_CLOSE_TIMEOUT) sees whole frames,
    # then the 1008 close frame (it used to see the start of a frame, then EOF: 1006).
    host, port = server.rsplit(":", 1)
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await sock.connect((host, int(port)))
    async with trio.SocketStream(sock) as stream:
        request = WSConnection(ConnectionType.CLIENT).send(
            Request(host=server, target="/server/abort-mid-frame/")
        )
        await stream.send_all(request)
        received = b""
        with trio.fail_after(WAIT):
            while b"\r\n\r\n" not in received:
                chunk = await stream.receive_some(4096)
                assert chunk, received
                received += chunk
            await trio.testing.wait_all_tasks_blocked()  # the writer is stuck on our window
            server_handlers.RECORD.release.set()
            await server_handlers.RECORD.flood_closed.wait()
            while chunk := await stream.receive_some(65536):  # now read it all, up to EOF
                received += chunk
    head, _, data = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 "), head
    assert server_handlers.RECORD.flood_close == 1008
    parser = WebSocketsClient(parse_uri(f"ws://{server}/"), state=State.OPEN, max_size=None)
    parser.receive_data(data)
    parser.receive_eof()
    frames = [e for e in parser.events_received() if isinstance(e, Frame)]
    assert parser.parser_exc is None or isinstance(parser.parser_exc, EOFError), repr(
        parser.parser_exc
    )
    messages = [f for f in frames if f.opcode is not Opcode.CLOSE]
    assert all(f.data == server_handlers.ABORT_MESSAGE for f in messages)
    assert frames and frames[-1].opcode is Opcode.CLOSE, "no close frame after the data"
    assert parser.parser_exc is None
    assert Close.parse(frames[-1].data) == Close(1008, "slow consumer")


@override_settings(
    WEBSOCKET_SEND_TIMEOUT=1,
    WEBSOCKET_SEND_QUEUE_SIZE=1000,
    WEBSOCKET_CLOSE_TIMEOUT=1,
    WEBSOCKET_SHUTDOWN_TIMEOUT=30,
)
async def test_stalled_reader_does_not_hold_up_shutdown(engine: str, nursery: trio.Nursery) -> None:
    server, stop, stopped = await start_stoppable(nursery, engine)
    stalled = await RawClient.connect(server, "/server/flood/", rcvbuf=4096)
    async with stalled.stream:
        await assert_echo(server)
        started = trio.current_time()
        stop.cancel()
        with trio.fail_after(WAIT):
            await stopped.wait()
    # Far below WEBSOCKET_SHUTDOWN_TIMEOUT: the write deadline aborted the stalled stream.
    assert trio.current_time() - started < 15


async def test_shutdown_delivers_queued_messages_then_closes_with_1001(
    engine: str, nursery: trio.Nursery
) -> None:
    server, stop, stopped = await start_stoppable(nursery, engine)
    async with open_websocket_url(f"ws://{server}/server/queue/") as ws:
        await ws.send_message("50")
        with trio.fail_after(WAIT):
            await server_handlers.RECORD.queued.wait()
        stop.cancel()  # the server drains while we read
        received = []
        with pytest.raises(ConnectionClosed) as info, trio.fail_after(WAIT):
            while True:
                received.append(await ws.get_message())
    with trio.fail_after(WAIT):
        await stopped.wait()
    assert received == [f"queued {i}" for i in range(50)]
    assert info.value.reason.code == 1001
    assert server_handlers.RECORD.close is not None
    assert server_handlers.RECORD.close[0] == 1001


async def test_handshake_during_shutdown_gets_503(engine: str, nursery: trio.Nursery) -> None:
    server, stop, stopped = await start_stoppable(nursery, engine)
    host, port = server.rsplit(":", 1)
    async with (
        open_websocket_url(f"ws://{server}/server/slow-close/"),
        await trio.open_tcp_stream(host, int(port)) as late,
    ):
        await trio.testing.wait_all_tasks_blocked()  # the server has accepted ``late``
        stop.cancel()  # the drain starts; the slow on_close keeps it going
        with trio.fail_after(WAIT):
            await server_handlers.RECORD.in_on_close.wait()
        key = "dGhlIHNhbXBsZSBub25jZQ=="
        await late.send_all(
            f"GET /server/echo/ HTTP/1.1\r\nHost: {server}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        with trio.fail_after(WAIT):
            response = await late.receive_some(65536)
        assert response.startswith(b"HTTP/1.1 503 "), response
        server_handlers.RECORD.release.set()
    with trio.fail_after(WAIT):
        await stopped.wait()


@override_settings(WEBSOCKET_PING_INTERVAL=0.05)
async def test_keepalive_pings_the_client(server_kind: str, nursery: trio.Nursery) -> None:
    server = await start_transport(nursery, server_kind)  # manage.py serve reads it at start
    client = await RawClient.connect(server, "/server/echo/")
    async with client.stream:
        with trio.fail_after(WAIT):
            while not any(isinstance(e, Ping) for e in await client.read()):
                pass


async def test_serve_reports_the_bound_port(engine: str, nursery: trio.Nursery) -> None:
    addresses = await nursery.start(serve, "127.0.0.1", 0)
    assert len(addresses) == 1
    host, port = addresses[0]
    assert host == "127.0.0.1"
    assert port > 0
    await assert_echo(f"{host}:{port}")


def test_unknown_engine_is_refused() -> None:
    with pytest.raises(ValueError, match=r"WEBSOCKET_ENGINE must be one of .* got 'nope'"):
        get_engine("nope")


@pytest.mark.parametrize(
    ("setting", "value"),
    [("WEBSOCKET_ENGINE", "nope"), ("WEBSOCKET_PORT", 70000), ("WEBSOCKET_HOST", 8001)],
)
def test_bad_server_settings_are_system_check_errors(setting: str, value: object) -> None:
    with override_settings(**{setting: value}):
        errors = [e for e in checks.run_checks() if e.id == "trio_djws.E001"]
    assert len(errors) == 1
    assert setting in errors[0].msg
