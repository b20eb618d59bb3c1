"""Settings for the WSGI subprocesses of tests/test_servers_wsgi.py (``trio_djws.wsgi``): the test
settings, the views of tests/wsgi_urls.py, and the WebSocket server on an ephemeral port
(the tests read it from the server thread's "listening on" log line)."""

from __future__ import annotations

from tests.settings import *  # noqa: F403

ROOT_URLCONF = "tests.wsgi_urls"
WEBSOCKET_PORT = 0  # any free port
WEBSOCKET_SHUTDOWN_TIMEOUT = 3  # seconds
