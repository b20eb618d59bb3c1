"""The one namespace ``python -m bench.attacks`` adds to the chatroom: the chatroom has no
ticket-protected socket, and the ticket-reuse attack needs one."""

from __future__ import annotations

from trio_djws import BaseWSClass, Namespace
from trio_djws.tickets import TicketMixin
from trio_djws.websocket import WebSocket


@Namespace("/attack/ticket/")
class Ticketed(TicketMixin, BaseWSClass):
    """Sends the ticket's user name once accepted."""

    async def on_connect(self, websocket: WebSocket, path: str) -> None:
        assert websocket.user is not None
        await websocket.send(websocket.user.get_username())
