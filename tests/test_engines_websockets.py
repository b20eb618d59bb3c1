"""The ``websockets`` engine's write paths (trio_djws.engines.websockets), on a real TCP connection
with the library's own client protocol at the other end: the non-blocking fast path
(``send_nowait``), a frame partly written by it and finished by the queued path, the frame
reused across a broadcast, and the protocol's own framing when an extension was negotiated."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
import trio
from websockets.client import ClientProtocol
from websockets.extensions.permessage_deflate import (
    ClientPerMessageDeflateFactory,
    ServerPerMessageDeflateFactory,
)
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

from trio_djws.engines.websockets import SansIOTransport
from trio_djws.exceptions import ConnectionClosed, SlowConsumer
from trio_djws.typing import Message

WAIT = 20  # seconds; real time: the peers are sockets
BIG = "x" * (8 * 1024 * 1024)  # far more than the socket buffers hold: written in parts


@dataclass
class Peer:
    """The client end: its socket (never read until ``read_messages``) and protocol."""

    stream: trio.SocketStream
    protocol: ClientProtocol
    messages: list[Message] = field(default_factory=list)
    pings: int = 0

    async def read_messages(self, count: int) -> list[Message]:
        """Read until ``count`` messages (and any pings) have arrived; returns them all."""
        while len(self.messages) < count:
            data = await self.stream.receive_some(65536)
            assert data, f"EOF after {len(self.messages)} messages"
            self.protocol.receive_data(data)
            for event in self.protocol.events_received():
                assert isinstance(event, Frame), event
                if event.opcode is Opcode.TEXT:
                    self.messages.append(event.data.decode())
                elif event.opcode is Opcode.BINARY:
                    self.messages.append(bytes(event.data))
                elif event.opcode is Opcode.PING:
                    self.pings += 1
        return self.messages


Connect = Callable[..., Awaitable[tuple[SansIOTransport, Peer]]]


@pytest.fixture
async def connect() -> AsyncIterator[Connect]:
    """Opens a connection: the server's ``SansIOTransport`` (accepted) and the client."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    opened: list[trio.SocketStream] = []

    async def open_pair(*, deflate: bool = False) -> tuple[SansIOTransport, Peer]:
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a slow reader's window
        await sock.connect(("127.0.0.1", port))
        client_stream = trio.SocketStream(sock)
        server_stream = await listeners[0].accept()
        opened.extend([client_stream, server_stream])
        client = ClientProtocol(
            parse_uri(f"ws://127.0.0.1:{port}/"),
            extensions=[ClientPerMessageDeflateFactory()] if deflate else None,
            max_size=None,
        )
        server = ServerProtocol(
            extensions=[ServerPerMessageDeflateFactory()] if deflate else None, max_size=None
        )
        client.send_request(client.connect())
        server.receive_data(b"".join(client.data_to_send()))
        [request] = server.events_received()
        assert isinstance(request, Request)
        response = server.accept(request)
        transport = SansIOTransport(server_stream, server, response, [])
        await transport.accept(None)
        peer = Peer(client_stream, client)
        while not client.events_received():
            client.receive_data(await client_stream.receive_some(65536))
        assert client.handshake_exc is None
        return transport, peer

    yield open_pair
    for stream in opened:
        await trio.aclose_forcefully(stream)
    for listener in listeners:
        await listener.aclose()


async def test_fast_path_writes_whole_frames_including_empty_messages(connect: Connect) -> None:
    transport, peer = await connect()
    sent = ["", b"", "héllo", b"\x00\xff", ""]
    for message in sent:
        transport.send_nowait(message)
    with trio.fail_after(WAIT):
        assert await peer.read_messages(len(sent)) == sent


async def test_partial_write_is_finished_first_and_order_is_kept(
    connect: Connect, nursery: trio.Nursery
) -> None:
    transport, peer = await connect()
    # The socket takes only part of BIG: the caller must queue it ...
    with pytest.raises(trio.WouldBlock):
        transport.send_nowait(BIG)
    # ... and until its rest is written nothing else may jump in, on any path.
    with pytest.raises(trio.WouldBlock):
        transport.send_nowait("after")
    transport._protocol.send_ping(b"p")  # another task's write (keepalive) in between
    reading = trio.Event()

    async def read() -> None:
        await peer.read_messages(4)
        reading.set()

    nursery.start_soon(read)
    with trio.fail_after(WAIT):
        await transport._flush()  # the ping's flush writes the rest of BIG first
        await transport.send(BIG)  # the queued BIG: its rest is written, nothing twice
        await transport.send("after")
        await transport.send(BIG)  # the same object again: a whole new frame
        await transport.send("last")
        await reading.wait()
    assert [m if m != BIG else "BIG" for m in peer.messages] == ["BIG", "after", "BIG", "last"]
    assert peer.pings == 1


async def test_one_message_to_many_connections_is_framed_once_and_correct_for_each(
    connect: Connect,
) -> None:
    pairs = [await connect() for _ in range(3)]
    deflated, deflate_peer = await connect(deflate=True)
    message = "broadcast " * 20
    for transport, _ in pairs:
        transport.send_nowait(message)
    # An extension was negotiated: no fast path, the protocol makes (compressed) frames.
    with pytest.raises(trio.WouldBlock):
        deflated.send_nowait(message)
    with trio.fail_after(WAIT):
        await deflated.send(message)
        await deflated.send(b"binary")
        assert await deflate_peer.read_messages(2) == [message, b"binary"]
        for _, peer in pairs:
            assert await peer.read_messages(1) == [message]


async def test_send_nowait_refuses_once_the_connection_is_closing(connect: Connect) -> None:
    transport, _ = await connect()
    transport._protocol.send_close(1000, "bye")  # what close() does first
    with pytest.raises(trio.WouldBlock):
        transport.send_nowait("late")


async def test_receive_after_a_slow_consumer_was_dropped_reports_a_lost_connection(
    connect: Connect,
) -> None:
    transport, peer = await connect()
    # A small read leaves the transport waiting for readability before its next read.
    peer.protocol.send_text(b"hello")
    await peer.stream.send_all(b"".join(peer.protocol.data_to_send()))
    with trio.fail_after(WAIT):
        assert await transport.receive() == "hello"
    # The peer stops reading: the write deadline makes it a slow consumer (another task's
    # write, while this connection's reader was busy handing a message to a hook). The
    # socket stays open for the close frame, which the peer does not take either: dropped.
    transport._write_timeout = 0.1
    with trio.fail_after(WAIT), pytest.raises(SlowConsumer):
        await transport.send(BIG)
    assert transport._stream.socket.fileno() != -1
    transport._close_timeout = 0.1
    with trio.fail_after(WAIT):
        await transport.close(1008, "slow consumer")
    assert transport._stream.socket.fileno() == -1
    # The reader's next receive finds the socket closed: a lost connection, not a crash.
    with trio.fail_after(WAIT), pytest.raises(ConnectionClosed) as lost:
        await transport.receive()
    assert lost.value.code == 1006
