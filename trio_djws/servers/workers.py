"""Internal: the worker processes of ``manage.py serve --workers N``.

Worker processes for ``manage.py serve --workers N`` (POSIX): spawn, supervise, stop.

``trio_djws.servers.serve.run`` calls ``supervise()`` when ``workers`` > 1. It spawns N processes
(``multiprocessing`` "spawn", as ``hypercorn.run.run``) that share the listening sockets; each
runs that module's single-process serve loop and reports once it is serving. Stopping the
parent (its ``stop`` event, set on SIGINT/SIGTERM) becomes one SIGTERM per ready worker. Each
worker also stops when the parent dies (``stop_when_parent_exits()``).

A worker that dies while serving (a crash, SIGKILL, the OOM killer) is restarted in its slot,
as gunicorn's arbiter does, and the other workers go on serving. Restarts back off: a worker
that dies within ``FAST_CRASH`` seconds of its start waits ``RESTART_DELAY_FIRST`` seconds,
doubled for each further fast crash up to ``RESTART_DELAY_MAX``; after
``FAST_CRASHES_TO_STOP`` fast crashes in a row the server stops, since restarting does not
help. A worker that exits before it ever served (an import error, a bad setting) stops the
server at once, as gunicorn's boot error does. The parent keeps its copies of the listening
sockets until it stops, so connections wait in the backlog while a worker restarts.

This module uses neither Hypercorn nor Django: what a worker runs comes in as ``serve_worker``,
so ``trio_djws.servers.serve`` imports this module and never the reverse.
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
from typing import Final, TypeAlias

import trio

__all__: list[str] = []

logger = logging.getLogger(__name__)

FAST_CRASH: Final = 10.0  # seconds: a worker that dies sooner after its start crashed fast
FAST_CRASHES_TO_STOP: Final = 5  # fast crashes in a row of one worker that stop the server
RESTART_DELAY_FIRST: Final = 0.1  # seconds before restarting a worker after a fast crash
RESTART_DELAY_MAX: Final = 5.0  # seconds: the cap of the doubling restart delay

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


def _status(code: int | None) -> int:
    # A process exit code as this process's exit status: killed by a signal (negative) -> 1.
    return code if code is not None and code > 0 else 1


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
                logger.info("worker %d (pid %s) serving", self.index, self.process.pid)
        if self.ready.is_set():
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._terminate_on, stop)
                await self._wait_exit()
                nursery.cancel_scope.cancel()
        else:
            await self._wait_exit()

    async def _terminate_on(self, stop: trio.Event) -> None:
        await stop.wait()
        self.process.terminate()

    async def _wait_exit(self) -> None:
        await trio.lowlevel.wait_readable(self.process.sentinel)
        self.process.join()  # reaps it; returns at once


class _Slot:
    """One worker's place: its process, restarted with backoff until the server stops."""

    def __init__(
        self,
        index: int,
        context: SpawnContext,
        sockets: list[socket.socket],
        serve_worker: _ServeWorker,
    ) -> None:
        self.index = index
        self._context = context
        self._sockets = sockets
        self._serve_worker = serve_worker
        self.first_ready = trio.Event()
        self.failed: int | None = None  # the exit status that stopped the server, if any
        self.clean = True  # every process of this slot that was asked to stop exited with 0

    async def run(self, stop: trio.Event) -> None:
        fast_crashes = 0
        delay = RESTART_DELAY_FIRST
        while not stop.is_set():
            started = trio.current_time()
            worker = _Worker.spawn(self._context, self.index, self._sockets, self._serve_worker)
            pid = worker.process.pid
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._forward_ready, worker)
                await worker.supervise(stop)
                nursery.cancel_scope.cancel()
            code = worker.process.exitcode
            if stop.is_set():
                self.clean = self.clean and code == 0
                log = logger.info if code == 0 else logger.error
                log("worker %d (pid %s) exited with status %s", self.index, pid, code)
                return
            if not worker.ready.is_set():
                logger.error(
                    "worker %d (pid %s) exited with status %s before serving; stopping the "
                    "server (restarting would fail the same way)",
                    self.index,
                    pid,
                    code,
                )
                self.failed = _status(code)
                stop.set()
                return
            lived = trio.current_time() - started
            if lived < FAST_CRASH:
                fast_crashes += 1
            else:
                fast_crashes, delay = 0, RESTART_DELAY_FIRST
            if fast_crashes >= FAST_CRASHES_TO_STOP:
                logger.error(
                    "worker %d (pid %s) exited with status %s: %d crashes in a row, each within "
                    "%.0f s of its start; stopping the server",
                    self.index,
                    pid,
                    code,
                    fast_crashes,
                    FAST_CRASH,
                )
                self.failed = _status(code)
                stop.set()
                return
            wait = delay if fast_crashes else RESTART_DELAY_FIRST
            logger.error(
                "worker %d (pid %s) exited with status %s after %.1f s; restarting it in %.1f s",
                self.index,
                pid,
                code,
                lived,
                wait,
            )
            with trio.move_on_after(wait):
                await stop.wait()
            if fast_crashes:
                delay = min(delay * 2, RESTART_DELAY_MAX)

    async def _forward_ready(self, worker: _Worker) -> None:
        await worker.ready.wait()
        self.first_ready.set()


