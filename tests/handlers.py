"""Handlers used by the test suite (registered through WEBSOCKET_HANDLERS)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
from trio_djws.handlers import BroadcastHandler, EchoHandler

from trio_djws import BaseMixin, BaseWSClass, Block, CloseCode, ConnectionClosed, Namespace, Reject
from trio_djws.typing import Message
from trio_djws.websocket import WebSocket


@Namespace("/echo/")
class Echo(EchoHandler):
    pass


@Namespace("/room/<slug:group>/")
class Room(BroadcastHandler):
    pass


@Namespace("/items/<int:pk>/")
class Item(BaseWSClass):
    async def on_connect(self, websocket: WebSocket, path: str) -> None:
        await websocket.send_json(
            {"pk": websocket.kwargs["pk"], "path": path, "q": websocket.query.get("q")}
        )


@Namespace("/reject/")
class Rejecting(BaseWSClass):
    async def on_connect(self, websocket: WebSocket, path: str) -> None:
        raise Reject(status=int(websocket.query.get("status", "403")))


@Namespace("/subprotocol/")
class Subprotocol(BaseWSClass):
    async def on_connect(self, websocket: WebSocket, path: str) -> None:
        websocket.select_subprotocol("chat.v2")

    async def on_message(self, websocket: WebSocket, message: Message) -> None:
        await websocket.send(websocket.subprotocol or "")


@Namespace("/greet-then-close/")
class GreetThenClose(BaseWSClass):
    """Queues messages in on_connect; closes on the first message after queueing more."""

    async def on_connect(self, websocket: WebSocket, path: str) -> None:
        for i in range(5):
            await websocket.send(f"hello {i}")

    async def on_message(self, websocket: WebSocket, message: Message) -> None:
        count = int(message)
        for i in range(count):
            await websocket.send(f"queued {i}")
        await websocket.close(4000, "done")


@Namespace("/fail/")
class Failing(BaseWSClass):
    async def on_message(self, websocket: WebSocket, message: Message) -> None:
        if message == "boom":
            raise ValueError("boom")
        await websocket.send(message)


@Namespace("/fail-connect/")
class FailingConnect(BaseWSClass):
    async def on_connect(self, websocket: WebSocket, path: str) -> None:
        raise ValueError("broken on_connect")


EVENTS: list[str] = []
GUARD_EXITED = trio.Event()


class Upper(BaseMixin):
    async def on_message(self, websocket: WebSocket, message: Message) -> Message | None:
        EVENTS.append("Upper")
        return message.upper() if isinstance(message, str) else None


class Guard(BaseMixin):
    async def on_connect(self, websocket: WebSocket, path: str) -> None:
        EVENTS.append("Guard.connect")
        if websocket.query.get("deny"):
            raise Block("denied")

    async def on_message(self, websocket: WebSocket, message: Message) -> Message | None:
        EVENTS.append("Guard")
        if message == "secret":
            raise Block("no secrets")
        return None

    @asynccontextmanager
    async def connection(self, websocket: WebSocket) -> AsyncIterator[None]:
        EVENTS.append("Guard.enter")
        try:
            yield
        finally:
            EVENTS.append("Guard.exit")
            GUARD_EXITED.set()


@Namespace("/mixins/")
class Mixed(Upper, Guard, BaseWSClass):
    async def on_connect(self, websocket: WebSocket, path: str) -> None:
        EVENTS.append("handler.connect")

    async def on_message(self, websocket: WebSocket, message: Message) -> None:
        EVENTS.append("handler")
        await websocket.send(message)

    async def on_close(self, websocket: WebSocket) -> None:
        EVENTS.append(f"handler.close:{websocket.close_code}")


@Namespace("/sync/")
class SyncHooks(BaseWSClass):
    def on_message(self, websocket: WebSocket, message: Message) -> None:  # type: ignore[override]
        import threading

        assert threading.current_thread() is not threading.main_thread()
        websocket.sync.send(f"thread:{message!s}")


@Namespace("/background/")
class Background(BaseWSClass):
    async def on_connect(self, websocket: WebSocket, path: str) -> None:
        websocket.start_soon(self.ticker, websocket)

    async def ticker(self, websocket: WebSocket) -> None:
        await websocket.send("tick")
        await trio.sleep_forever()

    async def on_message(self, websocket: WebSocket, message: Message) -> None:
        if message == "crash":
            websocket.start_soon(self.crash)

    async def crash(self) -> None:
        raise RuntimeError("background task crashed")


@Namespace("/policy/")
class Policy(BaseWSClass):
    async def on_message(self, websocket: WebSocket, message: Message) -> None:
        await websocket.close(CloseCode.POLICY_VIOLATION, "not allowed")


FLOOD_RESULT: dict[str, int] = {}
FLOOD_STOPPED = trio.Event()


@Namespace("/flood/")
class Flood(BaseWSClass):
    """Sends numbered messages until send() raises; records the close code it saw."""

    async def on_connect(self, websocket: WebSocket, path: str) -> None:
        websocket.start_soon(self.flood, websocket)

    async def flood(self, websocket: WebSocket) -> None:
        sent = 0
        try:
            while True:
                await websocket.send(f"{sent}")
                sent += 1
        except ConnectionClosed as exc:
            FLOOD_RESULT.update(sent=sent, code=exc.code)
            FLOOD_STOPPED.set()
            raise


@Namespace("/orm-on-trio-thread/")
class OrmOnTrioThread(BaseWSClass):
    async def on_message(self, websocket: WebSocket, message: Message) -> None:
        from django.contrib.auth.models import User
        from django.core.exceptions import SynchronousOnlyOperation

        try:
            User.objects.count()
        except SynchronousOnlyOperation as exc:
            await websocket.send(type(exc).__name__)
        else:
            await websocket.send("no error")


@Namespace("/orm-in-thread/")
class OrmInThread(BaseWSClass):
    def on_message(self, websocket: WebSocket, message: Message) -> None:  # type: ignore[override]
        from django.contrib.auth.models import User

        websocket.sync.send(str(User.objects.count()))


@Namespace("/inspect/<int:pk>/")
class Inspect(BaseWSClass):
    """Reports what the websocket object carries, and a datetime through send_json."""

    async def on_connect(self, websocket: WebSocket, path: str) -> None:
        import datetime as dt

        await websocket.send_json(
            {
                "cookies": websocket.cookies,
                "twice": websocket.headers.get("x-twice"),
                "tags": websocket.query.getlist("tag"),
                "kwargs": websocket.kwargs,
                "id_length": len(websocket.id),
                "when": dt.datetime(2026, 11, 21, 12, 0, tzinfo=dt.UTC),
            }
        )
