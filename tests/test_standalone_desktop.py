"""examples/standalone_desktop.py: Django configured in code, served by
``trio_djws.server.serve``, run as a subprocess with real clients."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Final

import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from tests.processes import REPO_ROOT, ServerProcess, child_env
from trio_djws.conf import ENGINES

EXAMPLE: Final = Path(REPO_ROOT) / "examples" / "standalone_desktop.py"
TIMEOUT: Final = 45.0  # seconds


@pytest.mark.parametrize("engine", ENGINES)
async def test_desktop_example_serves_rooms_and_stops_on_sigint(engine: str) -> None:
    env = child_env(None)  # the example configures Django in code
    command = [sys.executable, str(EXAMPLE), "--bind", "127.0.0.1:0", "--engine", engine]
    with trio.fail_after(TIMEOUT):
        async with ServerProcess.open(command, env) as server:
            (url,) = await server.urls()
            async with (
                open_websocket_url(f"{url}/echo/") as echo,
                open_websocket_url(f"{url}/rooms/kitchen/") as a,
                open_websocket_url(f"{url}/rooms/kitchen/") as b,
            ):
                assert json.loads(await echo.get_message()) == {"hello": "desktop"}
                await echo.send_message("ping")
                assert await echo.get_message() == "ping"
                await a.send_message("dinner")
                assert await a.get_message() == "dinner"
                assert await b.get_message() == "dinner"
                server.process.send_signal(signal.SIGINT)
                for ws in (echo, a, b):
                    with pytest.raises(ConnectionClosed) as info:
                        await ws.get_message()
                    assert info.value.reason.code == 1001
            assert await server.wait_exit() == 0
