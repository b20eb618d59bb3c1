"""A fresh ``django-admin startproject`` site in a temporary directory, set up by the
documented steps, for tests that run a user's commands in subprocesses."""

from __future__ import annotations

import os
import pathlib
import re
import signal
import subprocess
import sys
import threading
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

    A thread reads the output as it comes (a full pipe would block the server's logging);
    ``expect(pattern)`` waits, up to ``timeout`` seconds, for an output line matching the
    regular expression and returns the match: servers are awaited by what they print, never
    by sleeping. Leaving the ``with`` block stops the process (SIGINT, then SIGKILL).
    """

    def __init__(self, site: pathlib.Path, *args: str, **env: str) -> None:
        self.args = args
        self.output: list[str] = []  # every line read so far
        self._read = 0  # lines of output already offered to expect()
        self._changed = threading.Condition()
        self._ended = False
        self.proc = subprocess.Popen(
            [sys.executable, *args],
            cwd=site,
            env=site_env(**env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # SIGINT reaches the whole group (runserver's child)
        )
        self._reader = threading.Thread(target=self._read_output, daemon=True)
        self._reader.start()

    def __enter__(self) -> Process:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _read_output(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            with self._changed:
                self.output.append(raw.decode(errors="replace").rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    def _lines(self, deadline: float) -> Iterator[str]:
        # The lines not offered yet, as they come; EOFError once the output ended.
        while True:
            with self._changed:
                while self._read == len(self.output) and not self._ended:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise TimeoutError(f"{self.args}: timed out; output so far:\n{self.text}")
                    self._changed.wait(remaining)
                if self._read == len(self.output):
                    raise EOFError(
                        f"{self.args}: exited ({self.proc.wait()}); output:\n{self.text}"
                    )
                line = self.output[self._read]
                self._read += 1
            yield line

    def expect(
        self, pattern: str, timeout: float = 60.0, *, since: int | None = None
    ) -> re.Match[str]:
        """The first output line matching ``pattern``, read from now on, or from output line
        ``since`` on (lines already read included) when given."""
        regex = re.compile(pattern)
        if since is not None:
            with self._changed:
                seen = self.output[since : self._read]
            for line in seen:
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
        status = self.proc.wait(timeout=timeout)
        self._reader.join(timeout)
        return status

    def interrupt(self) -> None:
        """Ctrl-C: SIGINT to the process group."""
        os.killpg(self.proc.pid, signal.SIGINT)

    @property
    def text(self) -> str:
        with self._changed:
            return "\n".join(self.output)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        try:  # a reloader's child may outlive its parent
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._reader.join(15)
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
