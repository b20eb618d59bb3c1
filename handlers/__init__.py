"""Stock namespace handlers, installed as ``trio_djws.handlers``.

Subclass one and register it: ``@Namespace("/echo/") class Echo(EchoHandler): pass``.
"""

from __future__ import annotations

from typing import ClassVar

from trio_djws.groups import send_to_group
from trio_djws.handler import BaseWSClass
from trio_djws.typing import Message
from trio_djws.websocket import WebSocket

__all__ = ["BroadcastHandler", "EchoHandler", "SignalHandler"]


class EchoHandler(BaseWSClass):
    """Sends every message back unchanged: text as text, bytes as bytes (empty ones too)."""

    async def on_message(self, websocket: WebSocket, message: Message) -> None:
        await websocket.send(message)


class BroadcastHandler(BaseWSClass):
    """Joins one group and relays every message, unchanged, to all of its members (the
    sender included).

    The group is ``group`` if set on the subclass, else the path converter named by
    ``group_kwarg`` (default ``"group"``) if the namespace has it, else the request path.
    """

    group: ClassVar[str | None] = None
    group_kwarg: ClassVar[str] = "group"

    def group_name(self, websocket: WebSocket) -> str:
        """The group this connection joins (see the class docstring)."""
        if self.group is not None:
            return self.group
        value = websocket.kwargs.get(self.group_kwarg)
        return str(value) if value is not None else websocket.path

    _group = ""  # group_name(), resolved once per connection in on_connect

    async def on_connect(self, websocket: WebSocket, path: str) -> None:
        self._group = self.group_name(websocket)
        await websocket.join(self._group)

    async def on_message(self, websocket: WebSocket, message: Message) -> None:
        await send_to_group(self._group, message)


from .signals import SignalHandler  # noqa: E402  (the signals endpoint; imports the handler base)
