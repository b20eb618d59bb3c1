"""Slow consumers on every transport (docs/explanation/backpressure.md): a group member whose
send queue is full gets the WEBSOCKET_SEND_TIMEOUT grace that ``send()`` gets, and a slow
consumer's 1008 close frame reaches a client that reads again.

The servers run in this process (Hypercorn's trio worker, ``manage.py serve``'s listener, the
standalone engines) with the handlers below; the clients are raw sockets with a 4 KiB receive
buffer and wsproto, so that they stop the server's writes while they read nothing. Live
sockets: real time, small settings, ``fail_after``.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import Final

import pytest
import trio
import trio.testing
from django.test import override_settings
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Request,
    TextMessage,
)

from tests.conftest import TRANSPORTS, start_transport
from tests.test_hardening import assert_fds_back_to, open_fds
from trio_djws import BaseWSClass, ConnectionClosed, Namespace, send_to_group
from trio_djws.asgi import get_asgi_application
from trio_djws.state import current_server
from trio_djws.testing import WebSocketTestClient
from trio_djws.typing import Message
from trio_djws.websocket import WebSocket

GROUP: Final = "slow-consumer-members"
PADDING: Final = "x" * (64 * 1024)  # large messages: a few fill the socket buffers
FLOOD_COUNT: Final = 400  # 25 MiB: more than any socket buffer pair holds
MAX_PUBLISHED: Final = 400  # a bound on the fan-out loop below
HELD: Final = 3  # group messages held in the overflow (its bound: the queue size, 4)
TIMEOUT: Final = 45.0  # seconds, real time: the peers are sockets
NO_HYPERCORN: Final = [t for t in TRANSPORTS if t != "hypercorn"]


def numbered(i: int) -> str:
    return f"{i:06d}{PADDING}"


@dataclass
class Record:
    """What the handlers saw; reset by each test."""

    joined: trio.Event = field(default_factory=trio.Event)
    closed: trio.Event = field(default_factory=trio.Event)
    close: tuple[int | None, str] | None = None
    closed_at: float = 0.0


RECORD = Record()


@pytest.fixture(autouse=True)
def _record() -> None:
    global RECORD
    RECORD = Record()


class _Recording(BaseWSClass):
    async def on_close(self, websocket: WebSocket) -> None:
        RECORD.close = (websocket.close_code, websocket.close_reason)
        RECORD.closed_at = trio.current_time()
        RECORD.closed.set()


@Namespace("/slow/member/")
class Member(_Recording):
    """Joins GROUP; answers a message with "own " + it, sent with send()."""

    async def on_connect(self, websocket: WebSocket, path: str) -> None:
        await websocket.join(GROUP)
        RECORD.joined.set()

    async def on_message(self, websocket: WebSocket, message: Message) -> None:
        await websocket.send(f"own {message}")


@Namespace("/slow/sender/")
class Sender(_Recording):
    """Sends FLOOD_COUNT numbered messages with send(), from a task of the connection."""

    async def on_connect(self, websocket: WebSocket, path: str) -> None:
        websocket.start_soon(self.flood, websocket)

    async def flood(self, websocket: WebSocket) -> None:
        for i in range(FLOOD_COUNT):
            await websocket.send(numbered(i))


class SlowClient:
    """A WebSocket client with a 4 KiB receive buffer that reads only when told to."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.messages: list[str] = []
        self._text = ""
        self.close: CloseConnection | None = None

    @classmethod
    async def connect(cls, address: str, path: str) -> SlowClient:
        host, port = address.rsplit(":", 1)
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # Before connect, so that the window is small from the start (buffers autotune).
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        await sock.connect((host, int(port)))
        client = cls(trio.SocketStream(sock))
        await client.stream.send_all(client.ws.send(Request(host=address, target=path)))
        accepted = False
        while not accepted:
            accepted = any(isinstance(e, AcceptConnection) for e in await client._read())
        return client

    async def _read(self) -> list[Event]:
        try:
            data = await self.stream.receive_some(65536)
        except trio.BrokenResourceError:
            data = b""  # reset: the server closed with our data unread
        self.ws.receive_data(data or None)
        events = list(self.ws.events())
        for event in events:
            if isinstance(event, TextMessage):
                self._text += event.data
                if event.message_finished:
                    self.messages.append(self._text)
                    self._text = ""
            elif isinstance(event, BytesMessage):
                raise AssertionError("no binary message was sent")
            elif isinstance(event, CloseConnection) and self.close is None:
                self.close = event  # (wsproto reports the EOF after it as a 1006 close)
        if not data:
            raise EOFError
        return events

    async def read_messages(self, count: int) -> None:
        """Read until ``count`` messages in all have arrived."""
        while len(self.messages) < count:
            await self._read()

    async def read_until_closed(self) -> None:
        """Read until the server's close frame (answered) and its EOF; or a bare EOF."""
        try:
            while self.close is None:
                await self._read()
            await self.stream.send_all(self.ws.send(self.close.response()))
            while True:
                await self._read()
        except EOFError:
            pass


