"""Every command a developer runs: ``nox -s tests``, ``nox -s lint``, ``nox -s chatroom``."""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_existing_virtualenvs = True

CHATROOM = "examples/chatroom"


@nox.session
def tests(session: nox.Session) -> None:
    """The whole test suite (needs redis-server and Chromium: see README)."""
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check, ruff format --check, mypy (strict on trio_djws/)."""
    session.install("-e", ".[test,lint]")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy")


@nox.session
def chatroom(session: nox.Session) -> None:
    """Run the chatroom on http://127.0.0.1:8000 (``-- --bind HOST:PORT`` to change)."""
    session.install("-e", ".", "-r", f"{CHATROOM}/requirements.txt")
    session.chdir(CHATROOM)
    session.run("python", "manage.py", "migrate", "--noinput")
    args = session.posargs or ["--bind", "127.0.0.1:8000"]
    session.run("python", "manage.py", "serve", *args)
