"""``manage.py runwebsocket`` (the standalone server in the foreground), run as a subprocess.

Each server is ``python -m django runwebsocket`` with tests/launcher_settings.py (shutdown
timeout 3 s) and its handlers; tests learn the port from the ``Listening on`` line and
synchronise on what the server prints or sends, never on sleeps.
"""

from __future__ import annotations

import signal
from contextlib import AbstractAsyncContextManager
from typing import Final

import pytest
import trio
from django.core.management import CommandError, call_command
from trio_websocket import ConnectionClosed, open_websocket_url

from tests.launcher_handlers import BURST_COUNT, BURST_SIZE
from tests.processes import ServerProcess, run_django
from trio_djws.conf import ENGINES

TIMEOUT: Final = 45.0  # seconds per test; the autouse watchdog in conftest allows 60
GOING_AWAY: Final = 1001


def run_command(
    *args: str, settings: dict[str, object] | None = None
) -> AbstractAsyncContextManager[ServerProcess]:
    """Start ``python -m django runwebsocket ARGS``; kill it on the way out."""
    return run_django("runwebsocket", *args, settings=settings)


@pytest.mark.parametrize("engine", ENGINES)
async def test_sigint_delivers_queued_messages_then_1001_and_exits_0(engine: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with run_command("--bind", "127.0.0.1:0", "--engine", engine) as server:
            (url,) = await server.urls()
            async with (
                open_websocket_url(f"{url}/echo/") as echo,
                open_websocket_url(f"{url}/launcher/control/") as control,
                open_websocket_url(f"{url}/launcher/burst/") as burst,
            ):
                await echo.send_message("hello")
                assert await echo.get_message() == "hello"
                await burst.send_message("go")
                assert await control.get_message() == "burst queued"  # 100 sends issued
                server.process.send_signal(signal.SIGINT)
                received = [await burst.get_message() for _ in range(BURST_COUNT)]
                closed = []
                for ws in (burst, control, echo):
                    with pytest.raises(ConnectionClosed) as info:
                        await ws.get_message()
                    closed.append(info.value.reason.code)
            assert [str(m)[:5] for m in received] == [f"{i:05d}" for i in range(BURST_COUNT)]
            assert all(len(m) == BURST_SIZE for m in received)
            assert closed == [GOING_AWAY] * 3
            assert await server.process.wait() == 0
    assert f"engine {engine}" in server.stderr.text


async def test_sigterm_exits_0() -> None:
    with trio.fail_after(TIMEOUT):
        async with run_command("--bind", "127.0.0.1:0") as server:
            (url,) = await server.urls()
            async with open_websocket_url(f"{url}/echo/") as ws:
                server.process.send_signal(signal.SIGTERM)
                with pytest.raises(ConnectionClosed) as info:
                    await ws.get_message()
                assert info.value.reason.code == GOING_AWAY
            assert await server.process.wait() == 0


async def test_every_bind_is_announced_and_served() -> None:
    with trio.fail_after(TIMEOUT):
        async with run_command("--bind", "127.0.0.1:0", "--bind", "127.0.0.1:0") as server:
            urls = await server.urls(2)
            assert len(set(urls)) == 2
            for url in urls:
                async with open_websocket_url(f"{url}/echo/") as ws:
                    await ws.send_message(url)
                    assert await ws.get_message() == url
            server.process.send_signal(signal.SIGINT)
            assert await server.process.wait() == 0


async def test_default_bind_comes_from_websocket_host_and_port() -> None:
    settings = {"WEBSOCKET_HOST": "127.0.0.1", "WEBSOCKET_PORT": 0}
    with trio.fail_after(TIMEOUT):
        async with run_command(settings=settings) as server:
            (url,) = await server.urls()
            assert url.startswith("ws://127.0.0.1:")
            server.process.send_signal(signal.SIGINT)
            assert await server.process.wait() == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bind", "nonsense"], "--bind expects HOST:PORT"),
        (["--bind", "127.0.0.1:99999"], "--bind expects HOST:PORT"),
        (["--bind", "192.0.2.1:0"], "cannot listen on 192.0.2.1:0"),
    ],
)
def test_bad_options_raise_command_error(args: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=message):
        call_command("runwebsocket", *args)
