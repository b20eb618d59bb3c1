"""Handlers for the group history tests (in this process and in server subprocesses).

- ``/history/member/<group>/?since=<epoch>:<offset>``: joins the group with ``since`` (if
  given) and first sends ``{"type": "joined", "recovered": bool, "position": {...} | null}``
  (``before_messages``), then whatever the hand-over sends; ``on_resync`` sends
  ``{"type": "resync"}``. A text ``burst N`` publishes ``{"n": 0}`` .. ``{"n": N-1}`` with
  ``send_group_json``; ``text X`` publishes ``X`` with ``send_to_group``; ``bytes X``
  publishes ``X`` as bytes.
- ``/history/publisher/<group>/``: the same messages, without joining.
"""

from __future__ import annotations

import json

from trio_djws import (
    BaseWSClass,
    JoinResult,
    Namespace,
    Position,
    send_group_json,
    send_to_group,
)
from trio_djws.typing import Message
from trio_djws.websocket import WebSocket


def tag_position(message: Message, position: Position) -> Message:
    """A ``FORMATTER``: ``<epoch>:<offset> <text>``, or bytes prefixed with the offset."""
    if isinstance(message, bytes):
        return position.offset.to_bytes(8, "big") + message
    return f"{position} {message}"


async def publish_command(group: str, message: Message) -> None:
    """Run one publishing command (see the module docstring)."""
    if not isinstance(message, str):
        return
    command, _, rest = message.partition(" ")
    if command == "burst":
        for n in range(int(rest)):
            await send_group_json(group, {"n": n})
    elif command == "text":
        await send_to_group(group, rest)
    elif command == "bytes":
        await send_to_group(group, rest.encode())


@Namespace("/history/member/<str:group>/")
class HistoryMember(BaseWSClass):
    async def on_connect(self, websocket: WebSocket, path: str) -> None:
        raw = websocket.query.get("since")
        since = Position.parse(raw) if raw else None

        async def joined(result: JoinResult) -> None:
            position = result.position.as_json() if result.position is not None else None
            await websocket.send_json(
                {"type": "joined", "recovered": result.recovered, "position": position}
            )

        await websocket.join(websocket.kwargs["group"], since=since, before_messages=joined)

    async def on_message(self, websocket: WebSocket, message: Message) -> None:
        await publish_command(websocket.kwargs["group"], message)

    async def on_resync(self, websocket: WebSocket, group: str) -> None:
        await websocket.send(json.dumps({"type": "resync"}))


@Namespace("/history/publisher/<str:group>/")
class HistoryPublisher(BaseWSClass):
    async def on_message(self, websocket: WebSocket, message: Message) -> None:
        await publish_command(websocket.kwargs["group"], message)
        await websocket.send("published")
