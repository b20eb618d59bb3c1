"""The chatroom example's suite: ``examples/chatroom`` under ``--ds=chatroom.settings``.

pytest-django configures one settings module per process, so this directory is collected only
when the chatroom's settings are active; ``nox -s tests`` runs it in its own pytest runs, once
on SQLite and once on PostgreSQL (``DATABASE_URL``)::

    pytest --ds=chatroom.settings -o "pythonpath=. examples/chatroom" tests/chatroom

Under the library's ``tests.settings`` (a bare ``pytest``) nothing here is collected.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Final

import pytest
import trio
from django.conf import settings

CHATROOM_DIR = Path(__file__).resolve().parents[2] / "examples" / "chatroom"
MIGRATE_TIMEOUT: Final = 30.0  # seconds

if not (settings.configured and "chat" in settings.INSTALLED_APPS):
    collect_ignore_glob = ["test_*.py"]


@pytest.fixture(scope="session")
def django_db_modify_db_settings(
    django_db_modify_db_settings_parallel_suffix: None, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Put the SQLite test database in a file: worker threads each open their own
    connection, and Django's default in-memory test database (shared cache) answers
    concurrent writers with "database table is locked" instead of waiting."""
    database = settings.DATABASES["default"]
    if database["ENGINE"] == "django.db.backends.sqlite3":
        path = tmp_path_factory.mktemp("chatroom-db") / "test.sqlite3"
        database.setdefault("TEST", {})["NAME"] = str(path)


@pytest.fixture
async def chatroom_env(tmp_path: Path) -> dict[str, str]:
    """A chatroom server subprocess's environment: a fresh, migrated SQLite database in
    ``tmp_path`` (the browser tests)."""
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'chat.sqlite3'}",
        "DJANGO_SETTINGS_MODULE": "chatroom.settings",
        "DJANGO_DEBUG": "0",
        "PYTHONUNBUFFERED": "1",
    }
    with trio.fail_after(MIGRATE_TIMEOUT):
        await trio.run_process(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v0"],
            cwd=CHATROOM_DIR,
            env=env,
        )
    return env
