"""Handlers for the RedisBroker, publish and presence tests (server subprocesses).

- ``/redis/group/<group>/``: joins the group and sends "ready" once this process's Redis
  subscription is acknowledged (``?wait=0``: at once); a text message ``burst N`` publishes
  ``0`` .. ``N-1`` then ``end`` to the group, any other text is published as it is;
  ``on_resync`` sends ``resync <group>`` (``?resync=fail``: raises instead).
  ``?pid``: "ready <pid of the serving process>"; ``?id``: "ready <pid> <connection id>".
- ``/redis/unsubscribed/<group>/``: sends "unsubscribed" once the process is not subscribed.
- ``/redis/presence/<group>/?name=NAME``: present in the group as NAME; every change arrives
  as ``{"type": "presence", "users": [...]}``; the text ``members`` is answered with
  ``presence.members()`` as JSON.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

from trio_djws import BaseWSClass, Namespace, presence, publish, send_to_group
from trio_djws.state import current_server
from trio_djws.typing import Message
from trio_djws.websocket import WebSocket


async def wait_subscribed(group: str, subscribed: bool = True) -> None:
    """Wait for the Redis subscription of ``group`` (nothing to wait for in memory)."""
    wait = getattr(current_server().broker, "wait_subscribed", None)
    if wait is not None:
        await wait(group, subscribed)


@Namespace("/redis/unsubscribed/<str:group>/")
class Unsubscribed(BaseWSClass):
    """Sends "unsubscribed" once this process is not subscribed to the group."""

    async def on_connect(self, websocket: WebSocket, path: str) -> None:
        await wait_subscribed(websocket.kwargs["group"], subscribed=False)
        await websocket.send("unsubscribed")


@Namespace("/redis/group/<str:group>/")
class GroupMember(BaseWSClass):
    async def on_connect(self, websocket: WebSocket, path: str) -> None:
        group = websocket.kwargs["group"]
        await websocket.join(group)
        if websocket.query.get("wait", "1") == "1":
            await wait_subscribed(group)
        if "id" in websocket.query:
            await websocket.send(f"ready {os.getpid()} {websocket.id}")
        else:
            await websocket.send(f"ready {os.getpid()}" if "pid" in websocket.query else "ready")

    async def on_message(self, websocket: WebSocket, message: Message) -> None:
        group = websocket.kwargs["group"]
        if isinstance(message, str) and message.startswith("burst "):
            for i in range(int(message.split()[1])):
                await send_to_group(group, str(i))
            await send_to_group(group, "end")
        else:
            await send_to_group(group, message)

    async def on_resync(self, websocket: WebSocket, group: str) -> None:
        if websocket.query.get("resync") == "fail":
            raise RuntimeError("on_resync failed on purpose")
        await websocket.send(f"resync {group}")


def render_presence(members: Mapping[str, int]) -> str:
    return json.dumps({"type": "presence", "users": sorted(members)})


@Namespace("/redis/presence/<str:group>/")
class Present(BaseWSClass):
    async def on_connect(self, websocket: WebSocket, path: str) -> None:
        name = websocket.query.get("name")
        await presence.join(websocket, websocket.kwargs["group"], name, announce=render_presence)

    async def on_message(self, websocket: WebSocket, message: Message) -> None:
        await websocket.send_json(await presence.members(websocket.kwargs["group"]))


@Namespace("/redis/sync-publish/<str:group>/")
class SyncPublisher(BaseWSClass):
    """Joins the group; each message is re-published with ``publish()`` from a plain ``def``
    hook, i.e. from one of the server's worker threads."""

    async def on_connect(self, websocket: WebSocket, path: str) -> None:
        await websocket.join(websocket.kwargs["group"])

    def on_message(self, websocket: WebSocket, message: Message) -> None:  # type: ignore[override]  # a plain def hook
        publish(websocket.kwargs["group"], message)
