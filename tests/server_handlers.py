"""Handlers for tests/test_servers_standalone.py, registered when that module imports this
one (not through WEBSOCKET_HANDLERS: tests/test_conf.py pins that setting)."""

from __future__ import annotations

import trio
from trio_djws.handlers import BroadcastHandler

from trio_djws import BaseWSClass, Namespace
from trio_djws.typing import Message
from trio_djws.websocket import WebSocket


class Record:
    """What the handlers saw; reset by each test."""

    def __init__(self) -> None:
        self.close: tuple[int | None, str] | None = None
        self.closed = trio.Event()
        self.flood_close: int | None = None
        self.flood_closed = trio.Event()
        self.queued = trio.Event()
        self.in_on_close = trio.Event()
        self.release = trio.Event()
        self.room_closes: dict[str, int | None] = {}
        self.stalled_closed = trio.Event()


RECORD = Record()


class _Recording(BaseWSClass):
    async def on_close(self, websocket: WebSocket) -> None:
        RECORD.close = (websocket.close_code, websocket.close_reason)
        RECORD.closed.set()


@Namespace("/server/echo/")
class Echo(_Recording):
    async def on_message(self, websocket: WebSocket, message: Message) -> None:
        await websocket.send(message)


FLOOD_MESSAGE = b"x" * (64 * 1024)
FLOOD_COUNT = 400  # 25 MiB: more than any socket buffer pair holds


@Namespace("/server/flood/")
class Flood(_Recording):
    """Sends FLOOD_COUNT messages of 64 KiB from a background task, reading nothing."""

    async def on_connect(self, websocket: WebSocket, path: str) -> None:
        websocket.start_soon(self.flood, websocket)

    async def flood(self, websocket: WebSocket) -> None:
        for _ in range(FLOOD_COUNT):
            await websocket.send(FLOOD_MESSAGE)

    async def on_close(self, websocket: WebSocket) -> None:
        RECORD.flood_close = websocket.close_code
        RECORD.flood_closed.set()


@Namespace("/server/queue/")
class Queue(_Recording):
    """on_message(n): queues n messages, then waits until the connection closes."""

    async def on_message(self, websocket: WebSocket, message: Message) -> None:
        for i in range(int(message)):
            await websocket.send(f"queued {i}")
        RECORD.queued.set()
        await trio.sleep_forever()


@Namespace("/server/slow-close/")
class SlowClose(BaseWSClass):
    """on_close waits for RECORD.release (at most WEBSOCKET_CLOSE_TIMEOUT): keeps a drain going."""

    async def on_close(self, websocket: WebSocket) -> None:
        RECORD.in_on_close.set()
        await RECORD.release.wait()


@Namespace("/server/room/")
class Room(BroadcastHandler):
    """Relays every message to all members of one group; records each member's close code
    under its ``?name=``."""

    group = "server-room"

    async def on_close(self, websocket: WebSocket) -> None:
        name = websocket.query.get("name", "")
        RECORD.room_closes[name] = websocket.close_code
        if name == "stalled":
            RECORD.stalled_closed.set()


BURST_BIG = "b" * (4 * 1024 * 1024)  # more than the socket buffers hold: written in parts


@Namespace("/server/burst/")
class Burst(BaseWSClass):
    """ "warm" is echoed; any other message gets BURST_BIG, then "0" … "19"."""

    async def on_message(self, websocket: WebSocket, message: Message) -> None:
        if message == "warm":
            await websocket.send("warm")
            return
        await websocket.send(BURST_BIG)
        for i in range(20):
            await websocket.send(str(i))


@Namespace("/server/flood-in-hook/")
class FloodInHook(BaseWSClass):
    """on_message("flood") queues FLOOD_COUNT messages of 64 KiB, then waits until the
    connection ends (the client reads nothing): meanwhile the reader waits to hand the next
    message over. Records the close code."""

    async def on_message(self, websocket: WebSocket, message: Message) -> None:
        if message == "flood":
            for _ in range(FLOOD_COUNT):
                await websocket.send(FLOOD_MESSAGE)
            await trio.sleep_forever()

    async def on_close(self, websocket: WebSocket) -> None:
        RECORD.flood_close = websocket.close_code
        RECORD.flood_closed.set()


ABORT_MESSAGE = b"x" * (1024 * 1024)  # larger than the socket buffers: cut part way


@Namespace("/server/abort-mid-frame/")
class AbortMidFrame(BaseWSClass):
    """Sends ABORT_MESSAGE until the connection ends (the client stops reading); once
    RECORD.release is set, aborts with 1008 "slow consumer" (the writer is then blocked part
    way through a frame). Records the close code."""

    async def on_connect(self, websocket: WebSocket, path: str) -> None:
        websocket.start_soon(self.flood, websocket)
        websocket.start_soon(self.abort_on_release, websocket)

    async def flood(self, websocket: WebSocket) -> None:
        while True:
            await websocket.send(ABORT_MESSAGE)

    async def abort_on_release(self, websocket: WebSocket) -> None:
        await RECORD.release.wait()
        websocket.abort(1008, "slow consumer")

    async def on_close(self, websocket: WebSocket) -> None:
        RECORD.flood_close = websocket.close_code
        RECORD.flood_closed.set()
