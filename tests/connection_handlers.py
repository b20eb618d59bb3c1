"""Handlers for tests/test_connection.py, registered when that module imports this one
(not through WEBSOCKET_HANDLERS: tests/test_conf.py pins that setting)."""

from __future__ import annotations

import trio

from trio_djws import BaseWSClass, ConnectionClosed, Namespace, Reject
from trio_djws.typing import Message
from trio_djws.websocket import WebSocket


class Record:
    """What the connection handlers saw; reset by each test."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.on_close_code: int | None = None
        self.on_close_closed: bool | None = None
        self.closed = trio.Event()
        self.in_hook = trio.Event()


RECORD = Record()


class _Recording(BaseWSClass):
    async def on_close(self, websocket: WebSocket) -> None:
        RECORD.on_close_code = websocket.close_code
        RECORD.on_close_closed = websocket.closed
        RECORD.closed.set()


@Namespace("/connection/stream/")
class Stream(_Recording):
    """on_message("stream") sends a tick every second until the connection closes."""

    async def on_message(self, websocket: WebSocket, message: Message) -> None:
        RECORD.in_hook.set()
        ticks = 0
        try:
            while True:
                await websocket.send(f"tick {ticks}")
                ticks += 1
                # The behaviour under test: a periodic producer (a live-dashboard ticker).
                # Tests run it under autojump_clock, or read only its first tick.
                await trio.sleep(1)
        except ConnectionClosed as exc:
            RECORD.events.append(f"send raised {exc.code}")
            raise


@Namespace("/connection/wait/")
class Wait(_Recording):
    """on_message("wait") waits forever without sending; any other message is recorded
    after a one-second pause."""

    async def on_message(self, websocket: WebSocket, message: Message) -> None:
        RECORD.in_hook.set()
        if message == "wait":
            await trio.sleep_forever()
        # The behaviour under test: a slow hook, still busy when the peer leaves
        # (virtual time: its tests use autojump_clock).
        await trio.sleep(1)
        RECORD.events.append(f"handled {message!s}")


@Namespace("/connection/fail/")
class FailInOnMessage(_Recording):
    """on_message("boom") raises ValueError; "reject" raises Reject after the accept."""

    async def on_message(self, websocket: WebSocket, message: Message) -> None:
        if message == "reject":
            raise Reject(404, "too late")
        raise ValueError("boom")


@Namespace("/connection/history/")
class History(BaseWSClass):
    """Queues ``?n=`` messages in on_connect, before the accept (a history replay)."""

    async def on_connect(self, websocket: WebSocket, path: str) -> None:
        for i in range(int(websocket.query.get("n", "10"))):
            await websocket.send(f"history {i}")


@Namespace("/connection/ticker/")
class Ticker(_Recording):
    """on_connect starts a background task that sends a tick every second until the
    connection ends (which cancels it), counting them in ``websocket.ticks`` (an attribute
    of the handler's own); the client never sends anything."""

    async def on_connect(self, websocket: WebSocket, path: str) -> None:
        websocket.ticks = 0  # type: ignore[attr-defined]  # handlers may add attributes
        websocket.start_soon(self._tick, websocket)

    async def _tick(self, websocket: WebSocket) -> None:
        while True:
            await websocket.send(f"tick {websocket.ticks}")  # type: ignore[attr-defined]
            websocket.ticks += 1  # type: ignore[attr-defined]
            # A periodic producer; its tests use autojump_clock.
            await trio.sleep(1)
