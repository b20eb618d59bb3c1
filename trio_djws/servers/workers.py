"""Worker processes for ``manage.py serve --workers N`` (POSIX): spawn, supervise, stop.

``trio_djws.servers.serve.run`` calls ``supervise()`` when ``workers`` > 1. It spawns N processes
(``multiprocessing`` "spawn", as ``hypercorn.run.run``) that share the listening sockets; each runs
that module's single-process serve loop and reports once it is serving. Stopping the parent (its
``stop`` event, set on SIGINT/SIGTERM) becomes one SIGTERM per ready worker, and a worker that exits
stops the others. Each worker also stops when the parent dies (``stop_when_parent_exits()``).

This module uses neither Hypercorn nor Django: what a worker runs comes in as ``serve_worker``,
so ``trio_djws.servers.serve`` imports this module and never the reverse.

Internal: the library's own plumbing, not a public API; its names may change.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import socket
from collections.abc import Callable
from functools import partial
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnContext, SpawnProcess
from typing import TypeAlias

import trio

__all__ = ["stop_when_parent_exits", "supervise"]

logger = logging.getLogger(__name__)

# serve_worker(index, sockets, on_ready): a worker process's main; picklable (module level),
# since "spawn" sends it to the child. It calls on_ready(urls) once serving.
_ServeWorker: TypeAlias = Callable[[int, list[socket.socket], Callable[[list[str]], None]], None]


async def stop_when_parent_exits(stop: trio.Event) -> None:
    """In a worker process, set ``stop`` once the parent process has exited.

    Returns at once outside a ``multiprocessing`` child. Waits on the parent's sentinel (EOF
    when it exits); cancellation stops the wait.
    """
    parent = multiprocessing.parent_process()
    if parent is None:
        return
    await trio.lowlevel.wait_readable(parent.sentinel)  # EOF once the parent has exited
    logger.warning("the parent process %s has exited; shutting down", parent.pid)
    stop.set()


def _report_ready(ready: Connection, urls: list[str]) -> None:
    ready.send_bytes(b"ready")
    ready.close()


def _run_worker(
    serve_worker: _ServeWorker, index: int, sockets: list[socket.socket], ready: Connection
) -> None:
    # A worker process (spawned by supervise()). The terminal's SIGINT reaches the whole
    # process group; the parent turns it into one SIGTERM per worker.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    serve_worker(index, sockets, partial(_report_ready, ready))


class _Worker:
    def __init__(self, index: int, process: SpawnProcess, ready: Connection) -> None:
        self.index = index
        self.process = process
        self.ready = trio.Event()
        self._ready_reader = ready

    @classmethod
    def spawn(
        cls,
        context: SpawnContext,
        index: int,
        sockets: list[socket.socket],
        serve_worker: _ServeWorker,
    ) -> _Worker:
        reader, writer = context.Pipe(duplex=False)
        process = context.Process(
            target=_run_worker,
            args=(serve_worker, index, sockets, writer),
            name=f"trio_djws-worker-{index}",
        )
        process.start()  # the child gets its own copies of the sockets' descriptors
        writer.close()
        return cls(index, process, reader)

    async def supervise(self, stop: trio.Event) -> None:
        """Wait until the worker exits; SIGTERM it once it is ready and ``stop`` is set."""
        with self._ready_reader:
            await trio.lowlevel.wait_readable(self._ready_reader.fileno())
            try:
                self._ready_reader.recv_bytes()
            except EOFError:
                pass  # it exited before reporting
            else:
                self.ready.set()
        if self.ready.is_set():
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._terminate_on, stop)
                await self._wait_exit()
                nursery.cancel_scope.cancel()
        else:
            await self._wait_exit()
        code = self.process.exitcode
        pid = self.process.pid
        if code == 0:
            logger.info("worker %d (pid %s) exited with status 0", self.index, pid)
        else:
            logger.error("worker %d (pid %s) exited with status %s", self.index, pid, code)
        stop.set()  # one worker gone: stop the others

    async def _terminate_on(self, stop: trio.Event) -> None:
        await stop.wait()
        self.process.terminate()

    async def _wait_exit(self) -> None:
        await trio.lowlevel.wait_readable(self.process.sentinel)
        self.process.join()  # reaps it; returns at once


async def _announce_when_ready(workers: list[_Worker], on_ready: Callable[[], None]) -> None:
    for worker in workers:
        await worker.ready.wait()
    logger.info("%d workers serving", len(workers))
    on_ready()


async def supervise(
    sockets: list[socket.socket],
    count: int,
    serve_worker: _ServeWorker,
    on_ready: Callable[[], None],
    stop: trio.Event,
) -> int:
    """Run ``count`` worker processes on the shared ``sockets`` until they have all exited.

    Spawns them with ``multiprocessing`` "spawn" (as ``hypercorn.run.run``); each runs
    ``serve_worker(index, sockets, report)`` (index from 1) with SIGINT ignored, and calls
    ``report(urls)`` once serving. The sockets are closed here once the workers hold their
    own copies, so when all workers stop accepting, the port refuses connections.

    Args:
        sockets: bound, listening sockets; closed by the time the workers are spawned.
        count: worker processes, >= 1.
        serve_worker: a module-level (picklable) function, the worker process's main.
        on_ready: called once every worker has reported.
        stop: set it to stop: each ready worker gets SIGTERM (a worker not yet ready gets
            it once ready). Set here too when a worker exits, which stops the others.

    Returns:
        The exit status: 0 if every worker exited with 0; else that of the first failed
        worker, or 1 if it was killed by a signal.

    Always a checkpoint; cancellation stops the supervision but leaves the workers running
    (they stop when this process exits).
    """
    context = multiprocessing.get_context("spawn")  # as hypercorn.run.run
    async with trio.open_nursery() as nursery:
        workers = [
            _Worker.spawn(context, index, sockets, serve_worker) for index in range(1, count + 1)
        ]
        for sock in sockets:
            # The workers hold their own descriptors: once they all stop accepting, the
            # port refuses connections instead of queueing them here.
            sock.close()
        nursery.start_soon(_announce_when_ready, workers, on_ready)
        async with trio.open_nursery() as supervisors:
            for worker in workers:
                supervisors.start_soon(worker.supervise, stop)
        nursery.cancel_scope.cancel()
    failed = [w.process.exitcode for w in workers if w.process.exitcode != 0]
    if not failed:
        return 0
    first = failed[0]
    return first if first is not None and first > 0 else 1
