"""trio-djws: WebSockets for Django on Trio's structured concurrency."""

from __future__ import annotations

from wsproto.frame_protocol import CloseReason as CloseCode

from . import presence
from .auth import user_group
from .exceptions import (
    Block,
    BrokerError,
    ConfigurationError,
    ConnectionClosed,
    Reject,
    TrioDjwsError,
)
from .groups import send_group_json, send_to_group
from .handler import BaseMixin, BaseWSClass
from .history import JoinResult, Position
from .mixins import DjangoMiddlewareMixin
from .publish import publish, publish_json, publish_on_commit
from .routing import Namespace
from .threads import database_sync_to_thread, to_thread
from .typing import Message
from .websocket import WebSocket

__all__ = [
    "BaseMixin",
    "BaseWSClass",
    "Block",
    "BrokerError",
    "CloseCode",
    "ConfigurationError",
    "ConnectionClosed",
    "DjangoMiddlewareMixin",
    "JoinResult",
    "Message",
    "Namespace",
    "Position",
    "Reject",
    "TrioDjwsError",
    "WebSocket",
    "database_sync_to_thread",
    "presence",
    "publish",
    "publish_json",
    "publish_on_commit",
    "send_group_json",
    "send_to_group",
    "to_thread",
    "user_group",
]

__version__ = "0.1.0"