def assert_in_order(messages: list[str]) -> None:
    assert [m[:6] for m in messages] == [f"{i:06d}" for i in range(len(messages))]
    assert all(m[6:] == PADDING for m in messages)


async def fan_out_until_held(held: int) -> int:
    """Send numbered messages to GROUP, letting every task run after each, until ``held`` of
    them found the member's send queue full; returns how many were sent."""
    groups = current_server().groups
    start = groups.overflows
    sent = 0
    while groups.overflows - start < held:
        assert sent < MAX_PUBLISHED, "the member's queue never filled"
        await send_to_group(GROUP, numbered(sent))
        sent += 1
        await trio.testing.wait_all_tasks_blocked()
    return sent


def assert_slow_consumer_close_frame(client: SlowClient) -> None:
    """The client read the 1008 "slow consumer" close frame (not a cut connection)."""
    assert client.close is not None, "no close frame: the connection was cut"
    assert (client.close.code, client.close.reason) == (1008, "slow consumer")


@pytest.mark.parametrize("transport", TRANSPORTS)
@override_settings(
    WEBSOCKET_SEND_QUEUE_SIZE=4, WEBSOCKET_SEND_TIMEOUT=30, WEBSOCKET_CLOSE_TIMEOUT=2
)
async def test_group_member_that_catches_up_within_the_send_timeout_loses_nothing(
    transport: str, nursery: trio.Nursery
) -> None:
    # Was: the first group message over the full queue aborted the member at once.
    address = await start_transport(nursery, transport)
    with trio.fail_after(TIMEOUT):
        client = await SlowClient.connect(address, "/slow/member/")
        async with client.stream:
            await RECORD.joined.wait()
            sent = await fan_out_until_held(HELD)
            assert not RECORD.closed.is_set()  # behind, within its grace
            await client.read_messages(sent)  # it reads again: all of them, in order
            assert_in_order(client.messages)
            await send_to_group(GROUP, numbered(sent))  # and it stays a member
            await client.read_messages(sent + 1)
            assert_in_order(client.messages)
            assert not RECORD.closed.is_set()


@pytest.mark.parametrize("transport", TRANSPORTS)
@override_settings(
    WEBSOCKET_SEND_QUEUE_SIZE=4, WEBSOCKET_SEND_TIMEOUT=3, WEBSOCKET_CLOSE_TIMEOUT=10
)
async def test_group_member_still_behind_at_the_send_timeout_gets_the_1008_close_frame(
    transport: str, nursery: trio.Nursery
) -> None:
    # Was: closed at once, and (on the engines) without a close frame: the abort cut the
    # write of a frame short and closed the socket.
    address = await start_transport(nursery, transport)
    with trio.fail_after(TIMEOUT):
        client = await SlowClient.connect(address, "/slow/member/")
        async with client.stream:
            await RECORD.joined.wait()
            await fan_out_until_held(HELD)
            behind = trio.current_time()
            assert not RECORD.closed.is_set()  # not at once
            await RECORD.closed.wait()
            # The engines' write deadline (the peer took no data for WEBSOCKET_SEND_TIMEOUT)
            # started a moment before the queue filled; either way about 3 s, not at once.
            assert RECORD.closed_at - behind >= 1.0
            assert RECORD.close == (1008, "slow consumer")
            await client.read_until_closed()  # it reads again, after the close
    assert_slow_consumer_close_frame(client)
    assert_in_order(client.messages)  # whole messages, then the close frame


