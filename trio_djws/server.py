"""The standalone WebSocket server, at its documented path: ``trio_djws.server.serve`` and
friends live in ``trio_djws.servers.standalone``; this module re-exports them."""

from __future__ import annotations

from .servers.standalone import Address, format_address, run, serve, serve_sockets

__all__ = ["Address", "format_address", "run", "serve", "serve_sockets"]
