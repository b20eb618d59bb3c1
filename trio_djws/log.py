"""Per-connection logging context, safe client strings and rate-limited peer warnings.

``serve_connection`` sets ``connection_context`` before it opens the connection's nursery;
child tasks and ``to_thread`` workers inherit it (trio copies contextvars into tasks and
threads), and ``ConnectionContextFilter`` copies it onto every log record as attributes, so a
JSON formatter (python-json-logger, structlog) gets them without parsing the message:

==========================  =============================================================
record attribute            value (``"-"`` outside a connection)
==========================  =============================================================
``websocket_id``            the connection id (``WebSocket.id``)
``websocket_path``          the request path, escaped (``escape()``)
``websocket_namespace``     the handler's registered pattern, e.g. ``/chat/<slug:room>/``
``websocket_client``        the peer address ``host:port`` (as the transport reports it)
``websocket_user_id``       the handshake user's primary key once ``on_connect`` has run
                            (``"-"`` for no user or an anonymous one)
==========================  =============================================================

Client-supplied strings (paths, headers, close reasons) reach a log line only through ``%r``
or ``escape()``: a percent-decoded ``%0A`` in a path must not start a forged line.
``peer_warning()`` logs what a peer did wrong (a protocol error, a malformed handshake) as one
WARNING line, and at most ``PEER_WARNINGS_PER_INTERVAL`` identical ones (same logger and
message template) per ``PEER_WARNING_INTERVAL`` seconds; the next one after a quiet spell says
how many were suppressed.
"""

from __future__ import annotations

import logging
import select
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Final

import trio

__all__ = ["ConnectionContextFilter", "escape", "peer_warning"]

PEER_WARNING_INTERVAL: Final = 60.0  # seconds: the window of peer_warning()'s rate limit
PEER_WARNINGS_PER_INTERVAL: Final = 10  # identical peer warnings logged per window


@dataclass(slots=True)
class ConnectionContext:
    """One connection's log context. Mutable on purpose: every task and thread of the
    connection holds this same object, so ``user_id`` set after ``on_connect`` reaches them."""

    id: str
    path: str  # escaped (``escape()``): safe in any log format
    client: str
    namespace: str = "-"
    user_id: str = "-"


connection_context: ContextVar[ConnectionContext | None] = ContextVar(
    "trio_djws.connection", default=None
)


class ConnectionContextFilter(logging.Filter):
    """Adds ``websocket_id``, ``websocket_path``, ``websocket_namespace``,
    ``websocket_client`` and ``websocket_user_id`` to each record (``"-"`` outside a
    connection); attach it to a handler in ``LOGGING``. The path is escaped (``escape()``),
    so a ``%(websocket_path)s`` format cannot be made to forge lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = connection_context.get()
        if context is None:
            record.websocket_id = record.websocket_path = record.websocket_client = "-"
            record.websocket_namespace = record.websocket_user_id = "-"
        else:
            record.websocket_id = context.id
            record.websocket_path = context.path
            record.websocket_client = context.client
            record.websocket_namespace = context.namespace
            record.websocket_user_id = context.user_id
        return True


def readable(sock: object) -> bool:
    """Whether a socket (anything with ``fileno()``) has data waiting to be read (or an EOF),
    without reading it. Sync, never blocks; False for a closed socket."""
    fileno = getattr(sock, "fileno", None)
    fd = fileno() if fileno is not None else -1
    if fd < 0:
        return False
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


def escape(value: str) -> str:
    """``value`` with every non-printable character (``str.isprintable``: line breaks, other
    control characters, U+2028) replaced by its Python escape (``\\n``, ``\\x1b``); printable
    text, non-ASCII letters included, is unchanged. For client strings in log lines."""
    if value.isprintable():
        return value
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in value)


class _Window:
    __slots__ = ("logged", "started", "suppressed")

    def __init__(self, started: float) -> None:
        self.started = started
        self.logged = 0
        self.suppressed = 0


# One table per trio run (the server's), as trio keeps its default thread limiter.
_windows: trio.lowlevel.RunVar[dict[tuple[str, str], _Window]] = trio.lowlevel.RunVar(
    "trio_djws.peer_warnings"
)


def _table() -> dict[tuple[str, str], _Window] | None:
    try:
        return _windows.get()
    except LookupError:
        table: dict[tuple[str, str], _Window] = {}
        _windows.set(table)
        return table
    except RuntimeError:  # not in the trio thread: no limit (such warnings are rare)
        return None


def peer_warning(
    logger: logging.Logger,
    msg: str,
    *args: object,
    per_interval: int = PEER_WARNINGS_PER_INTERVAL,
) -> None:
    """Log one WARNING line about a peer's fault (never a traceback), rate-limited.

    At most ``per_interval`` calls with the same ``logger`` and ``msg`` (the template,
    whatever the ``args``) are logged per ``PEER_WARNING_INTERVAL`` seconds; the
    first one logged after a window that dropped some ends with the number dropped. Pass
    client strings as ``%r`` arguments or through ``escape()``. Sync, never blocks.
    """
    if not logger.isEnabledFor(logging.WARNING):
        return
    table = _table()
    if table is None:
        logger.warning(msg, *args)
        return
    now = trio.current_time()
    key = (logger.name, msg)
    window = table.get(key)
    suppressed = 0
    if window is None or now - window.started >= PEER_WARNING_INTERVAL:
        suppressed = window.suppressed if window is not None else 0
        window = table[key] = _Window(now)
    if window.logged >= per_interval:
        window.suppressed += 1
        return
    window.logged += 1
    if suppressed:
        logger.warning(
            msg + " (%d more like this suppressed in the previous %.0f s)",
            *args,
            suppressed,
            PEER_WARNING_INTERVAL,
        )
    else:
        logger.warning(msg, *args)


class _AcceptErrorFilter(logging.Filter):
    # trio's accept loop logs "accept returned EMFILE ...; retrying" with a traceback on every
    # retry (10 times a second when out of file descriptors): keep one line per interval,
    # without the traceback (WEBSOCKET_FD_HEADROOM normally keeps the server below the limit).
    def filter(self, record: logging.LogRecord) -> bool:
        record.exc_info = None
        record.exc_text = None
        table = _table()
        if table is None:
            return True
        now = trio.current_time()
        key = (record.name, str(record.msg))
        window = table.get(key)
        if window is None or now - window.started >= PEER_WARNING_INTERVAL:
            table[key] = _Window(now)
            return True
        window.suppressed += 1
        return False


_ACCEPT_ERROR_FILTER: Final = _AcceptErrorFilter()


def quiet_accept_errors() -> None:
    """Make trio's accept loop (logger ``trio.serve_listeners``) log an accept error such as
    ``EMFILE`` once per ``PEER_WARNING_INTERVAL`` seconds without a traceback, instead of a
    traceback per retry. Idempotent; called by the servers when they start."""
    logging.getLogger("trio.serve_listeners").addFilter(_ACCEPT_ERROR_FILTER)
