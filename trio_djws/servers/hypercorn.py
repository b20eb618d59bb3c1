"""The Hypercorn driver: Hypercorn's trio worker, driven from here to fix what its CLI cannot.

Every use of Hypercorn's private internals (``TCPServer``, ``Lifespan``, ``WorkerContext``,
``StatsdLogger``, ``ConnectionState``, ``wrap_app``) is in this module and pinned to the
0.18 series by ``check_hypercorn()``; no other module of trio_djws imports Hypercorn's
internals. ``serve()`` follows ``hypercorn.trio.run.worker_serve`` with these changes
(measured in the project's findings on Hypercorn):

- Containment: each connection runs Hypercorn's ``TCPServer`` under our own
  ``trio.serve_listeners`` handler, which logs any exception and closes only that connection.
  In ``worker_serve`` one malformed packet (an upgrade request followed by a stray byte:
  Hypercorn issue 225) crashes the server.
- Drain: on the shutdown trigger it stops accepting, then closes every WebSocket with 1001
  "going away" after flushing its send queue (``trio_djws.servers.lifecycle.drain``) within
  ``WEBSOCKET_SHUTDOWN_TIMEOUT``, and only then lets Hypercorn's grace period and the lifespan
  shutdown run. ``worker_serve`` sends no close frame (clients see 1006) and sends
  ``lifespan.shutdown`` only after connections are gone.
- Stalled peers: the listening sockets come from ``trio_djws.servers.sockets.open_sockets``
  with ``TCP_USER_TIMEOUT`` (``WEBSOCKET_TCP_USER_TIMEOUT``), which accepted sockets inherit,
  and every WebSocket is pinged every ``WEBSOCKET_PING_INTERVAL`` seconds: a peer that stops
  acknowledging is aborted by the kernel, which unblocks Hypercorn's shielded socket writes.
- Pings: one task pings every WebSocket (``_Connections``) instead of Hypercorn's task per
  WebSocket, which cost about 3.4 KiB per idle connection and kept a closed connection's task
  until it woke (up to ``WEBSOCKET_PING_INTERVAL`` seconds), holding shutdown until
  ``graceful_timeout``.

The process around it (signals, garbage collector, worker processes) is
``trio_djws.servers.serve``'s, the entry point of ``manage.py serve``.
"""

from __future__ import annotations

import copy
import importlib.metadata
import inspect
import logging
import select
import socket
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Final

import h11
import trio
from hypercorn.config import Config
from hypercorn.protocol.h2 import H2Protocol
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.protocol.ws_stream import ASGIWebsocketState, WSStream
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.statsd import StatsdLogger
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import AppWrapper, ASGIFramework, ConnectionState, LifespanState
from hypercorn.utils import wrap_app
from wsproto.events import Ping

from ..conf import SECONDS, get_settings
from ..log import escape, peer_warning, quiet_accept_errors
from .lifecycle import drain
from .sockets import BACKLOG, http_url

__all__ = [
    "GRACE_AFTER_DRAIN",
    "HYPERCORN_SERIES",
    "check_hypercorn",
    "make_config",
    "serve",
]

logger = logging.getLogger(__name__)

HYPERCORN_SERIES: Final = "0.18."  # the private API below is that of these releases
GRACE_AFTER_DRAIN: Final = 1 * SECONDS  # Hypercorn's graceful_timeout = shutdown timeout + this
_CLOSE_TIMEOUT: Final = 1 * SECONDS  # closing one socket after a failed connection

# (callable, parameter names) this module calls; check_hypercorn() compares them.
_PINNED: Final = (
    (TCPServer.__init__, ("self", "app", "config", "context", "state", "stream")),
    (TCPServer.run, ("self",)),
    (Lifespan.__init__, ("self", "app", "config", "state")),
    (Lifespan.handle_lifespan, ("self", "task_status")),
    (Lifespan.wait_for_startup, ("self",)),
    (Lifespan.wait_for_shutdown, ("self",)),
    (WorkerContext.__init__, ("self", "max_requests")),
    (wrap_app, ("app", "wsgi_max_body_size", "mode")),
    (WSStream._send_wsproto_event, ("self", "event")),
)


def check_hypercorn() -> None:
    """Verify that the installed Hypercorn has the private API this module drives.

    Raises:
        RuntimeError: Hypercorn is not a 0.18.x release, or a pinned signature changed; the
            message names the version and the callable.
    """
    version = importlib.metadata.version("hypercorn")
    if not version.startswith(HYPERCORN_SERIES):
        raise RuntimeError(
            f"trio_djws.servers.hypercorn drives Hypercorn {HYPERCORN_SERIES}x's private trio "
            f"worker, but Hypercorn {version} is installed; install hypercorn>=0.18,<0.19"
        )
    for function, expected in _PINNED:
        found = tuple(inspect.signature(function).parameters)
        if found != expected:
            raise RuntimeError(
                f"Hypercorn {version}: {function.__qualname__} takes {found}, "
                f"trio_djws.servers.hypercorn expects {expected}"
            )


