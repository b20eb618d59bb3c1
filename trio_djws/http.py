"""Django's WSGI handler for the ASGI ``http`` scope, in worker threads (placeholder)."""

from __future__ import annotations

from .typing import ASGIReceive, ASGISend, HTTPScope

__all__ = ["serve_http"]


async def serve_http(scope: HTTPScope, receive: ASGIReceive, send: ASGISend) -> None:
    """Serve one HTTP request with Django's WSGI handler in a worker thread."""
    await send({"type": "http.response.start", "status": 501, "headers": []})
    await send({"type": "http.response.body", "body": b""})
