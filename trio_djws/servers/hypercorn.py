"""Internal: the Hypercorn driver of ``manage.py serve`` (not part of the API).

The Hypercorn driver: Hypercorn's trio worker, driven from here to fix what its CLI cannot.

Every use of Hypercorn's private internals (``TCPServer``, ``Lifespan``, ``WorkerContext``,
``StatsdLogger``, ``ConnectionState``, ``wrap_app``) is in this module and pinned to the
0.18 series by ``check_hypercorn()``; no other module of trio_djws imports Hypercorn's
internals. ``serve()`` follows ``hypercorn.trio.run.worker_serve`` with these changes
(measured in the project's findings on Hypercorn):

- One listener (``trio_djws.servers.listener``): each connection's first request head is
  parsed with h11; a WebSocket upgrade is served by the ``websockets`` engine (real close
  codes, a close frame after every protocol error, no zombie connection after an oversized
  message), anything else by Hypercorn's ``TCPServer`` on a stream that replays the bytes
  already read. A project whose ``ASGI_APPLICATION`` is not trio-djws's own application keeps
  every request on Hypercorn (a warning says so).
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
- Pings: one task (``trio_djws.servers.listener.Pinger``) pings every WebSocket, the engine's
  and Hypercorn's, instead of Hypercorn's task per WebSocket, which cost about 3.4 KiB per
  idle connection and kept a closed connection's task until it woke (up to
  ``WEBSOCKET_PING_INTERVAL`` seconds), holding shutdown until ``graceful_timeout``. Only
  WebSockets left on Hypercorn are pinged through its private ``WSStream`` API.

The process around it (signals, garbage collector, worker processes) is
``trio_djws.servers.serve``'s, the entry point of ``manage.py serve``.
"""

from __future__ import annotations

import copy
import importlib.metadata
import inspect
import logging
import re
import select
import socket
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

from ..asgi import TrioDjwsApplication
from ..conf import SECONDS, get_settings
from ..log import escape, peer_warning, quiet_accept_errors
from .lifecycle import drain
from .listener import Listener, Pinger
from .sockets import BACKLOG, http_url

__all__: list[str] = []

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
    (WSStream._send_wsproto_event, ("self", "event")),  # noqa: SLF001  (pinned here)
)

# Every attribute Hypercorn's TCPServer uses on its stream. The listener hands it a
# ReplayStream, which has no do_handshake (TCPServer then takes it for plain TCP, catching
# the AttributeError) and passes ``socket`` through; check_hypercorn() compares this set
# with TCPServer's source.
_TCPSERVER_STREAM_ATTRIBUTES: Final = frozenset(
    {
        "aclose",
        "do_handshake",
        "receive_some",
        "selected_alpn_protocol",
        "send_all",
        "send_eof",
        "socket",
        "transport_stream",
    }
)


