"""Structured log context (trio_djws/log.py): every record logged about a connection, on its
task or in its worker threads, carries the connection id, path, namespace, peer address and
user id as attributes, and a JSON formatter gets them as fields."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
from pythonjsonlogger.json import JsonFormatter

from tests.test_mixins import login
from trio_djws import BaseWSClass, Namespace
from trio_djws.asgi import get_asgi_application
from trio_djws.log import ConnectionContextFilter
from trio_djws.mixins import DjangoMiddlewareMixin
from trio_djws.testing import WebSocketTestClient
from trio_djws.typing import ASGIApp, Message
from trio_djws.websocket import WebSocket

pytestmark = pytest.mark.django_db(transaction=True)  # sessions and users from worker threads

FIELDS = (
    "websocket_id",
    "websocket_path",
    "websocket_namespace",
    "websocket_client",
    "websocket_user_id",
)


@Namespace("/log/in-thread/<str:name>/")
class LogsInThread(DjangoMiddlewareMixin, BaseWSClass):
    def on_message(self, websocket: WebSocket, message: Message) -> None:  # type: ignore[override]  # a plain def hook
        logging.getLogger("trio_djws.tests").info("from a worker thread")
        websocket.sync.send("logged")


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.app: ASGIApp | None = None
        self.addFilter(ConnectionContextFilter())

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def records() -> Iterator[Records]:
    # get_asgi_application() runs django.setup(), whose LOGGING replaces our handler: first.
    app = get_asgi_application()
    handler = Records()
    handler.app = app
    logger = logging.getLogger("trio_djws")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


async def test_records_carry_the_connection_namespace_client_and_user(records: Records) -> None:
    cookie = await login("ada")
    assert records.app is not None
    headers = [("cookie", cookie)]
    async with WebSocketTestClient(records.app, "/log/in-thread/a/", headers=headers) as client:
        await client.send("go")
        assert await client.receive() == "logged"
    (in_thread,) = [r for r in records.records if r.getMessage() == "from a worker thread"]
    (closed,) = [r for r in records.records if r.getMessage().startswith("closed ")]
    for record in (in_thread, closed):
        assert record.websocket_path == "/log/in-thread/a/"
        assert record.websocket_namespace == "/log/in-thread/<str:name>/"
        assert record.websocket_client != "-"
        assert len(record.websocket_id) == 32
        assert record.websocket_user_id.isdigit()  # the user's pk, not "-"
    assert in_thread.websocket_id == closed.websocket_id


async def test_an_anonymous_connection_has_no_user_id_and_json_gets_every_field(
    records: Records,
) -> None:
    assert records.app is not None
    async with WebSocketTestClient(records.app, "/log/in-thread/b/") as client:
        await client.send("go")
        assert await client.receive() == "logged"
    (record,) = [r for r in records.records if r.getMessage() == "from a worker thread"]
    assert record.websocket_user_id == "-"
    formatter = JsonFormatter(" ".join(f"%({name})s" for name in ("message", *FIELDS)))
    data = json.loads(formatter.format(record))
    assert data["message"] == "from a worker thread"
    assert data["websocket_namespace"] == "/log/in-thread/<str:name>/"
    assert set(FIELDS) <= set(data)


def test_records_outside_a_connection_get_dashes() -> None:
    record = logging.LogRecord("trio_djws", logging.INFO, __file__, 1, "outside", (), None)
    assert ConnectionContextFilter().filter(record)
    assert all(getattr(record, name) == "-" for name in FIELDS)
