"""examples/standalone_desktop.py: Django configured in code, served by
``trio_djws.server.serve``, run as a subprocess with real clients."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Final

import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from tests.test_launcher import _Collected
from trio_djws.conf import ENGINES

REPO_ROOT: Final = Path(__file__).resolve().parent.parent
EXAMPLE: Final = REPO_ROOT / "examples" / "standalone_desktop.py"
TIMEOUT: Final = 45.0  # seconds


@pytest.mark.parametrize("engine", ENGINES)
async def test_desktop_example_serves_rooms_and_stops_on_sigint(engine: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PYTHONUNBUFFERED": "1"}
    env.pop("DJANGO_SETTINGS_MODULE", None)  # the example configures Django in code
    command = [sys.executable, str(EXAMPLE), "--bind", "127.0.0.1:0", "--engine", engine]
    process = await trio.lowlevel.open_process(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    stdout, stderr = _Collected(), _Collected()
    assert process.stdout is not None and process.stderr is not None
    try:
        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(stdout.collect, process.stdout)
                nursery.start_soon(stderr.collect, process.stderr)
                (match,) = await stdout.wait_for(r"Listening on (ws://\S+)\n")
                url = match[1]
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
                    process.send_signal(signal.SIGINT)
                    for ws in (echo, a, b):
                        with pytest.raises(ConnectionClosed) as info:
                            await ws.get_message()
                        assert info.value.reason.code == 1001
                assert await process.wait() == 0
                nursery.cancel_scope.cancel()
    finally:
        if process.poll() is None:
            process.kill()
        with trio.move_on_after(5, shield=True):
            await process.wait()
