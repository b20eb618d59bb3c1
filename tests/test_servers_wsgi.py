"""``trio_djws.wsgi.get_wsgi_application`` (djwebsockets' model): Django under a real WSGI
server (gunicorn, in a subprocess) with the standalone WebSocket server in a thread of the
same worker process."""

from __future__ import annotations

import logging
import re
import signal
import subprocess
import sys
from contextlib import AbstractAsyncContextManager
from typing import Final

import httpx
import pytest
import trio
from django.test import override_settings
from trio_websocket import ConnectionClosed, open_websocket_url

from tests.processes import ServerProcess, child_env
from trio_djws import wsgi

TIMEOUT: Final = 45.0  # seconds; the autouse watchdog in conftest allows 60


class Gunicorn(ServerProcess):
    # gunicorn and our logging both write to stderr
    async def http_url(self) -> str:
        (match,) = await self.stderr.wait_for(r"Listening at: (http://\S+) ")
        return match[1]

    async def ws_url(self) -> str:
        (match,) = await self.stderr.wait_for(r"WebSocket server thread listening on (ws://\S+)")
        return match[1]


def run_gunicorn() -> AbstractAsyncContextManager[Gunicorn]:
    """``gunicorn tests.wsgi_app:application`` with one sync worker on 127.0.0.1:0."""
    command = [
        *(sys.executable, "-m", "gunicorn", "--bind", "127.0.0.1:0", "--workers", "1"),
        *("--no-control-socket", "tests.wsgi_app:application"),
    ]
    env = child_env(None)  # tests/wsgi_app.py sets tests.wsgi_settings
    return Gunicorn.open(command, env, stdout=subprocess.DEVNULL)


async def test_sync_view_reaches_a_websocket_client_of_the_side_server() -> None:
    with trio.fail_after(TIMEOUT):
        async with run_gunicorn() as server:
            http_url, ws_url = await server.http_url(), await server.ws_url()
            async with (
                open_websocket_url(f"{ws_url}/room/lobby/") as ws,
                httpx.AsyncClient(base_url=http_url, timeout=TIMEOUT) as client,
            ):
                response = await client.get("/publish/lobby/", params={"text": "from a view"})
                assert response.status_code == 200
                assert response.text == "sent"
                assert await ws.get_message() == "from a view"
                # gunicorn's graceful stop: the worker exits through the interpreter, and the
                # atexit hook drains the server thread: 1001, not a dropped connection.
                server.process.send_signal(signal.SIGTERM)
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.get_message()
                assert closed.value.reason.code == 1001
            assert await server.process.wait() == 0
    assert re.search(r"all connections closed in", server.stderr.text), server.stderr.text


async def test_port_owned_by_another_process_means_http_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Forked workers race for WEBSOCKET_PORT: the losers serve HTTP only, with a warning.
    caplog.set_level(logging.WARNING, logger="trio_djws")
    with trio.socket.socket() as owner:
        await owner.bind(("127.0.0.1", 0))
        owner.listen()
        port = owner.getsockname()[1]
        with override_settings(WEBSOCKET_PORT=port):
            application = wsgi.get_wsgi_application()
    assert callable(application)
    assert wsgi.server_thread() is None
    assert any(
        f"127.0.0.1:{port} is owned by another process" in r.getMessage() for r in caplog.records
    )
    with pytest.raises(RuntimeError, match="cross-process WEBSOCKET_BROKER"):
        wsgi.run_in_server(trio.sleep, 0)
