"""``publish()``: push a message to a group from any thread or process, and the one envelope
every cross-process message travels in.

The paths, chosen at call time:

- in a worker thread started by our server (a plain ``def`` hook, ``to_thread``, Django's
  WSGI views served by trio_djws): the message is handed to the trio loop with
  ``trio.from_thread.run`` and sent like ``send_to_group``;
- in a process whose ``trio_djws.wsgi.get_wsgi_application()`` runs the standalone server
  in a thread (djwebsockets' model): handed to that thread's trio loop the same way;
- in any other process (``manage.py shell``, gunicorn, a Celery task), or a thread trio did
  not start, with the ``RedisBroker``: published with redis-py's sync client, no event loop
  involved (calling ``async_to_sync`` from Celery is what breaks channels_redis with "Event
  loop is closed", its issues 332 and 125); one client per process and URL, pooled, not
  opened per call;
- anywhere else with a broker that has no sync path (the in-memory default):
  ``ConfigurationError`` naming ``WEBSOCKET_BROKER``.

The envelope (version 1), serialised once per publish, whatever the number of members::

    byte 0      version (1)
    byte 1      kind: b"t" text frame, b"b" binary frame, b"p" presence changed (no payload)
    byte 2      n = length of the origin
    bytes 3..   origin (n ASCII bytes: "<pid>-<random hex>", see ``process_origin``)
    then        the payload: UTF-8 text or the raw bytes

The origin lets the publishing process skip its own copy coming back from Redis (it has
delivered locally already); the random part tells apart processes on different machines that
happen to share a pid. The redis-py path delivers nothing locally, so its envelopes carry
``sync_origin()`` instead, which no subscriber skips: a plain thread of a server process
(``threading.Thread``, a thread pool) reaches that process's members too.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import trio
from django.core.serializers.json import DjangoJSONEncoder

from .conf import broker_backend, get_settings
from .exceptions import ConfigurationError
from .threads import in_trio_worker_thread
from .typing import JSONValue, Message

if TYPE_CHECKING:
    import redis

__all__ = [
    "ENVELOPE_VERSION",
    "Envelope",
    "decode_envelope",
    "encode_envelope",
    "process_origin",
    "publish",
    "publish_json",
    "reset_sync_clients",
    "sync_client",
    "sync_origin",
]

ENVELOPE_VERSION: Final = 1
KIND_TEXT: Final = b"t"
KIND_BYTES: Final = b"b"
KIND_PRESENCE: Final = b"p"
_KINDS: Final = frozenset({KIND_TEXT, KIND_BYTES, KIND_PRESENCE})

_origin: tuple[int, bytes] | None = None


def process_origin() -> bytes:
    """This process's origin id: ``b"<pid>-<16 random hex digits>"``.

    Made again after a fork (the pid changed), so ``--workers`` processes never share one.
    """
    global _origin
    pid = os.getpid()
    if _origin is None or _origin[0] != pid:
        _origin = (pid, f"{pid}-{secrets.token_hex(8)}".encode("ascii"))
    return _origin[1]


def sync_origin() -> bytes:
    """The origin of envelopes published with redis-py's sync client (``publish()`` outside
    the server's trio threads): ``process_origin() + b"+sync"``, never a subscriber's own."""
    return process_origin() + b"+sync"


@dataclass(frozen=True)
class Envelope:
    """One decoded envelope."""

    kind: bytes
    """``b"t"`` (text), ``b"b"`` (bytes) or ``b"p"`` (presence changed)."""
    origin: bytes
    """The publishing process's ``process_origin()``."""
    message: Message
    """The frame to deliver (``""`` for presence)."""


