"""The WSGI side-thread server, at its documented path: ``trio_djws.wsgi.get_wsgi_application``
and friends live in ``trio_djws.servers.wsgi``; this module re-exports them."""

from __future__ import annotations

from .servers.wsgi import ServerThread, get_wsgi_application, run_in_server, server_thread

__all__ = ["ServerThread", "get_wsgi_application", "run_in_server", "server_thread"]
