"""Internal: the standalone server; import it as ``trio_djws.server``.

The standalone WebSocket server (djwebsockets' model): WebSockets on their own port, beside
any WSGI deployment, or in a program without a Django project.

``serve()`` owns the protocol through an engine (``trio_djws.engines``: ``WEBSOCKET_ENGINE``)
and routes every connection through ``trio_djws.connection.serve_websocket``, as the ASGI path
does, so namespaces, the origin check, limits, groups and the broker behave identically. Its
server state and drain are ``trio_djws.state.open_server``'s.

Nurseries: ``serve_sockets`` owns the server nursery (``open_server``: the broker), the
connection nursery (every connection's task) and the accept nursery. Cancelling ``serve``
starts the shutdown: accepting stops (the sockets close), every connection is closed with 1001
"going away" after its send queue is flushed, within ``WEBSOCKET_SHUTDOWN_TIMEOUT`` seconds;
connections still open then are cancelled (their close frame gets ``WEBSOCKET_CLOSE_TIMEOUT``
more), then the broker stops.
"""

from __future__ import annotations

import logging
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from functools import partial

import trio

from ..conf import get_settings
from ..engines import get_engine
from ..routing import autodiscover
from ..state import open_server
from .lifecycle import Output, drain, stop_on_signals, tune_gc
from .sockets import open_sockets

__all__: list[str] = []

logger = logging.getLogger(__name__)

Address = tuple[str, int]
"""``(host, port)`` of a listening socket."""


def format_address(address: Address) -> str:
    """``ws://HOST:PORT`` (``ws://[::1]:PORT`` for IPv6) of a bound address."""
    host, port = address
    return f"ws://[{host}]:{port}" if ":" in host else f"ws://{host}:{port}"


async def serve(
    host: str,
    port: int,
    *,
    engine: str | None = None,
    task_status: trio.TaskStatus[list[Address]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the registered ``@Namespace`` handlers on ``host:port`` until cancelled.

    The socket gets ``SO_REUSEADDR`` and ``TCP_USER_TIMEOUT`` = ``WEBSOCKET_TCP_USER_TIMEOUT``
    (``trio_djws.servers.sockets.open_sockets``). Shutdown on cancellation as in the module
    docstring.

    Args:
        host: address to bind, e.g. ``"127.0.0.1"``.
        port: TCP port; 0 asks the kernel for a free one.
        engine: ``"websockets"`` or ``"trio_websocket"``; None: ``WEBSOCKET_ENGINE``.
        task_status: ``started()`` with the bound ``[(host, port)]`` once accepting.

    Raises:
        OSError: the address cannot be bound.
        ValueError: an unknown engine.
    """
    sockets = open_sockets([(host, port)])
    await serve_sockets(sockets, engine=engine, task_status=task_status)


async def serve_sockets(
    sockets: Sequence[socket.socket],
    *,
    engine: str | None = None,
    task_status: trio.TaskStatus[list[Address]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """``serve()`` on listening sockets (``trio_djws.servers.sockets.open_sockets``), which
    are closed when accepting stops. Imports the handler modules first (as
    ``get_asgi_application``).

    Returns only by cancellation (re-raised once the shutdown is done) or an error.
    """
    chosen = get_engine(engine or get_settings().engine)
    autodiscover()
    addresses: list[Address] = [
        (str(sock.getsockname()[0]), int(sock.getsockname()[1])) for sock in sockets
    ]
    listeners = [trio.SocketListener(trio.socket.from_stdlib_socket(sock)) for sock in sockets]
    stop = trio.Event()
    async with open_server(), trio.open_nursery() as watcher:
        watcher.start_soon(_set_when_cancelled, stop)
        # Shielded, so that the caller's cancellation becomes a drain, not an abort: the
        # watcher task sees the cancellation and sets ``stop``.
        with trio.CancelScope(shield=True):
            async with trio.open_nursery() as connections:
                async with trio.open_nursery() as accepting:
                    await accepting.start(
                        partial(chosen.serve, listeners, handler_nursery=connections)
                    )
                    logger.info(
                        "serving WebSockets (engine %s) on %s",
                        chosen.name,
                        ", ".join(format_address(a) for a in addresses),
                    )
                    task_status.started(addresses)
                    await stop.wait()
                    accepting.cancel_scope.cancel()  # closes the listening sockets
                await drain("cancelling them")
                connections.cancel_scope.cancel()
        watcher.cancel_scope.cancel()
    logger.info("server stopped")


async def _set_when_cancelled(stop: trio.Event) -> None:
    try:
        await trio.sleep_forever()
    finally:
        stop.set()


async def serve_until_signal(
    sockets: Sequence[socket.socket],
    on_ready: Callable[[list[Address]], None],
    *,
    engine: str | None = None,
) -> None:
    """``serve_sockets()`` until SIGINT or SIGTERM (main thread only), then shut down as
    ``serve()`` does; later signals during the shutdown are logged and ignored."""
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(stop_on_signals, (signal.SIGINT, signal.SIGTERM), stop)
        async with trio.open_nursery() as server:
            addresses = await server.start(partial(serve_sockets, sockets, engine=engine))
            on_ready(addresses)
            await stop.wait()
            server.cancel_scope.cancel()
        nursery.cancel_scope.cancel()


def run(
    sockets: Sequence[socket.socket], *, engine: str | None = None, stdout: Output = sys.stdout
) -> None:
    """Serve on ``sockets`` until SIGINT or SIGTERM: the entry point of ``manage.py
    runwebsocket`` (blocks in ``trio.run``; main thread only, for the signal handlers).

    Prints ``Listening on ws://HOST:PORT`` per socket to ``stdout`` (flushed) once serving.
    The first signal closes every connection with 1001 after flushing its send queue
    (within ``WEBSOCKET_SHUTDOWN_TIMEOUT`` seconds), then this returns.
    """

    def announce(addresses: list[Address]) -> None:
        for address in addresses:
            stdout.write(f"Listening on {format_address(address)}\n")
        stdout.flush()

    tune_gc()
    trio.run(partial(serve_until_signal, sockets, announce, engine=engine))
