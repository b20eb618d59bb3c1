"""Internal: ``trigger()`` and queued signals; use ``trio_djws.signals``.

``trigger()``: call Python signal functions and JavaScript functions in chosen windows.

``trigger(source, name, to=[...], **kwargs)`` works from any thread or process:

- in a view or any worker thread trio started (``source`` = the ``HttpRequest``, a
  ``WindowInfo``): JavaScript calls go out with ``trio_djws.publish()``; ``SERVER`` functions
  run in the calling thread (``async def`` ones on the trio thread, through
  ``trio.from_thread.run``);
- in another process (a Celery worker, ``manage.py shell``): the same, through the broker's
  sync path (``WEBSOCKET_BROKER`` must be the ``RedisBroker``); ``async def`` functions
  cannot run there (``TypeError``);
- on the trio thread, in a signal function or a signals handler (``source`` = the
  ``WindowInfo`` or the ``WebSocket`` of a signals window): scheduled in order on that
  window's connection, which runs it as soon as the current hook yields. ``await
  atrigger(...)`` does the same work inline and works from any async code.

Destinations (``to``, default ``[SERVER]``): ``SERVER``, ``WINDOW``, ``USER``, ``BROADCAST``
and topics (strings or model instances). Each topic is a group, so a JavaScript call reaches
every process ``WEBSOCKET_BROKER`` reaches. Delivery is the groups': at most once, never
waiting for a window (a full send queue closes that window with 1008).
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import trio
from django.core.serializers.json import DjangoJSONEncoder
from django.db.models import Model
from django.http import HttpRequest
from django.utils.module_loading import import_string
from wsproto.frame_protocol import CloseReason

from ..conf import get_settings
from ..exceptions import ConfigurationError
from ..history import history_policy
from ..threads import in_trio_worker_thread, to_thread, with_fresh_db_connection
from .capture import current_capture
from .registry import SignalFunction, load, registry
from .topics import (
    BROADCAST,
    BROADCAST_GROUP,
    SERVER,
    USER,
    WINDOW,
    serialize_topic,
    topic_group,
    window_group,
)
from .window import WindowInfo
from .wire import call_frame, history_call_frame

__all__: list[str] = []

logger = logging.getLogger(__name__)

DEFAULT_QUEUE_THREADS = 4  # threads per queue not listed in WEBSOCKET_SIGNAL_QUEUE_THREADS
CELERY_TASK = "trio_djws.run_signal"

_queue_limiters: trio.lowlevel.RunVar[dict[str, trio.CapacityLimiter]] = trio.lowlevel.RunVar(
    "trio_djws.signal_queues"
)


def window_info_of(source: object) -> WindowInfo | None:
    """The ``WindowInfo`` of a ``trigger()`` source.

    Raises:
        TypeError: ``source`` is not an ``HttpRequest``, ``WebSocket``, ``WindowInfo`` or None.
    """
    from ..websocket import WebSocket

    if source is None or isinstance(source, WindowInfo):
        return source
    if isinstance(source, HttpRequest):
        return WindowInfo.from_request(source)
    if isinstance(source, WebSocket):
        info = getattr(source, "window_info", None)  # set by SignalHandler.on_connect
        if isinstance(info, WindowInfo):
            return info
        return WindowInfo.from_websocket(source)
    raise TypeError(
        f"trigger() source must be an HttpRequest, a WebSocket, a WindowInfo or None, "
        f"got {type(source).__name__}"
    )


def _destinations(
    info: WindowInfo | None, to: Iterable[object]
) -> tuple[bool, list[tuple[str, str]]]:
    # (whether SERVER is one, [(topic label, group)]) without duplicate groups.
    if isinstance(to, str | Model):
        to = [to]
    server = False
    groups: dict[str, str] = {}
    for destination in to:
        if destination is SERVER:
            server = True
        elif destination is WINDOW:
            if info is not None and info.window_key:
                groups.setdefault(window_group(info.window_key), str(WINDOW))
        elif destination is USER:
            if info is not None and info.user_group:
                groups.setdefault(info.user_group, str(USER))
        elif destination is BROADCAST:
            groups.setdefault(BROADCAST_GROUP, str(BROADCAST))
        else:
            topic = serialize_topic(destination)
            groups.setdefault(topic_group(topic), topic)
    return server, [(label, group) for group, label in groups.items()]


def trigger(
    source: object, name: str, /, *, to: Iterable[object] = (SERVER,), **kwargs: Any
) -> None:
    """Call signal ``name`` with ``kwargs``: its Python functions (``SERVER``) and/or its
    JavaScript functions in the windows of the other destinations.

    Args:
        source: the ``HttpRequest`` of a view, the ``WebSocket`` or ``WindowInfo`` of a
            signals window, or None (no window: ``WINDOW`` and ``USER`` reach nobody).
        name: the signal name.
        to: destinations: ``SERVER``, ``WINDOW``, ``USER``, ``BROADCAST``, topic strings and
            model instances (``serialize_topic``). A single topic may be passed alone.
        kwargs: the keyword arguments, JSON-encodable with ``DjangoJSONEncoder``.

    Blocking in threads (publish, ``SERVER`` functions); on the trio thread it only
    schedules the work on the source window's connection and returns at once. In a thread,
    a queued (``@signal(queue=...)``) function is handed to Celery when it is configured and
    otherwise runs right there, in the calling thread.

    Raises:
        RuntimeError: on the trio thread without a live signals window as ``source`` (use
            ``await atrigger(...)``).
        TypeError: a destination that is no topic; an ``async def`` ``SERVER`` function
            outside a trio_djws server; what the ``SERVER`` functions raise (in threads).
        ConfigurationError: outside the server with a broker that reaches no other process.
        BrokerError: Redis could not be reached (see ``publish``).
    """
    from ..publish import publish

    info = window_info_of(source)
    server, groups = _destinations(info, to)
    capture = current_capture()
    if capture is not None:
        capture.record(name, kwargs, info, server, groups)
        return
    frame = call_frame(name, kwargs) if groups else ""
    if trio.lowlevel.in_trio_run():
        if info is None or not info.has_trigger_queue:
            raise RuntimeError(
                "trigger() on the trio thread needs a signals window as source (the "
                "WindowInfo given to a signal function, or a signals WebSocket); in async "
                "code `await atrigger(...)`"
            )
        job = functools.partial(_deliver, info, name, server, groups, frame, kwargs)
        try:
            info.queue_trigger(job)
        except trio.WouldBlock:
            if info.websocket is not None:
                info.websocket.abort(CloseReason.POLICY_VIOLATION, "too many pending triggers")
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            logger.debug("trigger(%r): window %s has closed", name, info.window_key)
        return
    for _, group in groups:
        if history_policy(group) is None:
            publish(group, frame)
        else:
            publish(group, history_call_frame(name, kwargs, group), json_object=True)
    if server:
        _run_in_thread(info, registry.get(name), kwargs)


async def atrigger(
    source: object, name: str, /, *, to: Iterable[object] = (SERVER,), **kwargs: Any
) -> None:
    """``trigger()`` for async code on the trio thread, done before it returns: the
    JavaScript calls are queued for every window (``send_to_group``), then the ``SERVER``
    functions have run (``async def`` ones inline, plain ``def`` ones in a worker thread
    under the DB limiter, queued ones handed to their queue). A checkpoint.

    Raises:
        TypeError: a destination that is no topic; what the ``SERVER`` functions raise.
    """
    info = window_info_of(source)
    server, groups = _destinations(info, to)
    capture = current_capture()
    if capture is not None:
        capture.record(name, kwargs, info, server, groups)
        await trio.lowlevel.checkpoint()
        return
    frame = call_frame(name, kwargs) if groups else ""
    await _deliver(info, name, server, groups, frame, kwargs)


async def _deliver(
    info: WindowInfo | None,
    name: str,
    server: bool,
    groups: list[tuple[str, str]],
    frame: str,
    kwargs: Mapping[str, Any],
) -> None:
    from ..groups import send_to_group

    for _, group in groups:
        if history_policy(group) is None:
            await send_to_group(group, frame)
        else:  # the broker merges this group's position into the frame
            await send_to_group(group, history_call_frame(name, kwargs, group), json_object=True)
    if server:
        for entry in registry.get(name):
            await run_async(entry, info, kwargs)
    else:
        await trio.lowlevel.checkpoint()


async def run_async(
    entry: SignalFunction, info: WindowInfo | None, kwargs: Mapping[str, Any]
) -> None:
    """Run one signal function from the trio thread and wait for it (a queued one: until
    it is handed to Celery or has run in its queue's worker thread)."""
    window = info if info is not None else WindowInfo()
    if entry.queue is not None:
        await enqueue(entry, window, kwargs)
    elif entry.is_async:
        await entry.function(window, **kwargs)
    else:
        await to_thread(functools.partial(entry.function, window, **kwargs))


def _run_in_thread(
    info: WindowInfo | None, entries: list[SignalFunction], kwargs: Mapping[str, Any]
) -> None:
    window = info if info is not None else WindowInfo()
    in_server = in_trio_worker_thread()
    for entry in entries:
        if entry.queue is not None and celery_app() is not None:
            _send_celery_task(entry, window, kwargs)
        elif entry.is_async:
            if not in_server:
                raise TypeError(
                    f"signal function {entry.function.__qualname__} is async def: it runs only "
                    f"in a trio_djws server, not in this process"
                )
            trio.from_thread.run(functools.partial(entry.function, window, **kwargs))
        else:
            entry.function(window, **kwargs)


# -- background queues ----------------------------------------------------------------------


def queue_limiter(queue: str) -> trio.CapacityLimiter:
    """The worker-thread limiter of ``queue``: ``WEBSOCKET_SIGNAL_QUEUE_THREADS[queue]``
    threads (default 4), one per queue name and trio run."""
    try:
        limiters = _queue_limiters.get()
    except LookupError:
        limiters = {}
        _queue_limiters.set(limiters)
    limiter = limiters.get(queue)
    if limiter is None:
        size = get_settings().signal_queue_threads.get(queue, DEFAULT_QUEUE_THREADS)
        limiter = limiters[queue] = trio.CapacityLimiter(size)
    return limiter


def celery_app() -> Any:
    """The Celery app named by ``WEBSOCKET_CELERY_APP``, or None (unset, or ``celery`` not
    installed: queued signals then run in worker threads).

    Raises:
        ConfigurationError: the setting does not import.
    """
    path = get_settings().celery_app
    if path is None:
        return None
    try:
        import celery  # noqa: F401  (only its presence matters here)
    except ImportError:
        return None
    try:
        return import_string(path)
    except ImportError as exc:
        raise ConfigurationError(
            f"WEBSOCKET_CELERY_APP must be a dotted path to a Celery app, got {path!r}: {exc}"
        ) from exc


def _json_kwargs(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    # What a Celery task can carry: JSON, encoded as the wire format is (DjangoJSONEncoder).
    result: dict[str, Any] = json.loads(json.dumps(kwargs, cls=DjangoJSONEncoder))
    return result


def _send_celery_task(entry: SignalFunction, info: WindowInfo, kwargs: Mapping[str, Any]) -> None:
    app = celery_app()
    assert app is not None
    app.send_task(
        CELERY_TASK,
        args=[entry.path, entry.queue, info.to_dict(), _json_kwargs(kwargs)],
        queue=entry.queue,
    )


async def enqueue(entry: SignalFunction, info: WindowInfo, kwargs: Mapping[str, Any]) -> None:
    """Hand a queued signal function to Celery (``WEBSOCKET_CELERY_APP``), or run it in a
    worker thread under its queue's limiter; returns once handed over or done.

    ``kwargs`` are the raw JSON values (``SerializedForm`` parameters are converted where the
    function runs). A checkpoint; cancelled while waiting for a thread, nothing ran.
    """
    assert entry.queue is not None
    limiter = queue_limiter(entry.queue)
    if celery_app() is not None:
        call: Callable[[], object] = functools.partial(_send_celery_task, entry, info, kwargs)
    else:
        call = functools.partial(
            with_fresh_db_connection, entry.function, info, **entry.bind(info, kwargs)
        )
    await trio.to_thread.run_sync(call, limiter=limiter)


def run_queued(path: str, queue: str, window: Mapping[str, Any], kwargs: Mapping[str, Any]) -> int:
    """Run the functions of signal ``path`` on ``queue`` (the body of the Celery task
    ``trio_djws.run_signal``); ``trigger()`` inside them goes through ``publish()``.

    Returns:
        How many functions ran.

    Raises:
        TypeError: ``kwargs`` no longer match a function's signature.
    """
    load()
    info = WindowInfo.from_dict(window)
    ran = 0
    for entry in registry.get(path):
        if entry.queue == queue:
            with_fresh_db_connection(entry.function, info, **entry.bind(info, kwargs))
            ran += 1
    if not ran:
        logger.warning("no signal function %r on queue %r in this process", path, queue)
    return ran
