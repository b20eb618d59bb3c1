"""pytest plugin of trio-djws: fixtures for testing a project's WebSocket handlers.

Installed with trio-djws (the ``pytest11`` entry point ``trio_djws``), so it is active in every
pytest run of an environment that has trio-djws; ``-p no:trio_djws`` turns it off. Loading it
imports neither Django nor trio nor pytest-trio: a project's unrelated tests never pay for it
or break on it. The fixtures import them when a test uses one.

Fixtures (they need pytest-django's settings, ``DJANGO_SETTINGS_MODULE``, and pytest-trio for
the async ones; ``trio_mode = true`` in the pytest configuration runs every ``async def`` test
under trio):

- ``websocket_app``: the project's ASGI application (``trio_djws.asgi.get_asgi_application()``).
- ``websocket_client``: ``websocket_client(path, **options)`` opens an in-memory
  ``trio_djws.testing.WebSocketTestClient`` on that path: no socket, no thread.
- ``websocket_live_server``: the project served on ``127.0.0.1`` on an ephemeral port, in the
  test's trio run, as ``manage.py serve`` serves it; ``.url`` is ``http://127.0.0.1:PORT``,
  ``.ws_url`` is ``ws://127.0.0.1:PORT``. Async: needs pytest-trio.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from trio_djws.testing import LiveServer, WebSocketTestClient
    from trio_djws.typing import ASGIApp

__all__ = ["websocket_app", "websocket_client", "websocket_live_server"]

_SETUP_HINT = (
    "trio-djws' fixtures need Django settings: install pytest-django and set "
    "DJANGO_SETTINGS_MODULE (e.g. 'DJANGO_SETTINGS_MODULE = mysite.settings' under [pytest] "
    "in pytest.ini)."
)


def _require_settings() -> None:
    from django.conf import settings

    if not (settings.configured or os.environ.get("DJANGO_SETTINGS_MODULE")):
        pytest.fail(_SETUP_HINT, pytrace=False)


@pytest.fixture
def websocket_app() -> ASGIApp:
    """The project's ASGI application: ``trio_djws.asgi.get_asgi_application()``."""
    _require_settings()
    from trio_djws.asgi import get_asgi_application

    return get_asgi_application()


@pytest.fixture
def websocket_client(websocket_app: ASGIApp) -> Callable[..., WebSocketTestClient]:
    """A factory: ``async with websocket_client("/echo/") as client:`` connects in memory.

    Keyword options are ``WebSocketTestClient``'s (``query_string``, ``headers``,
    ``subprotocols``, ``receive_buffer``). Entering raises
    ``trio_djws.testing.HandshakeRejected`` (with ``.status``) if the handler refuses.
    """
    from trio_djws.testing import WebSocketTestClient

    def connect(path: str, **options: Any) -> WebSocketTestClient:
        return WebSocketTestClient(websocket_app, path, **options)

    return connect


@pytest.fixture
async def websocket_live_server() -> AsyncIterator[LiveServer]:
    """The project served on ``127.0.0.1:<ephemeral port>`` for the test (pytest-trio).

    Runs ``trio_djws.testing.open_live_server()`` in the test's trio run; the server stops
    (closing WebSockets with 1001) when the test ends. ORM calls of handlers and views run in
    worker threads: mark the test ``@pytest.mark.django_db(transaction=True)`` to let them see
    the test database.
    """
    _require_settings()
    from trio_djws.testing import open_live_server

    async with open_live_server() as server:
        yield server
