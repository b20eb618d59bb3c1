"""Handlers and a broker for the ``manage.py serve`` tests (tests/test_servers_hypercorn.py).

Each handler reports progress to the ``control`` group, whose members connect to
``/launcher/control/``: a test learns there what a handler has done to a client that is not
reading, without reading that client.
"""

from __future__ import annotations

import os
from typing import Final

from trio_djws import BaseWSClass, Namespace, send_to_group
from trio_djws.asgi import get_asgi_application
from trio_djws.brokers import InMemoryBroker
from trio_djws.typing import ASGIReceive, ASGISend, Message, Scope
from trio_djws.websocket import WebSocket

CONTROL: Final = "control"
BURST_COUNT: Final = 100  # messages
BURST_SIZE: Final = 128 * 1024  # bytes each: 12.5 MiB in all, more than socket buffers hold
FLOOD_REPORT_AFTER: Final = 64  # sends of FLOOD_SIZE: 16 MiB queued or written
FLOOD_SIZE: Final = 256 * 1024  # bytes


class CrossProcessTestBroker(InMemoryBroker):
    """``InMemoryBroker`` that claims to cross processes, so ``--workers 2`` is allowed."""

    cross_process = True


@Namespace("/launcher/control/")
class Control(BaseWSClass):
    async def on_connect(self, websocket: WebSocket, path: str) -> None:
        await websocket.join(CONTROL)


@Namespace("/launcher/burst/")
class Burst(BaseWSClass):
    """On "go": 100 numbered sends of 128 KiB, then "burst queued" to the control group."""

    async def on_message(self, websocket: WebSocket, message: Message) -> None:
        padding = "." * (BURST_SIZE - 6)
        for i in range(BURST_COUNT):
            await websocket.send(f"{i:05d} {padding}")
        await send_to_group(CONTROL, "burst queued")


@Namespace("/launcher/flood/")
class Flood(BaseWSClass):
    """Sends 256 KiB messages until closed; reports "flooding" after 64 sends."""

    async def on_connect(self, websocket: WebSocket, path: str) -> None:
        websocket.start_soon(self.flood, websocket)

    async def flood(self, websocket: WebSocket) -> None:
        chunk = b"\0" * FLOOD_SIZE
        for _ in range(FLOOD_REPORT_AFTER):
            await websocket.send(chunk)
        await send_to_group(CONTROL, "flooding")
        while True:
            await websocket.send(chunk)


@Namespace("/launcher/pid/")
class Pid(BaseWSClass):
    """Sends the serving process's id."""

    async def on_connect(self, websocket: WebSocket, path: str) -> None:
        await websocket.send(str(os.getpid()))


_django_app = get_asgi_application()


async def application(scope: Scope, receive: ASGIReceive, send: ASGISend) -> None:
    """An ``ASGI_APPLICATION`` wrapping ours: ``GET /launcher/app/`` answers "custom app"."""
    if scope["type"] == "http" and scope["path"] == "/launcher/app/":
        body = b"custom app"
        headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return
    await _django_app(scope, receive, send)