def encode_envelope(
    message: Message, *, kind: bytes | None = None, origin: bytes | None = None
) -> bytes:
    """Wrap ``message`` (``str`` → text frame, ``bytes`` → binary) in a version-1 envelope
    stamped with ``origin`` (default: this process's origin, which its own subscriber skips
    because it delivered locally already)."""
    if origin is None:
        origin = process_origin()
    if kind is None:
        kind = KIND_TEXT if isinstance(message, str) else KIND_BYTES
    payload = message.encode("utf-8") if isinstance(message, str) else message
    return bytes((ENVELOPE_VERSION,)) + kind + bytes((len(origin),)) + origin + payload


def decode_envelope(data: bytes) -> Envelope:
    """Parse an envelope made by ``encode_envelope``.

    Raises:
        ValueError: not a version-1 envelope, or its text is not UTF-8.
    """
    if len(data) < 3 or data[0] != ENVELOPE_VERSION:
        version = data[0] if data else None
        raise ValueError(f"expected an envelope of version {ENVELOPE_VERSION}, got {version!r}")
    kind = data[1:2]
    if kind not in _KINDS:
        raise ValueError(f"expected an envelope kind in b't', b'b', b'p', got {kind!r}")
    end = 3 + data[2]
    origin = data[3:end]
    payload = data[end:]
    message: Message = payload.decode("utf-8") if kind == KIND_TEXT else payload
    return Envelope(kind, origin, "" if kind == KIND_PRESENCE else message)


# -- redis-py's sync clients: one per process and URL (the one module-level pool) -----------

_sync_clients: dict[tuple[int, str], redis.Redis] = {}
_sync_lock = threading.Lock()


def sync_client(url: str) -> redis.Redis:
    """The process's redis-py sync client for ``url`` (a connection pool shared by threads).

    Made on first use; a forked child makes its own (sockets are not shared across a fork).
    """
    import redis

    key = (os.getpid(), url)
    with _sync_lock:
        client = _sync_clients.get(key)
        if client is None:
            client = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5)
            _sync_clients[key] = client
        return client


def reset_sync_clients() -> None:
    """Close and forget every sync client of this process (tests; after settings change)."""
    with _sync_lock:
        clients = list(_sync_clients.values())
        _sync_clients.clear()
    for client in clients:
        client.close()


# -- publish --------------------------------------------------------------------------------


def publish(group: str, message: Message) -> None:
    """Send ``message`` to every member of ``group`` on every process the broker reaches.

    Blocking; callable from any thread or process, never from async code on the trio thread
    (``await send_to_group(...)`` there). Same delivery as ``send_to_group``: at most once,
    never waiting for a member (a full send queue closes that member with 1008).

    Args:
        group: the group name.
        message: ``str`` (a text frame) or ``bytes`` (a binary frame), sent unchanged.

    Raises:
        TypeError: ``message`` is neither ``str`` nor ``bytes``.
        RuntimeError: called on the trio thread itself.
        ConfigurationError: outside a trio_djws server with a broker that has no sync path
            (``WEBSOCKET_BROKER`` is the in-memory default, which reaches one process).
        BrokerError: Redis could not be reached (the message is lost).
    """
    from .groups import send_to_group

    if not isinstance(message, str | bytes):
        raise TypeError(f"publish expects str or bytes, got {type(message).__name__}")
    if trio.lowlevel.in_trio_run():
        raise RuntimeError(
            "publish() blocks; on the trio thread use `await trio_djws.send_to_group(...)`"
        )
    if in_trio_worker_thread():
        trio.from_thread.run(send_to_group, group, message)
        return
    from .servers.wsgi import server_thread  # here: it loads Django's WSGI handler

    thread = server_thread()
    if thread is not None:  # get_wsgi_application() runs the server in this process
        thread.run(send_to_group, group, message)
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
    publish_sync(config, group, message)


def publish_json(group: str, data: JSONValue) -> None:
    """Encode ``data`` once with Django's ``DjangoJSONEncoder`` and ``publish`` it as a text
    frame (same behaviour and errors as ``publish``)."""
    publish(group, json.dumps(data, cls=DjangoJSONEncoder))