@pytest.mark.parametrize("transport", TRANSPORTS)
@override_settings(
    WEBSOCKET_SEND_QUEUE_SIZE=4, WEBSOCKET_SEND_TIMEOUT=1, WEBSOCKET_CLOSE_TIMEOUT=10
)
async def test_slow_consumer_of_send_gets_the_1008_close_frame_when_it_reads_again(
    transport: str, nursery: trio.Nursery
) -> None:
    # Was (engines, serve): the abort cut the blocked write short and closed the socket: the
    # client saw the TCP connection end (1006) although the handler saw 1008.
    address = await start_transport(nursery, transport)
    with trio.fail_after(TIMEOUT):
        client = await SlowClient.connect(address, "/slow/sender/")
        async with client.stream:
            await RECORD.closed.wait()
            assert RECORD.close == (1008, "slow consumer")
            await client.read_until_closed()
    assert_slow_consumer_close_frame(client)
    assert client.messages
    assert_in_order(client.messages)


@pytest.mark.parametrize("transport", NO_HYPERCORN)
@pytest.mark.parametrize("path", ["/slow/sender/", "/slow/member/"])
@override_settings(
    WEBSOCKET_SEND_QUEUE_SIZE=4, WEBSOCKET_SEND_TIMEOUT=0.5, WEBSOCKET_CLOSE_TIMEOUT=0.5
)
async def test_slow_consumer_that_never_reads_is_dropped_and_leaks_no_socket(
    transport: str, path: str, nursery: trio.Nursery
) -> None:
    # The close frame waits WEBSOCKET_CLOSE_TIMEOUT at most: a client that never reads again
    # is dropped then, and its socket closed. Plain Hypercorn cannot do this (its socket
    # writes are shielded and have no deadline; docs/howto/production-hardening.md).
    address = await start_transport(nursery, transport)
    before = open_fds()
    # send() 0.5 s + the close frame 0.5 s + the peer's close frame 0.5 s, and slack.
    with trio.fail_after(10):
        client = await SlowClient.connect(address, path)
        async with client.stream:
            if path == "/slow/member/":
                await RECORD.joined.wait()
                await fan_out_until_held(HELD)
            await RECORD.closed.wait()
            assert RECORD.close == (1008, "slow consumer")
            await current_server().wait_idle()
            with pytest.raises(EOFError):  # the server has closed its side
                while True:
                    await client._read()
    await assert_fds_back_to(before, None)


# -- in memory: the runtime's overflow, exactly (MockClock) -----------------------------------
# The in-memory client with a buffer of 1 message: it holds g0, the writer waits to hand it g1,
# the send queue (2) holds g2 and g3, and the overflow (2) holds what follows.


async def _member_behind(published: int, path: str = "/slow/member/") -> WebSocketTestClient:
    client = WebSocketTestClient(get_asgi_application(), path, receive_buffer=1)
    await client.__aenter__()
    await RECORD.joined.wait()
    for i in range(published):
        await send_to_group(GROUP, f"g{i}")
    await trio.testing.wait_all_tasks_blocked()
    return client


async def _read_all(client: WebSocketTestClient, count: int) -> list[str]:
    return [str(await client.receive()) for _ in range(count)]


