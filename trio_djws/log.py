"""Per-connection logging context.

``serve_connection`` sets ``connection_context`` before it opens the connection's nursery;
child tasks and ``to_thread`` workers inherit it (trio copies contextvars into tasks and
threads), and ``ConnectionContextFilter`` copies it onto every log record as
``record.websocket_id``, ``record.websocket_path`` and ``record.websocket_client``.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar
from typing import NamedTuple

__all__ = ["ConnectionContext", "ConnectionContextFilter", "connection_context"]


class ConnectionContext(NamedTuple):
    id: str
    path: str
    client: str


connection_context: ContextVar[ConnectionContext | None] = ContextVar(
    "trio_djws.connection", default=None
)


class ConnectionContextFilter(logging.Filter):
    """Adds ``websocket_id``, ``websocket_path`` and ``websocket_client`` to each record
    (``"-"`` outside a connection); attach it to a handler in ``LOGGING``."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = connection_context.get()
        record.websocket_id = context.id if context else "-"
        record.websocket_path = context.path if context else "-"
        record.websocket_client = context.client if context else "-"
        return True