def check_hypercorn() -> None:
    """Verify that the installed Hypercorn has the private API this module drives.

    Raises:
        RuntimeError: Hypercorn is not a 0.18.x release, a pinned signature changed, or
            ``TCPServer`` uses its stream differently from what the listener's ``ReplayStream``
            provides; the message names the version and the callable.
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
    source = inspect.getsource(TCPServer)
    used = frozenset(re.findall(r"self\.stream\.(\w+)", source))
    if used != _TCPSERVER_STREAM_ATTRIBUTES or "except AttributeError:  # Not SSL" not in source:
        raise RuntimeError(
            f"Hypercorn {version}: TCPServer uses {sorted(used)} of its stream (and a "
            f"stream without do_handshake must be plain TCP); "
            f"trio_djws.servers.listener.ReplayStream expects "
            f"{sorted(_TCPSERVER_STREAM_ATTRIBUTES)}"
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


def _peer(stream: trio.abc.HalfCloseableStream) -> str:
    sock = getattr(stream, "socket", None)  # a SocketStream or the listener's ReplayStream
    try:
        host, port = sock.getpeername()[:2]  # type: ignore[union-attr]  # None: AttributeError
    except (OSError, AttributeError):
        return "an unknown peer"
    return f"{host}:{port}"


def _client(server: TCPServer, stream: trio.abc.HalfCloseableStream) -> str:
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


class _HypercornPings:
    # The Pingable face (trio_djws.servers.listener) of one connection Hypercorn serves: its
    # WebSockets (an upgrade on a keep-alive connection, RFC 8441 streams, every WebSocket of
    # a foreign ASGI_APPLICATION) are pinged through Hypercorn's private WSStream API.
    __slots__ = ("server",)

    def __init__(self, server: TCPServer) -> None:
        self.server = server

    async def ping(self) -> None:
        server = self.server
        for stream in _websocket_streams(server):
            if server.send_lock.locked() or not _writable(server):
                return  # a write is under way or stuck: TCP_USER_TIMEOUT watches that data
            await stream._send_wsproto_event(Ping())  # noqa: SLF001  (Hypercorn 0.18, pinned above)


class _Connections:
    """Hypercorn's side of one ``serve()``: runs its ``TCPServer`` on the connections the
    listener (``trio_djws.servers.listener.Listener``) hands it, and has their WebSockets
    pinged by the server's one ``Pinger``."""

    __slots__ = ("_app", "_config", "_context", "_pinger", "_state")

    def __init__(
        self,
        app: AppWrapper,
        config: Config,
        context: WorkerContext,
        state: ConnectionState,
        pinger: Pinger,
    ) -> None:
        self._app = app
        self._config = config
        self._context = context
        self._state = state
        self._pinger = pinger

    async def serve(self, stream: trio.abc.HalfCloseableStream) -> None:
        """Run Hypercorn's ``TCPServer`` on one accepted stream (a ``SocketStream``, or the
        listener's ``ReplayStream``); an exception ends this connection only, logged with the
        client address. Closes the stream."""
        # TCPServer is annotated for SSLStream but serves any stream without do_handshake
        # (its run() falls back on AttributeError), as in worker_serve; check_hypercorn()
        # pins the attributes it uses.
        server = TCPServer(self._app, self._config, self._context, self._state, stream)  # type: ignore[arg-type]
        pings = _HypercornPings(server)
        self._pinger.schedule(pings)
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
            self._pinger.unschedule(pings)
            with trio.move_on_after(_CLOSE_TIMEOUT, shield=True):
                await stream.aclose()


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
            ``websocket_ping_interval`` (seconds, None: no pings) is applied by the one task
            of ``trio_djws.servers.listener.Pinger``, not by Hypercorn; ``config`` itself is
            not modified.
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
    ours = isinstance(app, TrioDjwsApplication)
    if not ours:
        logger.warning(
            "ASGI_APPLICATION is %r, not trio-djws's own application: every request, "
            "WebSocket upgrades included, goes to Hypercorn so that this application sees it; "
            "its WebSockets have Hypercorn's limits (client close codes arrive as 1006, no "
            "close frame after a protocol error; see the docs, 'Transports')",
            app,
        )
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
        pinger = Pinger(ping_interval)
        connections = _Connections(
            wrapped, config, context, ConnectionState(lifespan_state.copy()), pinger
        )
        listener = Listener(
            connections.serve,
            keep_alive_timeout=config.keep_alive_timeout,
            max_head_size=config.h11_max_incomplete_size,
            pinger=pinger,
            websockets=ours,
        )
        lifespan_nursery.start_soon(pinger.serve)
        async with trio.open_nursery() as server_nursery:
            async with trio.open_nursery() as accept_nursery:
                await accept_nursery.start(
                    partial(
                        trio.serve_listeners,
                        listener.serve,
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
            listener.close_idle()  # and those that have not sent a request yet
            await drain("Hypercorn cancels them at its graceful_timeout")
            server_nursery.cancel_scope.deadline = grace_ends
        await lifespan.wait_for_shutdown()
        lifespan_nursery.cancel_scope.cancel()
    logger.info("server stopped")
