"""``manage.py serve``: Hypercorn's trio worker, driven from here to fix what its CLI cannot.

Every use of Hypercorn's private internals (``TCPServer``, ``Lifespan``, ``WorkerContext``,
``StatsdLogger``, ``ConnectionState``, ``wrap_app``) is in this module and pinned to the
0.18 series by ``check_hypercorn()``. ``serve()`` follows ``hypercorn.trio.run.worker_serve``
with these changes (measured in shared/FINDINGS.md):

- Containment: each connection runs Hypercorn's ``TCPServer`` under our own
  ``trio.serve_listeners`` handler, which logs any exception and closes only that connection.
  In ``worker_serve`` one malformed packet (an upgrade request followed by a stray byte:
  Hypercorn issue 225) crashes the server.
- Drain: on the shutdown trigger it stops accepting, then closes every WebSocket with 1001
  "going away" after flushing its send queue (``trio_djws.state.drain_connections``) within
  ``WEBSOCKET_SHUTDOWN_TIMEOUT``, and only then lets Hypercorn's grace period and the lifespan
  shutdown run. ``worker_serve`` sends no close frame (clients see 1006) and sends
  ``lifespan.shutdown`` only after connections are gone.
- Stalled peers: the listening sockets are made here with ``TCP_USER_TIMEOUT``
  (``WEBSOCKET_TCP_USER_TIMEOUT``), which accepted sockets inherit, and every WebSocket is
  pinged every ``WEBSOCKET_PING_INTERVAL`` seconds: a peer that stops acknowledging is aborted
  by the kernel, which unblocks Hypercorn's shielded socket writes.
- Pings: one task pings every WebSocket (``_Connections``) instead of Hypercorn's task per
  WebSocket, which cost about 3.4 KiB per idle connection and kept a closed connection's task
  until it woke (up to ``WEBSOCKET_PING_INTERVAL`` seconds), holding shutdown until
  ``graceful_timeout``.
- Garbage collection: ``tune_gc()`` raises the youngest generation's threshold from CPython's
  700 to ``GC_THRESHOLD`` allocations, unless the process has set its own. Each held
  connection keeps about 180 objects the collector tracks; with the default a ramp to 5,000
  connections ran 8 full collections, more than half of the server's CPU (README, "Benchmarks").
- Workers (POSIX): ``run(..., workers=N)`` shares the sockets with N spawned processes, as
  ``hypercorn.run.run`` does, and refuses a broker that does not cross processes. The
  processes are spawned and supervised by ``trio_djws.workers``; each runs this module's
  single-process serve loop.
"""

from __future__ import annotations

import copy
import gc
import importlib.metadata
import inspect
import logging
import os
import select
import signal
import socket
import sys
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Final, Protocol, cast

import django
import trio
from django.conf import settings as django_settings
from django.utils.module_loading import import_string
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

from .conf import SECONDS, broker_backend, get_settings
from .exceptions import ConfigurationError
from .state import current_server, drain_connections
from .workers import stop_when_parent_exits, supervise

__all__ = [
    "DEFAULT_BIND",
    "GC_THRESHOLD",
    "GRACE_AFTER_DRAIN",
    "HYPERCORN_SERIES",
    "check_hypercorn",
    "check_workers",
    "load_application",
    "make_config",
    "open_sockets",
    "parse_bind",
    "run",
    "serve",
    "tune_gc",
]

logger = logging.getLogger(__name__)

DEFAULT_BIND: Final = "127.0.0.1:8000"
HYPERCORN_SERIES: Final = "0.18."  # the private API below is that of these releases
GRACE_AFTER_DRAIN: Final = 1 * SECONDS  # Hypercorn's graceful_timeout = shutdown timeout + this
_CLOSE_TIMEOUT: Final = 1 * SECONDS  # closing one socket after a failed connection
GC_THRESHOLD: Final = 7000  # allocations between youngest-generation collections (CPython: 700)
_CPYTHON_GC_THRESHOLDS: Final = (700, 10, 10)  # gc.get_threshold() of a process that set none

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


class _Output(Protocol):
    def write(self, text: str, /) -> object: ...

    def flush(self) -> object: ...


def check_hypercorn() -> None:
    """Verify that the installed Hypercorn has the private API this module drives.

    Raises:
        RuntimeError: Hypercorn is not a 0.18.x release, or a pinned signature changed; the
            message names the version and the callable.
    """
    version = importlib.metadata.version("hypercorn")
    if not version.startswith(HYPERCORN_SERIES):
        raise RuntimeError(
            f"trio_djws.launcher drives Hypercorn {HYPERCORN_SERIES}x's private trio worker, "
            f"but Hypercorn {version} is installed; install hypercorn>=0.18,<0.19"
        )
    for function, expected in _PINNED:
        found = tuple(inspect.signature(function).parameters)
        if found != expected:
            raise RuntimeError(
                f"Hypercorn {version}: {function.__qualname__} takes {found}, "
                f"trio_djws.launcher expects {expected}"
            )


