"""Worker threads for blocking code, and the guard that keeps the ORM off the trio thread.

Each kind of blocking work has its own ``trio.CapacityLimiter`` kept in a ``RunVar`` (as trio
keeps its default thread limiter), so WebSocket ORM calls never starve HTTP requests:

- ``db_limiter()``: ``WEBSOCKET_DB_THREADS`` threads for handlers' ORM and other sync calls;
- ``http_limiter()``: ``WEBSOCKET_HTTP_THREADS`` threads for Django's WSGI handler.

Django's own ``SynchronousOnlyOperation`` guard only sees asyncio loops
(``django/utils/asyncio.py``); ``install_orm_guard()`` adds the trio equivalent.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

import trio
from django.core.exceptions import SynchronousOnlyOperation
from django.db import close_old_connections, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.signals import connection_created

from . import instrument
from .conf import get_settings

__all__ = ["database_sync_to_thread", "to_thread"]

P = ParamSpec("P")
R = TypeVar("R")

_db_limiter: trio.lowlevel.RunVar[trio.CapacityLimiter] = trio.lowlevel.RunVar("trio_djws.db")
_http_limiter: trio.lowlevel.RunVar[trio.CapacityLimiter] = trio.lowlevel.RunVar("trio_djws.http")


def db_limiter() -> trio.CapacityLimiter:
    """The limiter of threads for handler ORM calls: ``WEBSOCKET_DB_THREADS`` (default 10).

    Keep it at most the database's connection limit: each thread holds one connection.
    """
    try:
        return _db_limiter.get()
    except LookupError:
        limiter = trio.CapacityLimiter(get_settings().db_threads)
        _db_limiter.set(limiter)
        return limiter


def http_limiter() -> trio.CapacityLimiter:
    """The limiter of threads for Django's WSGI handler: ``WEBSOCKET_HTTP_THREADS`` (default 40)."""
    try:
        return _http_limiter.get()
    except LookupError:
        limiter = trio.CapacityLimiter(get_settings().http_threads)
        _http_limiter.set(limiter)
        return limiter


def with_fresh_db_connection(fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """Call ``fn(*args, **kwargs)`` in this worker thread between two
    ``close_old_connections()`` (as ``channels/db.py`` does): a thread may be reused across
    calls, so connections that are broken or past ``CONN_MAX_AGE`` are dropped before and
    after, as Django does around each request. Returns what ``fn`` returns."""
    close_old_connections()
    try:
        return fn(*args, **kwargs)
    finally:
        close_old_connections()


def database_sync_to_thread(fn: Callable[P, R]) -> Callable[P, Awaitable[R]]:
    """Decorator: make a sync (ORM) function awaitable from trio.

    The call runs in a worker thread under ``db_limiter()`` with ``close_old_connections()``
    before and after, as Channels' ``database_sync_to_async`` does. The returned coroutine
    function is a checkpoint; if cancelled while waiting for a thread, nothing ran; once the
    thread runs, cancellation waits for it (``abandon_on_cancel=False``: a half-done ORM write
    is never orphaned).

    Raises:
        Whatever ``fn`` raises, in the awaiting task.
    """

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        call: Callable[[], R] = functools.partial(with_fresh_db_connection, fn, *args, **kwargs)
        if instrument.active is not None:
            call = _timed_wait(call)
        return await trio.to_thread.run_sync(call, limiter=db_limiter())

    return wrapper


async def to_thread(fn: Callable[..., R], *args: Any) -> R:
    """Run ``fn(*args)`` in a worker thread under ``db_limiter()`` and return its result.

    The same as ``database_sync_to_thread(fn)(*args)``; the thread may call back into trio
    with ``trio.from_thread.run`` (``websocket.sync`` does).
    """
    call: Callable[[], R] = functools.partial(with_fresh_db_connection, fn, *args)
    if instrument.active is not None:
        call = _timed_wait(call)
    return await trio.to_thread.run_sync(call, limiter=db_limiter())


def _timed_wait(call: Callable[[], R]) -> Callable[[], R]:
    # Reports how long the call waited for a DB worker thread (the limiter, then the thread's
    # start), from the thread once it runs.
    queued = time.perf_counter()

    def timed() -> R:
        observer = instrument.active
        if observer is not None:
            observer.thread_wait("db", time.perf_counter() - queued)
        return call()

    return timed


def _trio_thread_guard(
    execute: Callable[..., Any], sql: str, params: Any, many: bool, context: dict[str, Any]
) -> Any:
    if trio.lowlevel.in_trio_run():
        raise SynchronousOnlyOperation(
            "A database query was issued on the trio event loop thread; it would block every "
            "connection. Run ORM code in a worker thread: decorate the function with "
            "@trio_djws.database_sync_to_thread or call `await trio_djws.to_thread(fn, ...)`, "
            "or make the hook a plain `def`."
        )
    return execute(sql, params, many, context)


def _add_guard(connection: BaseDatabaseWrapper) -> None:
    if _trio_thread_guard not in connection.execute_wrappers:
        connection.execute_wrappers.append(_trio_thread_guard)


def _on_connection_created(
    sender: object, connection: BaseDatabaseWrapper, **kwargs: object
) -> None:
    _add_guard(connection)


def install_orm_guard() -> None:
    """Make ORM queries on the trio thread raise ``SynchronousOnlyOperation``.

    Installs an ``execute_wrapper`` on every database connection (present and future,
    through ``connection_created``). Called by ``TrioDjwsConfig.ready()``; idempotent.
    """
    connection_created.connect(_on_connection_created, dispatch_uid="trio_djws.orm_guard")
    for connection in connections.all(initialized_only=True):
        _add_guard(connection)


def in_trio_worker_thread() -> bool:
    """Whether the calling thread is a worker thread of a running trio loop
    (``trio.to_thread``), so that ``trio.from_thread.run`` can reach that loop."""
    try:
        trio.from_thread.run_sync(bool)
    except RuntimeError:
        return False
    return True