async def _announce_when_ready(slots: list[_Slot], on_ready: Callable[[], None]) -> None:
    for slot in slots:
        await slot.first_ready.wait()
    logger.info("%d workers serving", len(slots))
    on_ready()


async def _close_sockets_on(stop: trio.Event, sockets: list[socket.socket]) -> None:
    # Once stopping, the port should refuse connections as soon as the workers stop
    # accepting, instead of queueing them on this process's copies.
    await stop.wait()
    for sock in sockets:
        sock.close()


async def supervise(
    sockets: list[socket.socket],
    count: int,
    serve_worker: _ServeWorker,
    on_ready: Callable[[], None],
    stop: trio.Event,
) -> int:
    """Run ``count`` worker processes on the shared ``sockets`` until ``stop`` is set and they
    have all exited; a worker that dies meanwhile is restarted (module docstring).

    Spawns them with ``multiprocessing`` "spawn" (as ``hypercorn.run.run``); each runs
    ``serve_worker(index, sockets, report)`` (index from 1) with SIGINT ignored, and calls
    ``report(urls)`` once serving.

    Args:
        sockets: bound, listening sockets; kept open here for restarts, closed once ``stop``
            is set.
        count: worker processes, >= 1.
        serve_worker: a module-level (picklable) function, the worker process's main.
        on_ready: called once every worker has reported.
        stop: set it to stop: each ready worker gets SIGTERM (a worker not yet ready gets
            it once ready). Set here too when the server gives up: a worker exited before
            serving, or crashed ``FAST_CRASHES_TO_STOP`` times in a row within
            ``FAST_CRASH`` seconds of its start.

    Returns:
        The exit status: 0 if the server was stopped and every worker then exited with 0;
        else the status of the worker that made the server give up (1 if it was killed by a
        signal), or 1 if a worker failed its shutdown.

    Always a checkpoint; cancellation stops the supervision but leaves the workers running
    (they stop when this process exits).
    """
    context = multiprocessing.get_context("spawn")  # as hypercorn.run.run
    slots = [_Slot(index, context, sockets, serve_worker) for index in range(1, count + 1)]
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_announce_when_ready, slots, on_ready)
            nursery.start_soon(_close_sockets_on, stop, sockets)
            async with trio.open_nursery() as workers:
                for slot in slots:
                    workers.start_soon(slot.run, stop)
            nursery.cancel_scope.cancel()
    finally:
        for sock in sockets:
            sock.close()
    for slot in slots:
        if slot.failed is not None:
            return slot.failed
    return 0 if all(slot.clean for slot in slots) else 1