def tune_gc() -> None:
    """Raise the garbage collector's youngest-generation threshold to ``GC_THRESHOLD``
    allocations, if the process still has CPython's defaults ``(700, 10, 10)`` (a threshold
    set by the project is kept). Called by ``manage.py serve`` and ``runwebsocket``.

    Why: a server holds thousands of connections, each with about 180 objects the collector
    tracks (Hypercorn's protocol objects, trio's tasks and cancel scopes, the ``WebSocket``).
    A full collection visits all of them; with the default threshold they ran often enough
    while connections were being opened to take more than half of the server's CPU. The
    middle and oldest thresholds, and CPython's rule that a full collection waits until the
    long-lived objects have grown by 25 %, are unchanged: cyclic garbage is still collected,
    after at most ``GC_THRESHOLD`` allocations instead of 700.
    """
    if gc.get_threshold() == _CPYTHON_GC_THRESHOLDS:
        gc.set_threshold(GC_THRESHOLD, *_CPYTHON_GC_THRESHOLDS[1:])


def parse_bind(value: str) -> tuple[str, int]:
    """Parse ``HOST:PORT`` (``[::1]:PORT`` for IPv6); port 0 asks the kernel for a free one.

    Raises:
        ValueError: not ``HOST:PORT`` with a port in 0-65535.
    """
    host, sep, port = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not (port.isascii() and port.isdigit()) or int(port) > 65535:
        raise ValueError(
            f"--bind expects HOST:PORT (e.g. 127.0.0.1:8000 or [::1]:8000), got {value!r}"
        )
    return host, int(port)


