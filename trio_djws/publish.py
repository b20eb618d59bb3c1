"""``publish()``: push a message to a group from any thread or process.

The paths, chosen at call time:

- in a worker thread started by our server (a plain ``def`` hook, ``to_thread``, Django's
  WSGI views served by trio_djws): the message is handed to the trio loop with
  ``trio.from_thread.run`` and sent like ``send_to_group``;
- in a process whose ``trio_djws.wsgi.get_wsgi_application()`` runs the standalone server
  in a thread (djwebsockets' model): handed to that thread's trio loop the same way (the
  server registers that path when it starts: ``set_server_thread``);
- in any other process (``manage.py shell``, gunicorn, a Celery task), or a thread trio did
  not start, with the ``RedisBroker``: published with redis-py's sync client, no event loop
  involved (calling ``async_to_sync`` from Celery is what breaks channels_redis with "Event
  loop is closed", its issues 332 and 125); one client per process and URL, pooled, not
  opened per call;
- anywhere else with a broker that has no sync path (the in-memory default):
  ``ConfigurationError`` naming ``WEBSOCKET_BROKER``.

Cross-process messages travel in the envelope of ``trio_djws.brokers.envelope``; redis-py's
sync clients are pooled in ``trio_djws.brokers.sync_clients``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Awaitable, Callable
from typing import Protocol

import trio
from django.core.serializers.json import DjangoJSONEncoder

from .conf import broker_backend, get_settings
from .exceptions import ConfigurationError
from .threads import in_trio_worker_thread
from .typing import JSONValue, Message

__all__ = ["publish", "publish_json", "publish_on_commit"]


class ServerThreadRunner(Protocol):
    """Runs ``await fn(*args)`` in a server's trio run from another thread and returns its
    result, blocking (``trio_djws.wsgi.ServerThread.run``)."""

    def __call__(self, fn: Callable[..., Awaitable[object]], /, *args: object) -> object: ...


_server_thread_lock = threading.Lock()
_server_thread: ServerThreadRunner | None = None


def set_server_thread(run: ServerThreadRunner | None) -> None:
    """Register how ``publish()`` reaches the server that runs in a thread of this process
    (the WSGI side-thread server calls it once it serves; None forgets it, for tests)."""
    global _server_thread
    with _server_thread_lock:
        _server_thread = run


# -- publish --------------------------------------------------------------------------------


def publish(group: str, message: Message, *, json_object: bool = False) -> None:
    """Send ``message`` to every member of ``group`` on every process the broker reaches.

    Blocking; callable from any thread or process, never from async code on the trio thread
    (``await send_to_group(...)`` there). Same delivery as ``send_to_group``: at most once,
    never waiting for a member (a full send queue closes that member with 1008).

    Args:
        group: the group name.
        message: ``str`` (a text frame) or ``bytes`` (a binary frame), sent unchanged.
        json_object: ``message`` is the JSON text of an object: in a group with history
            members get it with ``"position"`` merged in (as ``publish_json`` does).

    Raises:
        TypeError: ``message`` is neither ``str`` nor ``bytes``.
        RuntimeError: called on the trio thread itself.
        ConfigurationError: outside a trio_djws server with a broker that has no sync path
            (``WEBSOCKET_BROKER`` is the in-memory default, which reaches one process).
        BrokerError: Redis could not be reached (the message is lost); for a group with
            history, after ``WEBSOCKET_HISTORY_PUBLISH_TIMEOUT`` seconds of retries.
    """
    if not isinstance(message, str | bytes):
        raise TypeError(f"publish expects str or bytes, got {type(message).__name__}")
    _publish(group, message, json_object=json_object and isinstance(message, str))


def _publish(group: str, message: Message, *, json_object: bool) -> None:
    from .groups import current_group_server

    async def send() -> None:
        # As send_to_group / send_group_json do, on the trio thread.
        await current_group_server().broker.publish(group, message, json_object=json_object)

    if trio.lowlevel.in_trio_run():
        raise RuntimeError(
            "publish() blocks; on the trio thread use `await trio_djws.send_to_group(...)`"
        )
    if in_trio_worker_thread():
        trio.from_thread.run(send)
        return
    run_in_server = _server_thread
    if run_in_server is not None:  # get_wsgi_application() runs the server in this process
        run_in_server(send)
        return
    broker_class, config = broker_backend()
    publish_sync = getattr(broker_class, "publish_sync", None)
    if publish_sync is None:
        raise ConfigurationError(
            f"publish() outside a trio_djws server needs a cross-process broker, but "
            f"WEBSOCKET_BROKER['BACKEND'] is {get_settings().broker['BACKEND']!r}, which "
            f"reaches only its own server process. Set WEBSOCKET_BROKER to "
            f"trio_djws.brokers.RedisBroker, or call publish() from the server's own worker "
            f"threads."
        )
    if json_object:
        publish_sync(config, group, message, json_object=True)
    else:
        publish_sync(config, group, message)


def publish_json(group: str, data: JSONValue) -> None:
    """Encode ``data`` once with Django's ``DjangoJSONEncoder`` and ``publish`` it as a text
    frame (same behaviour and errors as ``publish``). In a group with history a ``dict``
    reaches members with its ``"position"`` merged in, as ``send_group_json`` does."""
    text = json.dumps(data, cls=DjangoJSONEncoder)
    _publish(group, text, json_object=isinstance(data, dict))


def publish_on_commit(
    group: str, message: Message | JSONValue, *, using: str | None = None
) -> None:
    """``publish`` (``str``/``bytes``) or ``publish_json`` (anything else) once the current
    database transaction of ``using`` commits, with Django's ``transaction.on_commit``; at
    once outside a transaction (autocommit). A page told about a row can then always read
    it; a rolled-back transaction publishes nothing.

    Call it from sync code (views, ORM code in worker threads), where ``publish`` works. An
    error from the publish itself is raised by the commit (Django runs on-commit callbacks
    in the committing thread, after the commit).

    Args:
        group: the group name.
        message: the text or bytes to publish, or data for ``publish_json``.
        using: the database alias (Django's default database if None).
    """
    from django.db import transaction

    if isinstance(message, str | bytes):
        transaction.on_commit(lambda: publish(group, message), using=using)
    else:
        transaction.on_commit(lambda: publish_json(group, message), using=using)
