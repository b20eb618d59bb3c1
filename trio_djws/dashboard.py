"""The live connections page: a staff-only Django admin page fed over a WebSocket of its own.

Turn it on with ``WEBSOCKET_DASHBOARD_PATH`` (the dashboard socket's namespace, e.g.
``"/ws/trio_djws/dashboard/"``) and route the page under the admin, before ``admin.site.urls``::

    path("admin/trio_djws/", include("trio_djws.urls")),   # /admin/trio_djws/connections/

Every server process (each ``serve --workers N`` worker) then runs ``DashboardInstrumentation``:
it keeps this process's live connections, recent closes and refused handshakes, and every
``SNAPSHOT_INTERVAL`` seconds publishes a snapshot (JSON, ``{"type": "snapshot", "pid": ...}``)
to the group ``DASHBOARD_GROUP`` through the broker, so a dashboard socket on any process
gets every process's snapshots with a cross-process broker (Redis). The page draws them
(connections per namespace and per process, groups with member counts, presence, message
rates, recent close codes and refused handshakes, broker status) without a build step.

Staff close a connection from the page: the dashboard socket publishes
``{"type": "close", "id": ..., "reason": ...}`` to ``DASHBOARD_CONTROL``, which every process
listens to (``Groups.listen``); the process holding that connection closes it with 1008 and
the reason (RFC 6455 §7.4.1: policy violation).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import trio
from django.contrib.admin.views.decorators import staff_member_required
from django.shortcuts import render
from wsproto.frame_protocol import CloseReason

from . import instrument
from .exceptions import Reject
from .handler import BaseWSClass
from .instrument import ConnectionProbe, Instrumentation
from .mixins import DjangoMiddlewareMixin
from .state import ServerState, current_server
from .typing import Message

if TYPE_CHECKING:
    from django.http import HttpRequest, HttpResponse

    from .websocket import WebSocket

__all__ = [
    "DASHBOARD_CONTROL",
    "DASHBOARD_GROUP",
    "SNAPSHOT_INTERVAL",
    "DashboardHandler",
    "DashboardInstrumentation",
    "connections_view",
    "enable",
]

logger = logging.getLogger(__name__)

DASHBOARD_GROUP: Final = "trio_djws.dashboard"  # every process's snapshots
DASHBOARD_CONTROL: Final = "trio_djws.dashboard.control"  # close commands, to every process
SNAPSHOT_INTERVAL: Final = 1.0  # seconds
RECENT: Final = 20  # recent closes and refused handshakes kept per process
LISTED: Final = 100  # connections listed per process (the newest)
CONTROL_QUEUE: Final = 16  # close commands waiting for this process (more are dropped)
REASON_LIMIT: Final = 120  # characters: a close reason fits in a control frame (125 bytes)


@dataclass(slots=True)
class _Connection:
    namespace: str
    client: str
    opened: float  # time.time()


class _Probe(ConnectionProbe):
    __slots__ = ("client", "dashboard", "id", "namespace")

    counts_messages = True  # the page's message rates: instrument.all_message_counts()

    def __init__(self, dashboard: DashboardInstrumentation, namespace: str, client: str) -> None:
        self.dashboard = dashboard
        self.namespace = namespace
        self.client = client
        self.id = ""

    def begin(self, connection_id: str) -> None:
        self.id = connection_id

    def accepted(self) -> None:
        self.dashboard.live[self.id] = _Connection(self.namespace, self.client, time.time())

    def closed(self, accepted: bool, code: int | None, reason: str) -> None:
        if self.dashboard.live.pop(self.id, None) is not None:
            self.dashboard.closes.append((time.time(), self.namespace, code, reason))


class DashboardInstrumentation(Instrumentation):
    """This process's side of the dashboard: what it counts, and its snapshot task."""

    def __init__(self) -> None:
        self.live: dict[str, _Connection] = {}
        self.closes: deque[tuple[float, str, int | None, str]] = deque(maxlen=RECENT)
        self.rejected: deque[tuple[float, int]] = deque(maxlen=RECENT)

    def open_connection(self, namespace: str, client: str) -> ConnectionProbe | None:
        return _Probe(self, namespace, client)

    def handshake_rejected(self, status: int) -> None:
        self.rejected.append((time.time(), status))

    def snapshot(self, server: ServerState) -> dict[str, Any]:
        """This process's state as a JSON-ready dict (what the page draws)."""
        users: dict[str, str] = {}
        for websocket in list(server.connections):
            user = getattr(websocket, "user", None)
            if user is not None and user.is_authenticated:
                users[websocket.id] = str(user.get_username())
        namespaces: dict[str, int] = {}
        for connection in self.live.values():
            namespaces[connection.namespace] = namespaces.get(connection.namespace, 0) + 1
        newest = sorted(self.live.items(), key=lambda item: item[1].opened)[-LISTED:]
        groups = server.groups
        broker = server.broker
        counts = instrument.all_message_counts().values()
        return {
            "type": "snapshot",
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "time": time.time(),
            "open": len(self.live),
            "namespaces": namespaces,
            "connections": [
                {
                    "id": cid,
                    "namespace": c.namespace,
                    "client": c.client,
                    "user": users.get(cid, ""),
                    "opened": c.opened,
                }
                for cid, c in reversed(newest)
            ],
            "groups": [
                [name, -negated]
                for negated, name in sorted(
                    (-len(groups.members(name)), name)
                    for name in groups.names()
                    if not name.startswith(DASHBOARD_GROUP)
                )[:LISTED]
            ],
            "presence": sorted(
                [name, sum(groups.presence(name).values())] for name in groups.presence_groups()
            )[:LISTED],
            "received": sum(c.received for c in counts),
            "sent": sum(c.sent for c in counts),
            "closes": list(self.closes),
            "rejected": list(self.rejected),
            "broker": {
                "backend": type(broker).__name__,
                "connected": getattr(broker, "connected", None),
                "lost": getattr(broker, "lost", 0),
                "overflows": groups.overflows,
            },
        }

    async def serve(self, server: object, *, task_status: trio.TaskStatus[None]) -> None:
        """Publish a snapshot every ``SNAPSHOT_INTERVAL`` seconds (one broker message: any
        process may hold a dashboard socket) and close the connections staff ask for. Runs in
        the server nursery until cancelled."""
        assert isinstance(server, ServerState)
        send, receive = trio.open_memory_channel[Message](CONTROL_QUEUE)
        async with trio.open_nursery() as nursery, receive:
            with server.groups.listen(DASHBOARD_CONTROL, send):
                nursery.start_soon(self._publish_snapshots, server)
                task_status.started()
                async for command in receive:
                    self._close_on_command(server, command)

    async def _publish_snapshots(self, server: ServerState) -> None:
        while True:
            await server.broker.publish(DASHBOARD_GROUP, json.dumps(self.snapshot(server)))
            await trio.sleep(SNAPSHOT_INTERVAL)

    def _close_on_command(self, server: ServerState, command: Message) -> None:
        try:
            data = json.loads(command)
            target, reason = str(data["id"]), str(data.get("reason") or "closed by staff")
        except (ValueError, KeyError, TypeError):
            logger.warning("ignored a malformed dashboard command")
            return
        for websocket in list(server.connections):
            if websocket.id == target:
                logger.warning(
                    "closing %s on %s from the dashboard: %r", target, websocket.path, reason
                )
                websocket.close_nowait(CloseReason.POLICY_VIOLATION, reason[:REASON_LIMIT])
                return