def check_workers(workers: int) -> None:
    """Check that ``workers`` processes can serve the configured broker.

    Raises:
        ValueError: ``workers`` is not an int >= 1.
        ConfigurationError: ``workers`` > 1 and ``WEBSOCKET_BROKER`` names a broker whose
            ``cross_process`` is False (the default ``InMemoryBroker``): each process would
            have its own groups, so group messages would silently reach only some members.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"--workers expects an int >= 1, got {workers!r}")
    if workers == 1:
        return
    broker_class, _ = broker_backend()
    backend = str(get_settings().broker["BACKEND"])
    if not getattr(broker_class, "cross_process", False):
        raise ConfigurationError(
            f"--workers {workers} needs a broker that reaches every process, but "
            f"WEBSOCKET_BROKER['BACKEND'] is {backend!r}, whose cross_process is False: each "
            f"worker would have its own groups and group messages would reach only the members "
            f"on the sender's process. Configure a cross-process broker or use --workers 1."
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
    config.websocket_max_message_size = settings.max_message_size
    config.websocket_ping_interval = settings.ping_interval
    config.graceful_timeout = settings.shutdown_timeout + GRACE_AFTER_DRAIN
    config.shutdown_timeout = settings.shutdown_timeout + GRACE_AFTER_DRAIN
    return config


def load_application() -> ASGIFramework:
    """The ``ASGI_APPLICATION`` setting (a dotted path) if set, else
    ``trio_djws.asgi.get_asgi_application()``. Needs ``django.setup()`` to have run.

    Raises:
        ImportError: ``ASGI_APPLICATION`` cannot be imported.
    """
    path = getattr(django_settings, "ASGI_APPLICATION", None)
    if path:
        app: object = import_string(path)
    else:
        from .asgi import get_asgi_application

        app = get_asgi_application()
    # Our TypedDicts for scopes and events are not Hypercorn's, though the protocol is the same.
    return cast("ASGIFramework", app)


def open_sockets(addresses: Sequence[tuple[str, int]]) -> list[socket.socket]:
    """Bind and listen on each ``(host, port)``, with ``SO_REUSEADDR``, Hypercorn's ``backlog``
    and ``TCP_USER_TIMEOUT`` = ``WEBSOCKET_TCP_USER_TIMEOUT`` seconds (Linux; None: unset).

    Accepted sockets inherit ``TCP_USER_TIMEOUT``: data unacknowledged that long (a peer gone
    or stalled at a zero window) aborts the connection. ``Config.create_sockets`` cannot set it.

    Raises:
        OSError: an address cannot be bound; the message names it. No socket is left open.
    """
    timeout = get_settings().tcp_user_timeout
    backlog = make_config().backlog
    sockets: list[socket.socket] = []
    try:
        for host, port in addresses:
            sockets.append(_open_socket(host, port, backlog, timeout))
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _open_socket(host: str, port: int, backlog: int, user_timeout: float | None) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as Hypercorn does
        if user_timeout is not None:
            option = getattr(socket, "TCP_USER_TIMEOUT", None)
            if option is None:
                logger.warning("TCP_USER_TIMEOUT is not available here; stalled peers are kept")
            else:
                sock.setsockopt(socket.IPPROTO_TCP, option, round(user_timeout * 1000))
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    return sock


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if sock.family == socket.AF_INET6 else f"http://{host}:{port}"


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


async def _drain() -> None:
    # The drain deadline is a setting, so it is applied here, by the scope's owner.
    timeout = get_settings().shutdown_timeout
    started = trio.current_time()
    with trio.move_on_after(timeout) as deadline:
        await drain_connections()
    took = trio.current_time() - started
    if deadline.cancelled_caught:
        logger.warning(
            "%d connections still open after WEBSOCKET_SHUTDOWN_TIMEOUT (%.1f s); "
            "Hypercorn cancels them at its graceful_timeout",
            len(current_server().connections),
            timeout,
        )
    else:
        logger.info("all connections closed in %.2f s", took)


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
        sockets: bound, listening, non-blocking TCP sockets (``open_sockets()``); closed
            when accepting stops.
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
    urls = [_url(sock) for sock in sockets]
    async with trio.open_nursery() as lifespan_nursery:
        await lifespan_nursery.start(lifespan.handle_lifespan)
        await lifespan.wait_for_startup()
        listeners = [trio.SocketListener(trio.socket.from_stdlib_socket(s)) for s in sockets]
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
            await _drain()
            server_nursery.cancel_scope.deadline = grace_ends
        await lifespan.wait_for_shutdown()
        lifespan_nursery.cancel_scope.cancel()
    logger.info("server stopped")


async def _stop_on_signals(
    signals: Sequence[int],
    stop: trio.Event,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    # The receiver stays open until cancelled: a second signal during the drain is logged,
    # not turned into KeyboardInterrupt or the default SIGTERM death.
    with trio.open_signal_receiver(*signals) as received:
        task_status.started()
        async for signum in received:
            name = signal.Signals(signum).name
            if stop.is_set():
                logger.info("%s received while shutting down; ignored", name)
            else:
                logger.info("%s received; shutting down", name)
                stop.set()


async def _serve_until_stopped(
    app: ASGIFramework,
    config: Config,
    sockets: Sequence[socket.socket],
    signals: Sequence[int],
    on_ready: Callable[[list[str]], None],
    watch_parent: bool,
) -> None:
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(_stop_on_signals, signals, stop)
        if watch_parent:
            nursery.start_soon(stop_when_parent_exits, stop)
        async with trio.open_nursery() as server:
            urls = await server.start(
                partial(serve, app, config, sockets, shutdown_trigger=stop.wait)
            )
            on_ready(urls)
        nursery.cancel_scope.cancel()


def _announce(stdout: _Output, urls: list[str]) -> None:
    for url in urls:
        stdout.write(f"Listening on {url}\n")
    stdout.flush()


def _serve_worker(
    index: int, sockets: list[socket.socket], on_ready: Callable[[list[str]], None]
) -> None:
    # A worker process's main (run by trio_djws.workers with SIGINT ignored): the parent
    # turns SIGINT/SIGTERM into one SIGTERM per worker, and a worker stops if it dies.
    django.setup(set_prefix=False)
    app = load_application()
    tune_gc()
    logger.info("worker %d (pid %d) starting", index, os.getpid())
    trio.run(
        _serve_until_stopped,
        app,
        make_config(),
        sockets,
        (signal.SIGTERM,),
        on_ready,
        True,
    )


async def _supervise_workers(sockets: list[socket.socket], count: int, stdout: _Output) -> int:
    urls = [_url(sock) for sock in sockets]  # before supervise() closes the sockets
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        # Signals are handled before any child exists, so none is orphaned by an early SIGTERM.
        await nursery.start(_stop_on_signals, (signal.SIGINT, signal.SIGTERM), stop)
        status = await supervise(
            sockets, count, _serve_worker, partial(_announce, stdout, urls), stop
        )
        nursery.cancel_scope.cancel()
    return status


def run(sockets: list[socket.socket], *, workers: int = 1, stdout: _Output = sys.stdout) -> int:
    """Serve the application (``load_application()``) on ``sockets`` until SIGINT or SIGTERM.

    Blocks (``trio.run``): the entry point of ``manage.py serve``. Prints one line
    ``Listening on http://HOST:PORT`` per socket to ``stdout`` (flushed) once connections are
    served. The first SIGINT/SIGTERM drains and stops (see ``serve()``); later ones are ignored.

    With ``workers`` > 1, spawns that many processes (``multiprocessing`` "spawn", as
    ``hypercorn.run.run``) that each serve the shared sockets with ``serve()``; SIGINT or
    SIGTERM to this process becomes one SIGTERM per worker, and a worker that exits stops the
    others. Workers also shut down if this process dies.

    Args:
        sockets: from ``open_sockets()``; closed by the time this returns.
        workers: processes, >= 1; > 1 needs a cross-process ``WEBSOCKET_BROKER``.
        stdout: where the ``Listening on`` lines go.

    Returns:
        The exit status: 0, or that of the first worker that failed.

    Raises:
        RuntimeError: the installed Hypercorn is not the one this module drives.
        ValueError, ConfigurationError: as ``check_workers()``.
    """
    check_hypercorn()
    check_workers(workers)
    if workers > 1:
        return trio.run(_supervise_workers, sockets, workers, stdout)
    app = load_application()
    tune_gc()
    signals = (signal.SIGINT, signal.SIGTERM)
    trio.run(
        _serve_until_stopped,
        app,
        make_config(),
        sockets,
        signals,
        partial(_announce, stdout),
        False,
    )
    return 0
