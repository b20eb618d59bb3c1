"""Handlers for tests/test_hardening.py (registered through WEBSOCKET_HANDLERS)."""

from __future__ import annotations

import trio
import trio.testing

from trio_djws import BaseWSClass, CloseCode, Namespace
from trio_djws.typing import Message
from trio_djws.websocket import WebSocket


@Namespace("/harden/slow-accept/")
class SlowAccept(BaseWSClass):
    """Awaits a worker thread before the accept, as DjangoMiddlewareMixin does: Hypercorn has
    processed the whole first packet by the time the handshake is accepted."""

    async def on_connect(self, websocket: WebSocket, path: str) -> None:
        await trio.to_thread.run_sync(int)

    async def on_message(self, websocket: WebSocket, message: Message) -> None:
        await websocket.send(message)


@Namespace("/harden/policy-close/")
class PolicyClose(BaseWSClass):
    """Closes with 1008 on the first message, once the server has read everything the client
    sent (every other task is blocked: Hypercorn's reader on its full app queue)."""

    async def on_message(self, websocket: WebSocket, message: Message) -> None:
        await trio.testing.wait_all_tasks_blocked()
        websocket.abort(CloseCode.POLICY_VIOLATION, "flood")


@Namespace("/harden/named/<str:name>/")
class Named(BaseWSClass):
    """Accepts any name (``str`` matches everything but ``/``, control characters included)
    and closes with 4000 on the first message: a client string in the accept and close lines."""

    async def on_message(self, websocket: WebSocket, message: Message) -> None:
        await websocket.close(4000, str(message))