@override_settings(WEBSOCKET_SEND_QUEUE_SIZE=2, WEBSOCKET_SEND_TIMEOUT=10)
async def test_held_group_messages_go_before_what_is_sent_later_and_nothing_is_lost(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client = await _member_behind(6)  # g4 and g5 held
    try:
        await client.send("x")  # the handler's send() waits behind the held messages
        await trio.testing.wait_all_tasks_blocked()
        await trio.sleep(9)  # within WEBSOCKET_SEND_TIMEOUT
        assert not RECORD.closed.is_set()
        assert await _read_all(client, 7) == [f"g{i}" for i in range(6)] + ["own x"]
        await trio.sleep(2)  # past the deadline it would have had: it caught up, it is off
        await send_to_group(GROUP, "g6")
        assert await client.receive() == "g6"
        assert not RECORD.closed.is_set()
    finally:
        await client.__aexit__(None, None, None)


@override_settings(WEBSOCKET_SEND_QUEUE_SIZE=2, WEBSOCKET_SEND_TIMEOUT=10)
async def test_group_member_still_behind_is_closed_at_the_send_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client = await _member_behind(5)  # g4 held
    try:
        behind = trio.current_time()
        await RECORD.closed.wait()
        assert trio.current_time() - behind == pytest.approx(10)
        assert RECORD.close == (1008, "slow consumer")
        received = []
        with pytest.raises(ConnectionClosed) as info:
            while True:
                received.append(await client.receive())
        assert (info.value.code, info.value.reason) == (1008, "slow consumer")
        # The queue and the overflow are dropped; the in-memory transport hands over whole
        # messages, so g1, whose hand-over was cancelled, was not sent either.
        assert received == ["g0"]
    finally:
        await client.__aexit__(None, None, None)


@override_settings(WEBSOCKET_SEND_QUEUE_SIZE=2, WEBSOCKET_SEND_TIMEOUT=10)
async def test_group_member_past_its_overflow_is_closed_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    start = trio.current_time()
    client = await _member_behind(7)  # g4, g5 held; g6 finds the overflow full
    try:
        await RECORD.closed.wait()
        assert trio.current_time() == start
        assert RECORD.close == (1008, "slow consumer")
    finally:
        await client.__aexit__(None, None, None)


@dataclass
class Closing:
    """Events of the ClosingMember handler; reset by each test that uses it."""

    in_on_close: trio.Event = field(default_factory=trio.Event)
    release: trio.Event = field(default_factory=trio.Event)


CLOSING = Closing()


@Namespace("/slow/closing/")
class ClosingMember(Member):
    """A member that closes normally on "bye" and holds its on_close until released (a DB
    write in on_close): it is CLOSING, still in GROUP, while group messages keep coming."""

    async def on_message(self, websocket: WebSocket, message: Message) -> None:
        if message == "bye":
            websocket.close_nowait()  # 1000: what is queued goes first

    async def on_close(self, websocket: WebSocket) -> None:
        CLOSING.in_on_close.set()
        await CLOSING.release.wait()
        await super().on_close(websocket)


@override_settings(WEBSOCKET_SEND_QUEUE_SIZE=2, WEBSOCKET_SEND_TIMEOUT=10)
async def test_group_message_over_a_full_queue_during_a_normal_close_is_delivered_first(
    autojump_clock: trio.testing.MockClock,
) -> None:
    global CLOSING
    CLOSING = Closing()
    # g0 with the client, g1 with the writer, g2 and g3 queued: full
    client = await _member_behind(4, "/slow/closing/")
    try:
        await client.send("bye")
        await CLOSING.in_on_close.wait()
        await send_to_group(GROUP, "g4")  # the queue is full, the member CLOSING: held
        received = [str(await client.receive())]  # room in the queue
        await trio.testing.wait_all_tasks_blocked()
        await send_to_group(GROUP, "g5")  # after g4, never before it
        CLOSING.release.set()
        with pytest.raises(ConnectionClosed) as info:
            while True:
                received.append(str(await client.receive()))
        assert received == [f"g{i}" for i in range(6)]
        assert (info.value.code, RECORD.close) == (1000, (1000, ""))
    finally:
        CLOSING.release.set()
        await client.__aexit__(None, None, None)