class DashboardHandler(DjangoMiddlewareMixin, BaseWSClass):
    """The dashboard socket (at ``WEBSOCKET_DASHBOARD_PATH``): staff only (HTTP 403 for
    others), gets every process's snapshots; sends ``{"type": "close", "id", "reason"}``."""

    async def on_connect(self, websocket: WebSocket, path: str) -> None:
        user = websocket.user
        if user is None or not (user.is_active and getattr(user, "is_staff", False)):
            raise Reject(403, "the dashboard is for staff")
        await websocket.join(DASHBOARD_GROUP)

    async def on_message(self, websocket: WebSocket, message: Message) -> None:
        try:
            data = json.loads(message)
            command = {
                "type": "close",
                "id": str(data["id"]),
                "reason": str(data.get("reason", ""))[:REASON_LIMIT],
            }
        except (ValueError, KeyError, TypeError):
            await websocket.send_json({"type": "error", "error": "expected a close command"})
            return
        if data.get("type") != "close":
            await websocket.send_json({"type": "error", "error": "expected a close command"})
            return
        await current_server().broker.publish(DASHBOARD_CONTROL, json.dumps(command))


_instrumentation: DashboardInstrumentation | None = None


def enable() -> DashboardInstrumentation:
    """Register this process's dashboard instrumentation (once; later calls return it)."""
    global _instrumentation
    if _instrumentation is None:
        _instrumentation = DashboardInstrumentation()
    instrument.register(_instrumentation)
    return _instrumentation


@staff_member_required
def connections_view(request: HttpRequest) -> HttpResponse:
    """The live connections page (staff only: others go to the admin login)."""
    from .conf import get_settings

    path = get_settings().dashboard_path
    return render(
        request,
        "trio_djws/admin/connections.html",
        {
            "title": "Live WebSocket connections",
            "dashboard_path": path,
            "interval": SNAPSHOT_INTERVAL,
        },
    )
