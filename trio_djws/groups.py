"""Groups: named sets of connections, and fan-out to them.

Each membership holds its own ``clone()`` of the member's send channel, so fan-out is a loop
of ``send_nowait`` with no await per member: a slow member never delays the sender or the
others. A member whose send queue is full is closed with 1008 "slow consumer" (RFC 6455
§7.4.1) instead. Delivery goes through the server's broker (``WEBSOCKET_BROKER``); with the
default in-process broker it is a direct call to ``Groups.deliver``.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

import trio
from django.core.serializers.json import DjangoJSONEncoder
from wsproto.frame_protocol import CloseReason

from .typing import JSONValue, Message

if TYPE_CHECKING:
    from .websocket import WebSocket

__all__ = ["Groups", "send_group_json", "send_to_group"]

logger = logging.getLogger(__name__)


class Groups:
    """The groups of one server (one trio run): group name → member → its channel clone."""

    def __init__(self) -> None:
        self._members: dict[str, dict[WebSocket, trio.MemorySendChannel[Message]]] = {}

    def add(
        self, group: str, websocket: WebSocket, channel: trio.MemorySendChannel[Message]
    ) -> bool:
        """Add a member with its own channel clone; returns False if it was already in."""
        members = self._members.setdefault(group, {})
        if websocket in members:
            channel.close()
            return False
        members[websocket] = channel
        return True

    def discard(self, group: str, websocket: WebSocket) -> None:
        """Remove a member and close its clone; no error if it was not in."""
        members = self._members.get(group)
        if members is None:
            return
        channel = members.pop(websocket, None)
        if channel is not None:
            channel.close()
        if not members:
            del self._members[group]

    def members(self, group: str) -> list[WebSocket]:
        """The local members of ``group``."""
        return list(self._members.get(group, ()))

    def names(self) -> list[str]:
        """The groups that have at least one local member."""
        return list(self._members)

    def deliver(self, group: str, message: Message) -> int:
        """Queue ``message`` for every local member of ``group``, never blocking.

        A member whose send queue is full is aborted with 1008 "slow consumer".

        Returns:
            The number of members the message was queued for.
        """
        members = self._members.get(group)
        if not members:
            return 0
        delivered = 0
        for websocket, channel in list(members.items()):
            try:
                channel.send_nowait(message)
            except trio.WouldBlock:
                websocket.abort(CloseReason.POLICY_VIOLATION, "slow consumer")
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                pass  # the member is closing; it leaves the group on its own
            else:
                delivered += 1
        return delivered


async def send_to_group(group: str, message: Message) -> None:
    """Send one message to every member of ``group``, on every process the broker reaches.

    Never waits for a member: full send queues close their connection with 1008. A checkpoint.

    Args:
        group: the group name.
        message: ``str`` (a text frame) or ``bytes`` (a binary frame), sent unchanged.

    Raises:
        TypeError: ``message`` is neither ``str`` nor ``bytes``.
    """
    from .state import current_server

    if not isinstance(message, str | bytes):
        raise TypeError(f"send_to_group expects str or bytes, got {type(message).__name__}")
    await current_server().broker.publish(group, message)


async def send_group_json(group: str, data: JSONValue) -> None:
    """Encode ``data`` once with Django's ``DjangoJSONEncoder`` and send it as a text frame to
    every member of ``group`` (see ``send_to_group``)."""
    await send_to_group(group, json.dumps(data, cls=DjangoJSONEncoder))
