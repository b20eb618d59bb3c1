"""Handlers for tests/test_hardening.py (registered through WEBSOCKET_HANDLERS)."""

from __future__ import annotations

import trio
import trio.testing

from trio_djws import BaseWSClass, CloseCode, Namespace
from trio_djws.ratelimit import RateLimit
from trio_djws.tickets import TicketMixin
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


@Namespace("/harden/rate-close/")
class RateClose(BaseWSClass):
    """Echo, at most 3 messages at once and one a minute after that: over it, the default
    on_rate_limit closes with 1008 "rate limit"."""

    rate_limit = RateLimit(per_second=1 / 60, burst=3)

    async def on_message(self, websocket: WebSocket, message: Message) -> None:
        await websocket.send(message)


@Namespace("/harden/rate-drop/")
class RateDrop(RateClose):
    """As RateClose, but a message over the limit is dropped with an error frame."""

    async def on_rate_limit(self, websocket: WebSocket, message: Message) -> None:
        await websocket.send_json({"type": "error", "error": "rate limit"})


@Namespace("/harden/rate-settings/")
class RateSettings(BaseWSClass):
    """Echo under WEBSOCKET_RATE_LIMIT / WEBSOCKET_RATE_BURST (the default rate_limit)."""

    async def on_message(self, websocket: WebSocket, message: Message) -> None:
        await websocket.send(message)


@Namespace("/harden/ticket/")
class Ticketed(TicketMixin, BaseWSClass):
    """Sends the ticket's user name, then the subprotocol it was accepted with."""

    async def on_connect(self, websocket: WebSocket, path: str) -> None:
        assert websocket.user is not None
        await websocket.send(websocket.user.get_username())


GREETING_BYTES = 8 * 1024 * 1024  # more than loopback's socket buffers hold


@Namespace("/harden/greet-large/")
class GreetLarge(BaseWSClass):
    """Queues one large message before the accept, as the chatroom queues its history: the
    writer is still sending it when a frame pipelined with the handshake is read."""

    async def on_connect(self, websocket: WebSocket, path: str) -> None:
        await websocket.send("g" * GREETING_BYTES)
