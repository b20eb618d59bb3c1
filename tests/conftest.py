"""Shared fixtures: a real Hypercorn trio server on an ephemeral port, and a per-test deadline."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from functools import partial

import pytest
import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from tests.redis_server import redis_server  # noqa: F401  (a fixture for every test module)
from trio_djws.asgi import get_asgi_application
from trio_djws.conf import get_settings

TEST_DEADLINE = 60.0  # seconds; a hang fails the test instead of freezing CI


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Give every async (trio) test the ``_deadline`` fixture."""
    for item in items:
        function = getattr(item, "function", None)
        if inspect.iscoroutinefunction(function) and isinstance(item, pytest.Function):
            item.fixturenames.append("_deadline")


@pytest.fixture
async def _deadline(nursery: trio.Nursery) -> None:
    """Fail any trio test (live sockets included) that runs past TEST_DEADLINE seconds."""

    async def watchdog() -> None:
        await trio.sleep(TEST_DEADLINE)
        raise trio.TooSlowError(f"test still running after {TEST_DEADLINE} s")

    nursery.start_soon(watchdog)


@pytest.fixture(scope="session")
def django_db_modify_db_settings(
    django_db_modify_db_settings_parallel_suffix: None, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Put the SQLite test database in a file. Django never closes a connection to an
    in-memory SQLite database (closing would destroy it), so worker threads that ran views
    (trio_djws.views) or ORM calls would keep theirs open into later tests that may not touch
    the database; a file database is closed by request_finished like any other."""
    from django.conf import settings

    database = settings.DATABASES["default"]
    if database["ENGINE"] == "django.db.backends.sqlite3" and database["NAME"] == ":memory:":
        path = tmp_path_factory.mktemp("tests-db") / "test.sqlite3"
        database.setdefault("TEST", {})["NAME"] = str(path)


def hypercorn_config() -> Config:
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.websocket_max_message_size = get_settings().max_message_size
    config.graceful_timeout = 1
    config.accesslog = None
    return config


@pytest.fixture
async def hypercorn_server(nursery: trio.Nursery) -> AsyncIterator[str]:
    """Serve the ASGI app with ``hypercorn.trio.serve`` on 127.0.0.1:0; yields ``host:port``."""
    app = get_asgi_application()
    shutdown = trio.Event()
    binds = await nursery.start(
        partial(serve, app, hypercorn_config(), shutdown_trigger=shutdown.wait)
    )
    yield binds[0].removeprefix("http://")
    shutdown.set()


@pytest.fixture
def ws_url(hypercorn_server: str) -> str:
    """``ws://127.0.0.1:PORT`` of the live server."""
    return f"ws://{hypercorn_server}"
