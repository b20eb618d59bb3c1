"""Servers run as subprocesses (``manage.py serve``, ``runwebsocket``, gunicorn, examples).

``ServerProcess.open`` starts one with its output pipes collected, so a test learns the port
from what the server prints (its ``Listening on`` line) and synchronises on printed lines,
never on sleeps; on the way out the process is killed if it still runs. A test stops it with
a signal and reads the exit status: ``await server.stop(signal.SIGTERM) == 0``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Final, Self

import trio

__all__ = ["REPO_ROOT", "Output", "ServerProcess", "child_env", "run_django", "run_serve"]

REPO_ROOT: Final = str(Path(__file__).resolve().parent.parent)
KILL_WAIT: Final = 5.0  # seconds to reap a killed process on the way out


class Output:
    """Everything one pipe of the subprocess has printed so far."""

    def __init__(self) -> None:
        self.text = ""
        self.closed = False
        self._changed = trio.Event()

    async def collect(self, stream: trio.abc.ReceiveStream) -> None:
        async with stream:
            async for chunk in stream:
                self.text += chunk.decode(errors="replace")
                self._changed.set()
                self._changed = trio.Event()
        self.closed = True
        self._changed.set()

    async def wait_for(self, pattern: str, count: int = 1) -> list[re.Match[str]]:
        """Wait until ``pattern`` (a regex) has matched ``count`` times; fail at EOF."""
        while True:
            matches = list(re.finditer(pattern, self.text))
            if len(matches) >= count:
                return matches
            if self.closed:
                raise AssertionError(f"{pattern!r} never printed; got:\n{self.text}")
            await self._changed.wait()


class ServerProcess:
    """A running subprocess whose stdout and stderr are collected (each if piped)."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.stdout = Output()
        self.stderr = Output()

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        command: Sequence[str],
        env: dict[str, str],
        *,
        cwd: str | Path = REPO_ROOT,
        stdout: int = subprocess.PIPE,
        stderr: int = subprocess.PIPE,
    ) -> AsyncIterator[Self]:
        """Start ``command``; kill it on the way out if it still runs.

        ``stdout``/``stderr`` are ``subprocess`` constants: ``PIPE`` collects the pipe,
        ``STDOUT`` merges stderr into ``self.stdout``, ``DEVNULL`` drops it. If the body
        fails, the collected output is printed (pytest shows it with the failure).
        """
        process = await trio.lowlevel.open_process(
            list(command),
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            env=env,
            cwd=cwd,
        )
        server = cls(process)
        try:
            async with trio.open_nursery() as nursery:
                if process.stdout is not None:
                    nursery.start_soon(server.stdout.collect, process.stdout)
                if process.stderr is not None:
                    nursery.start_soon(server.stderr.collect, process.stderr)
                yield server
                nursery.cancel_scope.cancel()
        except BaseException:
            print(server.stdout.text + server.stderr.text)  # shown by pytest for a failure
            raise
        finally:
            if process.poll() is None:
                process.kill()
            with trio.move_on_after(KILL_WAIT, shield=True):
                await process.wait()

    async def urls(self, count: int = 1) -> list[str]:
        """The ``ws://HOST:PORT`` of the first ``count`` ``Listening on`` lines on stdout
        (``manage.py serve`` prints ``http://``, the standalone engines ``ws://``)."""
        matches = await self.stdout.wait_for(r"Listening on (?:ws|http)://(\S+)\n", count)
        return [f"ws://{match[1]}" for match in matches]

    async def address(self) -> tuple[str, int]:
        """The first ``Listening on`` address as ``(host, port)``."""
        host, port = (await self.urls())[0].removeprefix("ws://").rsplit(":", 1)
        return host, int(port)

    async def wait_exit(self) -> int:
        """Wait for the process to exit; returns its exit status."""
        return await self.process.wait()

    async def stop(self, signum: int) -> int:
        """Send ``signum`` and wait for the exit; returns the exit status."""
        self.process.send_signal(signum)
        return await self.process.wait()


def child_env(django_settings: str | None, **variables: str) -> dict[str, str]:
    """``os.environ`` with the repository on PYTHONPATH, unbuffered output and ``variables``.

    ``django_settings`` becomes DJANGO_SETTINGS_MODULE; ``None`` removes it, for children
    that configure Django themselves.
    """
    env = {**os.environ, "PYTHONPATH": REPO_ROOT, "PYTHONUNBUFFERED": "1", **variables}
    if django_settings is None:
        env.pop("DJANGO_SETTINGS_MODULE", None)
    else:
        env["DJANGO_SETTINGS_MODULE"] = django_settings
    return env


def run_django(
    *args: str, settings: dict[str, object] | None = None
) -> AbstractAsyncContextManager[ServerProcess]:
    """``python -m django ARGS`` with tests/launcher_settings.py, whose ``settings`` overrides
    arrive as JSON in LAUNCHER_TEST_SETTINGS; see ``ServerProcess.open``."""
    env = child_env("tests.launcher_settings", LAUNCHER_TEST_SETTINGS=json.dumps(settings or {}))
    return ServerProcess.open([sys.executable, "-m", "django", *args], env)


def run_serve(
    *args: str, settings: dict[str, object] | None = None
) -> AbstractAsyncContextManager[ServerProcess]:
    """Start ``python -m django serve --bind 127.0.0.1:0 ARGS``; kill it on the way out."""
    return run_django("serve", "--bind", "127.0.0.1:0", *args, settings=settings)
