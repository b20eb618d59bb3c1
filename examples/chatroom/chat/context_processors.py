"""Template context: where the room page opens its WebSocket."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest


def websocket(request: HttpRequest) -> dict[str, object]:
    """``websocket_port``: ``CHAT_WEBSOCKET_PORT`` (standalone mode), or None for the page's
    own port (``manage.py serve`` serves both)."""
    return {"websocket_port": getattr(settings, "CHAT_WEBSOCKET_PORT", None)}
