"""A private ``redis-server`` per test, on an ephemeral port (as pytest-redis does).

Started from the binary on PATH with no persistence (``--save "" --appendonly no``; with
``appendonly=True``, an append-only file in its directory, so that ``SHUTDOWN SAVE`` and a
restart keep the data) in a temporary directory; ready once it prints "Ready to accept
connections". ``stop()`` and ``start()`` restart it on the same port, for the tests of a
Redis outage.

Registered as a pytest plugin by tests/conftest.py: the ``redis_server`` fixture.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

__all__ = ["RedisServer", "free_port", "redis_server"]


def free_port() -> int:
    """A port the kernel just gave out on 127.0.0.1 (free at the time of the call)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """One private ``redis-server`` process; ``url`` stays the same across restarts."""

    def __init__(self, directory: Path, port: int | None = None, appendonly: bool = False) -> None:
        self.directory = directory
        self.appendonly = appendonly
        self.port = port if port is not None else free_port()
        self.process: trio.Process | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        """Start it and wait until it accepts connections."""
        binary = shutil.which("redis-server")
        assert binary is not None, "redis-server is not on PATH (.ci/run installs it)"
        command = [
            binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--dir", str(self.directory),
            "--logfile", "",
        ]  # fmt: skip
        process = await trio.lowlevel.open_process(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        assert process.stdout is not None
        output = b""
        with trio.fail_after(10):
            while b"Ready to accept connections" not in output:
                chunk = await process.stdout.receive_some(4096)
                if not chunk:
                    raise AssertionError(f"redis-server exited:\n{output.decode(errors='replace')}")
                output += chunk
        self.process = process
        self.starts += 1

    async def wait_exit(self) -> None:
        """Wait until the process has exited on its own (after ``SHUTDOWN``)."""
        process, self.process = self.process, None
        if process is None:
            return
        await process.wait()
        if process.stdout is not None:
            await process.stdout.aclose()

    async def stop(self) -> None:
        """Kill it (SIGKILL: no goodbye to clients) and wait until it has exited."""
        process, self.process = self.process, None
        if process is None:
            return
        process.kill()
        with trio.move_on_after(10, shield=True):
            await process.wait()
        if process.stdout is not None:
            await process.stdout.aclose()


@pytest.fixture
async def redis_server(tmp_path: Path) -> AsyncIterator[RedisServer]:
    """A private, started ``redis-server``; stopped after the test."""
    server = RedisServer(tmp_path)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
