"""Internal: the server-wide state of one trio run: live connections, groups and the broker.

It lives in a ``RunVar`` (as trio keeps its default thread limiter), never in a module global:
``open_server()`` creates it for the ASGI lifespan (or the standalone server) and owns the
server nursery; code that runs without a lifespan (the in-memory test client) gets a state
made on first use, without background tasks.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import trio
from wsproto.frame_protocol import CloseReason

from . import instrument
from .conf import broker_backend, get_settings
from .groups import Groups, set_group_server_lookup

if TYPE_CHECKING:
    from ._runtime import Runtime
    from .brokers import Broker
    from .websocket import WebSocket

__all__: list[str] = []

logger = logging.getLogger(__name__)

_server: trio.lowlevel.RunVar[ServerState] = trio.lowlevel.RunVar("trio_djws.server")


def _make_broker(groups: Groups) -> Broker:
    # WEBSOCKET_BROKER = {"BACKEND": dotted path, "CONFIG": {...}}, as Channels' CHANNEL_LAYERS.
    factory, config = broker_backend()
    broker: Broker = factory(groups, config)
    return broker


class ServerState:
    """Live connections, groups and broker of one server.

    Attributes:
        connections: each live connection and its runtime (``trio_djws._runtime``, internal).
        groups: the groups of this process (``trio_djws.groups.Groups``).
        broker: the ``WEBSOCKET_BROKER`` backend.
        draining: True once shutdown began (new handshakes get HTTP 503).
    """

    def __init__(self) -> None:
        self.connections: dict[WebSocket, Runtime] = {}
        self.groups = Groups()
        self.broker: Broker = _make_broker(self.groups)
        self.draining = False
        self._idle = trio.Event()
        self._idle.set()

    def add(self, runtime: Runtime) -> None:
        """Count a connection as live (called by serve_connection)."""
        self.connections[runtime.websocket] = runtime
        if self._idle.is_set():
            self._idle = trio.Event()

    def discard(self, websocket: WebSocket) -> None:
        """Forget a connection that has ended."""
        self.connections.pop(websocket, None)
        if not self.connections:
            self._idle.set()

    def runtime_of(self, websocket: WebSocket) -> Runtime:
        """The runtime behind a live connection: the internal interface the library's own
        features use (``trio_djws.views``).

        Raises:
            KeyError: ``websocket`` is not live on this server.
        """
        return self.connections[websocket]

    async def wait_idle(self) -> None:
        """Wait until no connection is live."""
        await self._idle.wait()

    def queued_messages(self) -> tuple[int, int]:
        """Messages waiting in the live connections' send queues: (total, the fullest one's)."""
        total = fullest = 0
        for runtime in self.connections.values():
            channel = runtime.outbox_send
            if channel is not None:
                used = channel.statistics().current_buffer_used
                total += used
                fullest = max(fullest, used)
        return total, fullest


def current_server() -> ServerState:
    """The state of the server running in this trio run, made on first use if needed."""
    try:
        return _server.get()
    except LookupError:
        state = ServerState()
        _server.set(state)
        return state


set_group_server_lookup(current_server)  # groups and presence find this run's server


async def drain_connections(code: int = CloseReason.GOING_AWAY, reason: str = "going away") -> None:
    """Close every live connection with ``code`` after flushing its send queue, and wait
    until all have ended. New handshakes get HTTP 503 from then on.

    Callers bound it: ``with trio.move_on_after(WEBSOCKET_SHUTDOWN_TIMEOUT)``. Connections
    still open at the deadline are aborted by the caller's cancellation of their nurseries.
    """
    state = current_server()
    state.draining = True
    if state.connections:
        logger.info("draining %d connections with close code %d", len(state.connections), code)
    for websocket in list(state.connections):
        websocket.close_nowait(code, reason)
    await state.wait_idle()


def _import_urlconf() -> None:
    from django.conf import settings
    from django.urls import get_resolver

    if not getattr(settings, "ROOT_URLCONF", None):
        return  # settings.configure(...) without URLs: namespaces only
    try:
        get_resolver().url_patterns  # noqa: B018  (the property imports the URLconf)
    except Exception:
        # Not fatal here: @Namespace handlers keep working; a handshake that needs the
        # URLconf raises the same error again.
        logger.exception("ROOT_URLCONF %r failed to import", settings.ROOT_URLCONF)


@asynccontextmanager
async def open_server() -> AsyncIterator[ServerState]:
    """Run the server-wide nursery (the broker's tasks) for the duration of the block.

    On exit, every connection is drained with 1001 within ``WEBSOCKET_SHUTDOWN_TIMEOUT``
    seconds, then the broker is cancelled.
    """
    state = ServerState()
    _server.set(state)
    # Import ROOT_URLCONF now, in a worker thread: the first handshake that no @Namespace
    # matches resolves it on the trio thread (dwebsocket-style views), and importing view
    # modules there would stall every connection (and trip the ORM guard).
    await trio.to_thread.run_sync(_import_urlconf)
    async with trio.open_nursery() as nursery:
        await nursery.start(state.broker.serve)
        observer = instrument.active
        if observer is not None:
            await nursery.start(observer.serve, state)  # e.g. metrics' gauge sampler
        try:
            yield state
        finally:
            with trio.move_on_after(get_settings().shutdown_timeout, shield=True):
                await drain_connections()
            nursery.cancel_scope.cancel()
