"""Shared fixtures: real servers on ephemeral ports, and a per-test deadline.

``ws_url`` is parametrised over every transport (``TRANSPORTS``): the ASGI app on Hypercorn's
trio worker, and the standalone server (``trio_djws.servers.standalone``) on each protocol
engine, so the connection-model tests run on all of them and cannot drift apart. Tests of
Hypercorn-only behaviour use ``hypercorn_ws_url``.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from hypercorn.typing import ASGIFramework
from trio_websocket import ConnectionRejected, open_websocket_url

from tests.redis_server import redis_server  # noqa: F401  (a fixture for every test module)
from trio_djws.asgi import get_asgi_application
from trio_djws.conf import ENGINES, get_settings
from trio_djws.servers import hypercorn as hypercorn_driver
from trio_djws.servers.sockets import open_sockets
from trio_djws.servers.standalone import serve as serve_standalone

TEST_DEADLINE = 60.0  # seconds; a hang fails the test instead of freezing CI
# "hypercorn": the ASGI app on plain Hypercorn; "serve": manage.py serve's listener (upgrades
# on the websockets engine, the rest on Hypercorn); else a standalone engine.
TRANSPORTS = ["hypercorn", "serve", *ENGINES]


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


@asynccontextmanager
async def open_hypercorn(app: ASGIFramework) -> AsyncIterator[str]:
    """Serve ``app`` with ``hypercorn.trio.serve`` on 127.0.0.1:0 in a nursery of its own;
    yields ``host:port``. On the way out, Hypercorn shuts down (graceful_timeout 1 s)."""
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(
            partial(serve, app, hypercorn_config(), shutdown_trigger=shutdown.wait)
        )
        try:
            yield binds[0].removeprefix("http://")
        finally:
            shutdown.set()


async def rejected_status(
    url: str, extra_headers: list[tuple[bytes, bytes]] | list[tuple[str, str]] | None = None
) -> int:
    """The HTTP status a server answers the WebSocket handshake for ``url`` with; fails the
    test if the handshake is accepted."""
    with pytest.raises(ConnectionRejected) as info:
        async with open_websocket_url(url, extra_headers=extra_headers):
            pass
    return info.value.status_code


async def start_hypercorn(nursery: trio.Nursery) -> tuple[str, trio.Event]:
    """Serve the ASGI app with ``hypercorn.trio.serve`` on 127.0.0.1:0 in ``nursery``;
    returns ``host:port`` and the event that shuts it down."""
    shutdown = trio.Event()
    binds = await nursery.start(
        partial(serve, get_asgi_application(), hypercorn_config(), shutdown_trigger=shutdown.wait)
    )
    return binds[0].removeprefix("http://"), shutdown


async def start_serve(
    nursery: trio.Nursery,
    *,
    app: ASGIFramework | None = None,
    keep_alive_timeout: float | None = None,
) -> tuple[str, trio.Event]:
    """Run ``manage.py serve``'s server (``trio_djws.servers.hypercorn.serve``: the
    listener, Hypercorn and the websockets engine) on 127.0.0.1:0 in ``nursery``; returns
    ``host:port`` and the event that shuts it down (drain, then 1001). ``app``: another ASGI
    application than trio-djws's; ``keep_alive_timeout``: Hypercorn's setting, in seconds."""
    shutdown = trio.Event()
    config = hypercorn_driver.make_config()
    config.accesslog = None
    if keep_alive_timeout is not None:
        config.keep_alive_timeout = keep_alive_timeout
    sockets = open_sockets([("127.0.0.1", 0)])
    urls = await nursery.start(
        partial(
            hypercorn_driver.serve,
            app or get_asgi_application(),
            config,
            sockets,
            shutdown_trigger=shutdown.wait,
        )
    )
    return urls[0].removeprefix("http://"), shutdown


async def start_transport(nursery: trio.Nursery, transport: str) -> str:
    """``host:port`` of a live server on ``transport`` (one of ``TRANSPORTS``), running in
    ``nursery`` until it is cancelled."""
    if transport == "hypercorn":
        return (await start_hypercorn(nursery))[0]
    if transport == "serve":
        return (await start_serve(nursery))[0]
    return await start_standalone(nursery, transport)


@pytest.fixture
async def hypercorn_server(nursery: trio.Nursery) -> AsyncIterator[str]:
    """Serve the ASGI app with ``hypercorn.trio.serve`` on 127.0.0.1:0; yields ``host:port``."""
    address, shutdown = await start_hypercorn(nursery)
    yield address
    shutdown.set()


@pytest.fixture
def hypercorn_ws_url(hypercorn_server: str) -> str:
    """``ws://127.0.0.1:PORT`` of the live Hypercorn server (Hypercorn-only behaviour)."""
    return f"ws://{hypercorn_server}"


async def start_standalone(nursery: trio.Nursery, engine: str) -> str:
    """Start ``trio_djws.servers.standalone.serve`` on 127.0.0.1:0 with ``engine``; returns
    ``host:port``. It stops (drain, then 1001) when ``nursery`` is cancelled."""
    addresses = await nursery.start(partial(serve_standalone, "127.0.0.1", 0, engine=engine))
    host, port = addresses[0]
    return f"{host}:{port}"


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    """The transport under test: ``"hypercorn"`` or a ``WEBSOCKET_ENGINE`` value."""
    return str(request.param)


@pytest.fixture
async def server_address(transport: str, nursery: trio.Nursery) -> AsyncIterator[str]:
    """``host:port`` of a live server on ``transport``."""
    if transport == "hypercorn":
        address, shutdown = await start_hypercorn(nursery)
        yield address
        shutdown.set()
    elif transport == "serve":
        address, shutdown = await start_serve(nursery)
        yield address
        shutdown.set()
    else:
        yield await start_standalone(nursery, transport)


@pytest.fixture
def ws_url(server_address: str) -> str:
    """``ws://127.0.0.1:PORT`` of the live server, once per transport."""
    return f"ws://{server_address}"
