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
