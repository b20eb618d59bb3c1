"""The ceiling: a bare ASGI app on Hypercorn's trio worker, no Django and no trio_djws.

``/echo/`` echoes in the connection's own task; ``/broadcast/`` relays to every connection
through one bounded trio memory channel and writer task per connection (the least that a
fan-out which never blocks on a slow member needs). Run with
``hypercorn -k trio bench.bare_app:app``.
"""

from __future__ import annotations

from typing import Any

import trio

__all__ = ["app"]

_QUEUE = 256  # messages per connection, as the broadcast runs' WEBSOCKET_SEND_QUEUE_SIZE
_members: dict[object, trio.MemorySendChannel[dict[str, Any]]] = {}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            event = await receive()
            await send({"type": event["type"] + ".complete"})
            if event["type"] == "lifespan.shutdown":
                return
    if scope["type"] != "websocket":
        return
    await receive()  # websocket.connect
    if scope["path"] == "/broadcast/":
        await _broadcast(receive, send)
        return
    await send({"type": "websocket.accept"})
    while True:
        event = await receive()
        if event["type"] == "websocket.disconnect":
            return
        await send(
            {"type": "websocket.send", "text": event.get("text"), "bytes": event.get("bytes")}
        )


async def _broadcast(receive: Any, send: Any) -> None:
    outbox_send, outbox = trio.open_memory_channel[dict[str, Any]](_QUEUE)
    key = object()
    await send({"type": "websocket.accept"})
    _members[key] = outbox_send
    try:
        async with trio.open_nursery() as nursery:

            async def writer() -> None:
                async for event in outbox:
                    await send(event)

            nursery.start_soon(writer)
            while True:
                event = await receive()
                if event["type"] == "websocket.disconnect":
                    break
                out = {
                    "type": "websocket.send",
                    "text": event.get("text"),
                    "bytes": event.get("bytes"),
                }
                for member in list(_members.values()):
                    try:
                        member.send_nowait(out)
                    except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
                        pass  # the bare ceiling: a full member misses the message (counted lost)
            nursery.cancel_scope.cancel()
    finally:
        del _members[key]