def make_config() -> Config:
    """Hypercorn's ``Config`` from the ``WEBSOCKET_*`` settings.

    ``websocket_max_message_size`` = ``WEBSOCKET_MAX_MESSAGE_SIZE`` (bytes);
    ``websocket_ping_interval`` = ``WEBSOCKET_PING_INTERVAL`` (seconds, None: no pings);
    ``graceful_timeout`` (counted from the shutdown trigger) and the lifespan's
    ``shutdown_timeout`` (counted from ``lifespan.shutdown``) = ``WEBSOCKET_SHUTDOWN_TIMEOUT``
    + ``GRACE_AFTER_DRAIN`` seconds.
    """
    settings = get_settings()
    config = Config()
    config.backlog = BACKLOG  # the sockets are ours (open_sockets); the same value
    config.websocket_max_message_size = settings.max_message_size
    config.websocket_ping_interval = settings.ping_interval
    config.graceful_timeout = settings.shutdown_timeout + GRACE_AFTER_DRAIN
    config.shutdown_timeout = settings.shutdown_timeout + GRACE_AFTER_DRAIN
    return config


def _peer(stream: trio.SocketStream) -> str:
    try:
        host, port = stream.socket.getpeername()[:2]
    except OSError:
        return "an unknown peer"
    return f"{host}:{port}"


def _client(server: TCPServer, stream: trio.SocketStream) -> str:
    # The peer's address, as Hypercorn recorded it (the socket may be closed by now): not
    # kept per connection by us (idle memory).
    client = getattr(getattr(getattr(server, "protocol", None), "protocol", None), "client", None)
    if client is None:
        return _peer(stream)
    return f"{client[0]}:{client[1]}"


def _websocket_streams(server: TCPServer) -> tuple[WSStream, ...]:
    # The WebSockets of one connection that are open for messages (HTTP/1.1: at most one;
    # HTTP/2: any number of RFC 8441 streams).
    protocol = getattr(getattr(server, "protocol", None), "protocol", None)
    if isinstance(protocol, H11Protocol):
        streams: tuple[object, ...] = (protocol.stream,)
    elif isinstance(protocol, H2Protocol):
        streams = tuple(protocol.streams.values())
    else:
        return ()
    return tuple(
        stream
        for stream in streams
        if isinstance(stream, WSStream)
        and stream.state is ASGIWebsocketState.CONNECTED
        and not stream.closed
    )


def _writable(server: TCPServer) -> bool:
    # Whether a few bytes can be written to the connection's socket without waiting.
    poller = select.poll()
    poller.register(server.stream.socket.fileno(), select.POLLOUT)
    return bool(poller.poll(0))


class _Connections:
    """The accepted connections of one ``serve()``, and their pings.

    Hypercorn spawns one ping task per WebSocket (``WSStream._send_pings``, about 3.4 KiB per
    idle connection, and it holds a closed connection's task until it wakes); instead one task
    here pings every WebSocket every ``ping_interval`` seconds, each on its own schedule
    (``ping_interval`` after it was accepted, then every ``ping_interval``), in accept order.
    The pinger never waits on one connection: it skips a connection while a write is under way
    or its socket buffer is full (data unacknowledged there already arms ``TCP_USER_TIMEOUT``).
    """

    __slots__ = ("_app", "_config", "_context", "_due", "_ping_interval", "_state")

    def __init__(
        self,
        app: AppWrapper,
        config: Config,
        context: WorkerContext,
        state: ConnectionState,
        ping_interval: float | None,
    ) -> None:
        self._app = app
        self._config = config
        self._context = context
        self._state = state
        self._ping_interval = ping_interval
        # Each live connection and when it is next pinged (trio time, s), in that order.
        self._due: OrderedDict[TCPServer, float] = OrderedDict()

    async def serve(self, stream: trio.SocketStream) -> None:
        """Run Hypercorn's ``TCPServer`` on one accepted stream (the ``serve_listeners``
        handler); an exception ends this connection only, logged with the client address."""
        # TCPServer is annotated for SSLStream but serves any stream without do_handshake
        # (its run() falls back on AttributeError), as in worker_serve.
        server = TCPServer(self._app, self._config, self._context, self._state, stream)  # type: ignore[arg-type]
        if self._ping_interval is not None:
            self._due[server] = trio.current_time() + self._ping_interval
        try:
            await server.run()
        except* h11.LocalProtocolError as group:
            # A client's bytes drove Hypercorn's h11 state machine into an error (issue 225:
            # an upgrade request with extra bytes in the same packet): the peer's fault, one
            # line without a traceback.
            peer_warning(
                logger,
                "connection from %s failed inside Hypercorn and was closed (%s: %s); the "
                "server goes on (Hypercorn issue 225)",
                _client(server, stream),
                type(group.exceptions[0]).__name__,
                escape(str(group.exceptions[0])),
            )
        except* Exception:  # Cancelled is a BaseException: it passes
            logger.exception(
                "connection from %s failed inside Hypercorn and was closed; the server goes on "
                "(Hypercorn issue 225)",
                _client(server, stream),
            )
        finally:
            self._due.pop(server, None)
            with trio.move_on_after(_CLOSE_TIMEOUT, shield=True):
                await stream.aclose()

    async def ping_forever(self) -> None:
        """Ping each WebSocket every ``ping_interval`` seconds until cancelled."""
        interval = self._ping_interval
        if interval is None:
            return
        due = self._due
        while True:
            if not due:
                # A connection added from now on is due ``interval`` from its accept: later
                # than this wake-up.
                await trio.sleep(interval)
                continue
            server, when = next(iter(due.items()))
            now = trio.current_time()
            if when > now:
                await trio.sleep_until(when)
                continue
            due.move_to_end(server)
            due[server] = now + interval
            try:
                await self._ping(server)
            except Exception:
                logger.exception("sending a ping failed inside Hypercorn; the pings go on")

    async def _ping(self, server: TCPServer) -> None:
        for stream in _websocket_streams(server):
            if server.send_lock.locked() or not _writable(server):
                return  # a write is under way or stuck: TCP_USER_TIMEOUT watches that data
            await stream._send_wsproto_event(Ping())


