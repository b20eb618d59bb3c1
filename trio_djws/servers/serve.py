"""Internal: the process of ``manage.py serve`` (not part of the API).

``manage.py serve``: the process around the Hypercorn driver (``trio_djws.servers.hypercorn``).

``run()`` loads the application, tunes the garbage collector, turns SIGINT/SIGTERM into a
drain (``trio_djws.servers.lifecycle``) and serves the sockets with the driver's ``serve()``.
Workers (POSIX): ``run(..., workers=N)`` shares the sockets with N spawned processes, as
``hypercorn.run.run`` does, and refuses a broker that does not cross processes. The
processes are spawned and supervised by ``trio_djws.servers.workers``; each runs this
module's single-process serve loop.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from functools import partial
from typing import Final, cast

import django
import trio
from django.conf import settings as django_settings
from django.utils.module_loading import import_string
from hypercorn.config import Config
from hypercorn.typing import ASGIFramework

from ..conf import broker_backend, get_settings, require_app
from ..exceptions import ConfigurationError
from ..tickets import check_ticket_cache
from .hypercorn import check_hypercorn, make_config, serve
from .lifecycle import Output, stop_on_signals, tune_gc
from .sockets import http_url
from .workers import stop_when_parent_exits, supervise

__all__: list[str] = []

logger = logging.getLogger(__name__)

DEFAULT_BIND: Final = "127.0.0.1:8000"


def check_workers(workers: int) -> None:
    """Check that ``workers`` processes can serve the configured broker.

    Raises:
        ValueError: ``workers`` is not an int >= 1.
        ConfigurationError: ``workers`` > 1 and ``WEBSOCKET_BROKER`` names a broker whose
            ``cross_process`` is False (the default ``InMemoryBroker``): each process would
            have its own groups, so group messages would silently reach only some members;
            or handlers use connection tickets with a per-process ``WEBSOCKET_TICKET_CACHE``
            (``trio_djws.tickets.check_ticket_cache``, trio_djws.E090).
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"--workers expects an int >= 1, got {workers!r}")
    if workers == 1:
        return
    check_ticket_cache(workers)
    broker_class, _ = broker_backend()
    backend = str(get_settings().broker["BACKEND"])
    if not getattr(broker_class, "cross_process", False):
        raise ConfigurationError(
            f"--workers {workers} needs a broker that reaches every process, but "
            f"WEBSOCKET_BROKER['BACKEND'] is {backend!r}, whose cross_process is False: each "
            f"worker would have its own groups and group messages would reach only the members "
            f"on the sender's process. Configure a cross-process broker or use --workers 1."
        )


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
        from ..asgi import get_asgi_application

        app = get_asgi_application()
    # Our TypedDicts for scopes and events are not Hypercorn's, though the protocol is the same.
    return cast("ASGIFramework", app)


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
        if signals:
            await nursery.start(stop_on_signals, signals, stop)
        if watch_parent:
            nursery.start_soon(stop_when_parent_exits, stop)
        async with trio.open_nursery() as server:
            urls = await server.start(
                partial(serve, app, config, sockets, shutdown_trigger=stop.wait)
            )
            on_ready(urls)
        nursery.cancel_scope.cancel()


def _announce(stdout: Output, urls: list[str]) -> None:
    for url in urls:
        stdout.write(f"Listening on {url}\n")
    stdout.flush()


def _serve_worker(
    index: int,
    sockets: list[socket.socket],
    on_ready: Callable[[list[str]], None],
    metrics: bool = False,
) -> None:
    # A worker process's main (run by trio_djws.servers.workers with SIGINT ignored): the parent
    # turns SIGINT/SIGTERM into one SIGTERM per worker, and a worker stops if it dies.
    django.setup(set_prefix=False)
    if metrics:  # the parent serves them (--metrics-bind): count here, in its directory
        from ..metrics import enable

        enable()
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


async def _supervise_workers(
    sockets: list[socket.socket], count: int, stdout: Output, metrics: bool
) -> int:
    urls = [http_url(sock) for sock in sockets]  # before supervise() closes the sockets
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        # Signals are handled before any child exists, so none is orphaned by an early SIGTERM.
        await nursery.start(stop_on_signals, (signal.SIGINT, signal.SIGTERM), stop)
        worker = partial(_serve_worker, metrics=True) if metrics else _serve_worker
        status = await supervise(sockets, count, worker, partial(_announce, stdout, urls), stop)
        nursery.cancel_scope.cancel()
    return status


def run(
    sockets: list[socket.socket],
    *,
    workers: int = 1,
    stdout: Output = sys.stdout,
    announce: Callable[[list[str]], None] | None = None,
    handle_signals: bool = True,
    metrics: bool = False,
) -> int:
    """Serve the application (``load_application()``) on ``sockets`` until SIGINT or SIGTERM.

    Blocks (``trio.run``): the entry point of ``manage.py serve`` and ``manage.py runserver``.
    Prints one line ``Listening on http://HOST:PORT`` per socket to ``stdout`` (flushed) once
    connections are served, or calls ``announce(urls)`` instead. The first SIGINT/SIGTERM
    drains and stops (see ``serve()``); later ones are ignored.

    ``handle_signals=False`` installs no signal handler, for a caller outside the main thread
    (trio can only handle signals there): ``runserver``'s autoreloader runs the server in a
    thread of a child process that the reloader ends by exiting; it then serves until the
    process ends.

    With ``workers`` > 1, spawns that many processes (``multiprocessing`` "spawn", as
    ``hypercorn.run.run``) that each serve the shared sockets with ``serve()``; SIGINT or
    SIGTERM to this process becomes one SIGTERM per worker. A worker that dies is restarted
    with backoff while the others serve on; repeated fast crashes stop the server
    (``trio_djws.servers.workers``). Workers also shut down if this process dies.

    Args:
        sockets: from ``open_sockets()``; closed by the time this returns.
        workers: processes, >= 1; > 1 needs a cross-process ``WEBSOCKET_BROKER``.
        stdout: where the ``Listening on`` lines go.
        announce: called once serving, with ``["http://HOST:PORT", ...]``, instead of
            printing the ``Listening on`` lines.
        handle_signals: False: no SIGINT/SIGTERM handling (one process only).
        metrics: the worker processes enable ``trio_djws.metrics`` (``--metrics-bind``: this
            process serves them from ``trio_djws.metrics.open_metrics_endpoint``).

    Returns:
        The exit status: 0, or that of the worker that made the server give up (see
        ``trio_djws.servers.workers.supervise``).

    Raises:
        RuntimeError: the installed Hypercorn is not the one this module drives.
        ConfigurationError: ``"trio_djws"`` is not in ``INSTALLED_APPS``.
        ValueError, ConfigurationError: as ``check_workers()``.
    """
    check_hypercorn()
    require_app()
    check_workers(workers)
    if workers > 1:
        return trio.run(_supervise_workers, sockets, workers, stdout, metrics)
    app = load_application()
    tune_gc()
    signals = (signal.SIGINT, signal.SIGTERM) if handle_signals else ()
    trio.run(
        _serve_until_stopped,
        app,
        make_config(),
        sockets,
        signals,
        announce or partial(_announce, stdout),
        False,
    )
    return 0
