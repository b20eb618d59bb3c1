"""Hook resolution of handlers (trio_djws/handler.py) against a live Hypercorn trio server."""

from __future__ import annotations

import trio
from trio_websocket import open_websocket_url

from trio_djws import BaseMixin, BaseWSClass, Namespace
from trio_djws.typing import Message
from trio_djws.websocket import WebSocket

WAIT = 10.0  # seconds; generous bound on one exchange with the live server


class _Tag(BaseMixin):
    async def on_message(self, websocket: WebSocket, message: Message) -> None:
        await websocket.send(f"mixin {message!s}")


class _ParentHandler(_Tag, BaseWSClass):
    async def on_message(self, websocket: WebSocket, message: Message) -> None:
        await websocket.send(f"parent {message!s}")


@Namespace("/handler/subclass/")
class _ChildHandler(_ParentHandler):
    async def on_message(self, websocket: WebSocket, message: Message) -> None:
        await websocket.send(f"child {message!s}")


async def test_a_subclass_hook_overrides_its_parent_handlers_hook(ws_url: str) -> None:
    # A handler that inherits a mixin is no mixin itself: its overridden on_message must not
    # run as well as the subclass's (the mixin's still runs first).
    async with open_websocket_url(f"{ws_url}/handler/subclass/") as ws:
        with trio.fail_after(WAIT):
            await ws.send_message("x")
            await ws.send_message("y")
            received = [await ws.get_message() for _ in range(4)]
    assert received == ["mixin x", "child x", "mixin y", "child y"]


@Namespace("/handler/run-on-message/")
class _OwnRunOnMessage(BaseWSClass):
    # No mixin and an async on_message, so the receive loop would call on_message directly
    # (trio_djws.connection); an overridden run_on_message must still be what it calls.
    async def run_on_message(self, websocket: WebSocket, message: Message) -> None:
        await super().run_on_message(websocket, f"wrapped {message!s}")

    async def on_message(self, websocket: WebSocket, message: Message) -> None:
        await websocket.send(str(message))


async def test_an_overridden_run_on_message_runs_for_every_message(ws_url: str) -> None:
    async with open_websocket_url(f"{ws_url}/handler/run-on-message/") as ws:
        with trio.fail_after(WAIT):
            await ws.send_message("x")
            await ws.send_message("y")
            received = [await ws.get_message() for _ in range(2)]
    assert received == ["wrapped x", "wrapped y"]