async def serve(
    app: ASGIFramework,
    config: Config,
    sockets: Sequence[socket.socket],
    *,
    shutdown_trigger: Callable[[], Awaitable[object]],
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on listening ``sockets`` until ``shutdown_trigger()`` returns, then drain.

    Follows ``hypercorn.trio.run.worker_serve`` (lifespan startup, then accept), with the
    changes in the module docstring. Shutdown, from the trigger: stop accepting (the sockets
    are closed); ``drain_connections()`` (1001 "going away" after each send queue is flushed)
    for at most ``WEBSOCKET_SHUTDOWN_TIMEOUT`` seconds; connections still open are cancelled
    at ``config.graceful_timeout`` seconds after the trigger (a write stuck on a stalled peer
    ends at its ``TCP_USER_TIMEOUT``); then ``lifespan.shutdown`` within
    ``config.shutdown_timeout`` seconds. Returns when all of that is done.

    Args:
        app: an ASGI 3 application.
        config: Hypercorn's config (``make_config()``); its ``bind`` is ignored. Its
            ``websocket_ping_interval`` (seconds, None: no pings) is applied by one task of
            this module, not by Hypercorn; ``config`` itself is not modified.
        sockets: bound, listening, non-blocking TCP sockets
            (``trio_djws.servers.sockets.open_sockets``); closed when accepting stops.
        shutdown_trigger: returns when shutdown should start.
        task_status: reports ``["http://HOST:PORT", ...]`` once accepting.

    Raises:
        hypercorn.utils.LifespanFailureError: the app failed its lifespan startup.
        hypercorn.utils.LifespanTimeoutError: the lifespan did not answer within
            ``config.startup_timeout`` / ``config.shutdown_timeout`` seconds.
    """
    # Pinged by one task of ours, not one task per WebSocket (see _Connections): Hypercorn
    # gets a copy of the config without pings.
    config = copy.copy(config)
    ping_interval, config.websocket_ping_interval = config.websocket_ping_interval, None
    config.set_statsd_logger_class(StatsdLogger)
    wrapped = wrap_app(app, config.wsgi_max_body_size, "asgi")
    lifespan_state: LifespanState = {}
    lifespan = Lifespan(wrapped, config, lifespan_state)
    context = WorkerContext(None)  # no max_requests: workers are never recycled
    urls = [http_url(sock) for sock in sockets]
    async with trio.open_nursery() as lifespan_nursery:
        await lifespan_nursery.start(lifespan.handle_lifespan)
        await lifespan.wait_for_startup()
        listeners = [trio.SocketListener(trio.socket.from_stdlib_socket(s)) for s in sockets]
        quiet_accept_errors()  # EMFILE: one line a minute, not a traceback per retry
        connections = _Connections(
            wrapped, config, context, ConnectionState(lifespan_state.copy()), ping_interval
        )
        lifespan_nursery.start_soon(connections.ping_forever)
        async with trio.open_nursery() as server_nursery:
            async with trio.open_nursery() as accept_nursery:
                await accept_nursery.start(
                    partial(
                        trio.serve_listeners,
                        connections.serve,
                        listeners,
                        handler_nursery=server_nursery,
                    )
                )
                task_status.started(urls)
                await shutdown_trigger()
                accept_nursery.cancel_scope.cancel()  # closes the listening sockets
            grace_ends = trio.current_time() + config.graceful_timeout
            logger.info("stopped accepting on %s; closing connections with 1001", ", ".join(urls))
            await context.terminated.set()  # idle HTTP keep-alive connections close now
            await drain("Hypercorn cancels them at its graceful_timeout")
            server_nursery.cancel_scope.deadline = grace_ends
        await lifespan.wait_for_shutdown()
        lifespan_nursery.cancel_scope.cancel()
    logger.info("server stopped")
