"""Internal: the start and stop of every server process (not part of the API).

What every server process does at start and stop, whatever serves the protocol: tune the
garbage collector, turn SIGINT/SIGTERM into a shutdown, and drain the connections.

Used by ``manage.py serve`` (Hypercorn, ``trio_djws.servers.serve``), the standalone server
(``trio_djws.servers.standalone``: ``runwebsocket``, ``trio_djws.wsgi``). No Hypercorn here.
"""

from __future__ import annotations

import gc
import logging
import signal
from collections.abc import Sequence
from typing import Final, Protocol

import trio

from ..conf import get_settings
from ..state import current_server, drain_connections

__all__: list[str] = []

logger = logging.getLogger(__name__)

GC_THRESHOLD: Final = 7000  # allocations between youngest-generation collections (CPython: 700)
_CPYTHON_GC_THRESHOLDS: Final = (700, 10, 10)  # gc.get_threshold() of a process that set none


class Output(Protocol):
    """Where a server prints its ``Listening on`` lines (``sys.stdout``, a command's
    ``self.stdout``)."""

    def write(self, text: str, /) -> object: ...

    def flush(self) -> object: ...


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


async def stop_on_signals(
    signals: Sequence[int],
    stop: trio.Event,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Set ``stop`` on the first of ``signals`` (main thread only), until cancelled.

    The receiver stays open until cancelled: a second signal during the drain is logged,
    not turned into ``KeyboardInterrupt`` or the default SIGTERM death. Run it under
    ``nursery.start``: it reports once the signal handlers are installed.
    """
    with trio.open_signal_receiver(*signals) as received:
        task_status.started()
        async for signum in received:
            name = signal.Signals(signum).name
            if stop.is_set():
                logger.info("%s received while shutting down; ignored", name)
            else:
                logger.info("%s received; shutting down", name)
                stop.set()


async def drain(then: str) -> None:
    """Close every connection of the current server with 1001 "going away" after flushing
    its send queue (``trio_djws.state.drain_connections``), for at most
    ``WEBSOCKET_SHUTDOWN_TIMEOUT`` seconds; logs how long it took, or (WARNING) how many
    connections are still open at the deadline followed by ``then`` (what the server does
    with them). A checkpoint; returns at the deadline, raises nothing of its own.
    """
    # The drain deadline is a setting, so it is applied here, by the scope's owner.
    timeout = get_settings().shutdown_timeout
    started = trio.current_time()
    with trio.move_on_after(timeout) as deadline:
        await drain_connections()
    if deadline.cancelled_caught:
        logger.warning(
            "%d connections still open after WEBSOCKET_SHUTDOWN_TIMEOUT (%.1f s); %s",
            len(current_server().connections),
            timeout,
            then,
        )
    else:
        logger.info("all connections closed in %.2f s", trio.current_time() - started)
