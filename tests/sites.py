"""A fresh ``django-admin startproject`` site in a temporary directory, set up by the
documented steps, for tests that run a user's commands in subprocesses."""

from __future__ import annotations

import os
import pathlib
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

PROJECT = "mysite"


def site_env(**extra: str) -> dict[str, str]:
    """The environment of a command run in the site: none of the test run's Django settings."""
    env = {k: v for k, v in os.environ.items() if k not in {"DJANGO_SETTINGS_MODULE", "PYTHONPATH"}}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def run(site: pathlib.Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``python args...`` in the site; returns the completed process (stdout, stderr)."""
    done = subprocess.run(
        [sys.executable, *args],
        cwd=site,
        env=site_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check:
        assert done.returncode == 0, f"{args}: {done.stdout}\n{done.stderr}"
    return done


def startproject(root: pathlib.Path, *, install: bool = True) -> pathlib.Path:
    """``django-admin startproject mysite`` in ``root``; with ``install``, the Install steps:
    ``"trio_djws"`` first in ``INSTALLED_APPS`` (above ``django.contrib.staticfiles``)."""
    root.mkdir(parents=True, exist_ok=True)
    run(root, "-m", "django", "startproject", PROJECT, ".")
    if install:
        add_app(root, "trio_djws")
    return root


def settings_file(site: pathlib.Path) -> pathlib.Path:
    return site / PROJECT / "settings.py"


def add_app(site: pathlib.Path, app: str) -> None:
    """Put ``app`` first in the site's ``INSTALLED_APPS``."""
    path = settings_file(site)
    text = path.read_text()
    assert "INSTALLED_APPS = [\n" in text
    path.write_text(text.replace("INSTALLED_APPS = [\n", f'INSTALLED_APPS = [\n    "{app}",\n', 1))


def write(site: pathlib.Path, relative: str, text: str, *, package: bool = False) -> pathlib.Path:
    """Write a file of the site, creating its directories (and, with ``package``, the
    ``__init__.py`` that makes its directory a package)."""
    path = site / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    init = path.parent / "__init__.py"
    if package and not init.exists():
        init.write_text("")
    path.write_text(text)
    return path


class Process:
    """A long-running command of the site (a server), its output read line by line.

    ``expect(pattern)`` waits, up to ``timeout`` seconds, for an output line matching the
    regular expression and returns the match: servers are awaited by what they print, never
    by sleeping. Leaving the ``with`` block stops the process (SIGINT, then SIGKILL).
    """

    def __init__(self, site: pathlib.Path, *args: str, **env: str) -> None:
        self.args = args
        self.output: list[str] = []
        self._pending = ""
        self.proc = subprocess.Popen(
            [sys.executable, *args],
            cwd=site,
            env=site_env(**env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # SIGINT reaches the whole group (runserver's child)
        )

    def __enter__(self) -> Process:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _lines(self, deadline: float) -> Iterator[str]:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while True:
            while "\n" in self._pending:
                line, self._pending = self._pending.split("\n", 1)
                self.output.append(line)
                yield line
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{self.args}: timed out; output so far:\n{self.text}")
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                if self._pending:
                    self.output.append(self._pending)
                    yield self._pending
                    self._pending = ""
                raise EOFError(f"{self.args}: exited ({self.proc.wait()}); output:\n{self.text}")
            self._pending += chunk.decode(errors="replace")

    def expect(
        self, pattern: str, timeout: float = 60.0, *, since: int | None = None
    ) -> re.Match[str]:
        """The first output line matching ``pattern``, read from now on, or from output line
        ``since`` on (lines already read included) when given."""
        regex = re.compile(pattern)
        if since is not None:
            for line in self.output[since:]:
                match = regex.search(line)
                if match is not None:
                    return match
        for line in self._lines(time.monotonic() + timeout):
            match = regex.search(line)
            if match is not None:
                return match
        raise AssertionError("unreachable")

    def wait(self, timeout: float = 60.0) -> int:
        """Read the output to the end and return the exit status."""
        try:
            for _ in self._lines(time.monotonic() + timeout):
                pass
        except EOFError:
            pass
        return self.proc.wait(timeout=timeout)

    def interrupt(self) -> None:
        """Ctrl-C: SIGINT to the process group."""
        os.killpg(self.proc.pid, signal.SIGINT)

    @property
    def text(self) -> str:
        return "\n".join(self.output)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        else:
            try:  # a reloader's child may outlive its parent
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc.stdout is not None:
            self.proc.stdout.close()


DOCS = pathlib.Path(__file__).resolve().parents[1] / "docs"
_FENCE = re.compile(r"^(?P<indent> *)```[a-z]*\n(?P<body>.*?)^(?P=indent)```$", re.M | re.S)


def doc_files(page: str) -> dict[str, str]:
    """The files a docs page shows, verbatim: each fenced block whose first line is a comment
    naming a path (``# chat/websockets.py``), by that path."""
    files: dict[str, str] = {}
    for match in _FENCE.finditer((DOCS / page).read_text()):
        indent = len(match["indent"])
        lines = match["body"].splitlines(keepends=True)
        body = "".join(line[indent:] if line.strip() else "\n" for line in lines)
        first = body.split("\n", 1)[0]
        name = first.removeprefix("# ").strip()
        if first.startswith("# ") and " " not in name and ("/" in name or "." in name):
            files[name] = body
    return files
