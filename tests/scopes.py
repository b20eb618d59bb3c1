"""ASGI scopes for tests that drive the core without a server."""

from __future__ import annotations

from trio_djws.typing import WebSocketScope


def websocket_scope(path: str) -> WebSocketScope:
    """A minimal ``websocket`` scope for ``path``: no headers, no client, no subprotocols."""
    return {
        "type": "websocket",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "scheme": "ws",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [],
        "client": None,
        "server": None,
        "subprotocols": [],
    }
