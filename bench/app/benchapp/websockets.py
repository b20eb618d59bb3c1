"""The benchmark's app protocol on trio_djws: ``/echo/`` echoes, ``/broadcast/`` relays every
text message unchanged to all members of one group (the sender included), ``/history/``
joins the group ``bench-history`` with ``?since=<epoch>:<offset>`` (first frame
``{"type": "joined", "recovered": bool, "position": ...}``) and relays every text message as
``{"m": text, "position": ...}`` (the group needs ``BENCH_HISTORY``).

trio_djws imports this module at startup (every installed app's ``websockets`` module).
"""

from __future__ import annotations

from trio_djws.handlers import BroadcastHandler, EchoHandler

from trio_djws import BaseWSClass, JoinResult, Namespace, Position, WebSocket, send_group_json
from trio_djws.typing import Message

__all__ = ["Broadcast", "Echo", "History"]


@Namespace("/echo/")
class Echo(EchoHandler):
    pass


@Namespace("/broadcast/")
class Broadcast(BroadcastHandler):
    group = "bench"


@Namespace("/history/")
class History(BaseWSClass):
    group = "bench-history"

    async def on_connect(self, websocket: WebSocket, path: str) -> None:
        raw = websocket.query.get("since")
        since = Position.parse(raw) if isinstance(raw, str) and raw else None

        async def joined(result: JoinResult) -> None:
            position = result.position.as_json() if result.position is not None else None
            await websocket.send_json(
                {"type": "joined", "recovered": result.recovered, "position": position}
            )

        await websocket.join(self.group, since=since, before_messages=joined)

    async def on_message(self, websocket: WebSocket, message: Message) -> None:
        await send_group_json(self.group, {"m": message if isinstance(message, str) else ""})
