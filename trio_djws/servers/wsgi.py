"""Internal: the WSGI side-thread server; import it as ``trio_djws.wsgi``.

The WSGI side-thread server, djwebsockets' entry point (documented as ``trio_djws.wsgi``):
``get_wsgi_application()`` returns Django's WSGI handler and runs the standalone WebSocket
server (``trio_djws.servers.standalone``) in a background thread of the same process, on
``WEBSOCKET_HOST:WEBSOCKET_PORT``.

Use it where the WSGI server cannot be changed and a second process cannot be run. Otherwise
prefer ``manage.py runwebsocket`` as its own process: this mode has limits that no code here
can lift.

- Signals belong to the WSGI server: trio installs signal handlers only in the main thread,
  so the server thread never sees SIGINT/SIGTERM. It drains (1001 after flushing the send
  queues, within ``WEBSOCKET_SHUTDOWN_TIMEOUT`` seconds) from an ``atexit`` hook, which runs
  when the process exits through the interpreter (``sys.exit``, the end of the main thread:
  gunicorn's and uWSGI's graceful worker exits, ``runserver``). A process killed by a signal
  it does not handle, or ended with ``os._exit``, closes no WebSocket: clients see 1006.
- The thread is a daemon: a non-daemon thread would be joined before ``atexit`` hooks run, so
  the process could never tell it to stop and would not exit.
- One process owns the port. Each forked worker that imports the WSGI module tries to bind it;
  the first wins and the others log a warning and serve HTTP only. Group messages from the
  other workers reach the WebSocket clients only through a cross-process ``WEBSOCKET_BROKER``
  (Redis). With gunicorn, load the application in each worker (the default; not ``--preload``,
  which would start the thread in the arbiter, where no fork keeps it); uWSGI needs
  ``--enable-threads`` (without it, threads started by the application never run).
- HTTP views in this process reach the server through ``run_in_server()`` (the in-memory
  broker lives in the server thread's trio run).

Keep the ASGI path's WSGI bridge (``trio_djws.wsgi_bridge``) apart: this module is only the
djwebsockets-style entry point.
"""

from __future__ import annotations

import atexit
import errno
import logging
import os
import socket
import threading
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TypeVar

import trio
from django.core.handlers.wsgi import WSGIHandler
from django.core.wsgi import get_wsgi_application as django_wsgi_application

from ..conf import get_settings, require_app
from ..publish import set_server_thread
from .sockets import open_sockets
from .standalone import Address, format_address, serve_sockets

__all__: list[str] = []

logger = logging.getLogger(__name__)

T = TypeVar("T")

_START_TIMEOUT = 30.0  # seconds for the thread to bind and import the handler modules
_lock = threading.Lock()
_thread: ServerThread | None = None  # the one server thread of this process, if it owns the port


class ServerThread:
    """The standalone server running in a daemon thread under its own ``trio.run``."""

    def __init__(self, host: str, port: int, engine: str | None = None) -> None:
        self.host = host
        self.port = port
        self.engine = engine
        self.addresses: list[Address] = []
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._scope: trio.CancelScope | None = None
        self._sockets: list[socket.socket] = []
        self._thread = threading.Thread(target=self._main, name="trio-djws-websocket", daemon=True)

    def start(self) -> list[Address]:
        """Bind, start the thread and wait until it serves; returns the bound addresses.

        Raises:
            OSError: the address cannot be bound (``errno.EADDRINUSE``: another process owns
                the port).
            RuntimeError: the server failed while starting; chained to its exception.
        """
        self._sockets = open_sockets([(self.host, self.port)])
        self._thread.start()
        if not self._started.wait(_START_TIMEOUT):
            raise RuntimeError(f"the WebSocket server did not start within {_START_TIMEOUT} s")
        if self._error is not None:
            raise RuntimeError("the WebSocket server failed to start") from self._error
        return self.addresses

    def _main(self) -> None:
        try:
            trio.run(self._serve)
        except Exception as exc:
            self._error = exc
            logger.exception("the WebSocket server thread failed")
        finally:
            self._started.set()

    async def _serve(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        with trio.CancelScope() as self._scope:
            async with trio.open_nursery() as nursery:
                self.addresses = await nursery.start(
                    partial(serve_sockets, self._sockets, engine=self.engine)
                )
                self._started.set()

    def run(self, fn: Callable[..., Awaitable[T]], *args: object) -> T:
        """Run ``await fn(*args)`` in the server's trio run and return its result; blocks the
        calling thread (a WSGI worker thread; never the server thread).

        For example ``run(send_to_group, "lobby", "hi")`` from a sync view.

        Raises:
            RuntimeError: the server is not running.
            Whatever ``fn`` raises.
        """
        if self._token is None or not self._thread.is_alive():
            raise RuntimeError("the WebSocket server thread is not running")
        return trio.from_thread.run(fn, *args, trio_token=self._token)

    def stop(self) -> None:
        """Drain and stop the server (1001 after flushing, within WEBSOCKET_SHUTDOWN_TIMEOUT
        seconds) and wait for the thread. Idempotent; returns at once if it is not running."""
        if self._token is None or self._scope is None or not self._thread.is_alive():
            return
        try:
            self._token.run_sync_soon(self._scope.cancel)
        except trio.RunFinishedError:
            return
        settings = get_settings()
        self._thread.join(settings.shutdown_timeout + 2 * settings.close_timeout + 1)


def get_wsgi_application() -> WSGIHandler:
    """Django's WSGI handler (``django.core.wsgi.get_wsgi_application``), after starting the
    standalone WebSocket server in a background thread on ``WEBSOCKET_HOST:WEBSOCKET_PORT``
    (once per process; limits in the module docstring).

    If another process already owns the port, logs a WARNING and returns the handler
    without a server thread.

    Raises:
        ConfigurationError: ``"trio_djws"`` is not in ``INSTALLED_APPS``.
        OSError: the port cannot be bound for another reason than being in use.
        RuntimeError: the server failed while starting.
    """
    application = django_wsgi_application()
    require_app()
    global _thread
    with _lock:
        if _thread is None:
            settings = get_settings()
            candidate = ServerThread(settings.host, settings.port)
            try:
                addresses = candidate.start()
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
                logger.warning(
                    "WebSocket port %s:%d is owned by another process (pid %d serves HTTP "
                    "only): %s",
                    settings.host,
                    settings.port,
                    os.getpid(),
                    exc,
                )
                return application
            _thread = candidate
            set_server_thread(candidate.run)  # publish() in this process reaches it
            atexit.register(candidate.stop)
            logger.info(
                "WebSocket server thread listening on %s",
                ", ".join(format_address(a) for a in addresses),
            )
    return application


def server_thread() -> ServerThread | None:
    """The server thread of this process, or None (not started, or another process owns
    the port)."""
    return _thread


def run_in_server(fn: Callable[..., Awaitable[T]], *args: object) -> T:
    """``server_thread().run(fn, *args)``: e.g. ``run_in_server(send_to_group, "lobby", "hi")``
    from a sync view served by the same process.

    Raises:
        RuntimeError: this process runs no server thread.
    """
    thread = _thread
    if thread is None:
        raise RuntimeError(
            "this process runs no WebSocket server thread (get_wsgi_application() was not "
            "called, or another process owns WEBSOCKET_PORT): use a cross-process "
            "WEBSOCKET_BROKER to reach its clients"
        )
    return thread.run(fn, *args)
