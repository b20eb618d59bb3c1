"""``manage.py serve``, ``runwebsocket``, ``websocket_publish`` and ``websocket_routes``."""

from __future__ import annotations

__all__: list[str] = []
