"""A chat message's trace (trio_djws.tracing with the OpenTelemetry SDK's in-memory exporter):
the ``websocket.on_message`` span of the chat handler, with the INSERT that saves the message
nested under it, made in a worker thread and traced by opentelemetry-instrumentation-dbapi on
the driver the run uses (SQLite or PostgreSQL)."""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterator

import pytest
import trio
from chat.models import Room
from django.db import connection
from opentelemetry.instrumentation import dbapi
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from trio_djws import instrument
from trio_djws.asgi import get_asgi_application
from trio_djws.testing import WebSocketTestClient
from trio_djws.tracing import enable

pytestmark = pytest.mark.django_db(transaction=True)  # the handler's ORM runs in threads

TIMEOUT = 30.0  # seconds


@pytest.fixture
def exporter(transactional_db: None) -> Iterator[InMemorySpanExporter]:
    Room.objects.get_or_create(slug="lobby", defaults={"name": "Lobby"})
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentation = enable(provider)
    # The module whose connect() Django's backend calls (each worker-thread call connects).
    driver = importlib.import_module(connection.Database.__name__)
    dbapi.trace_integration(driver, "connect", connection.vendor, tracer_provider=provider)
    connection.close()  # this thread's next query connects through the traced connect()
    try:
        yield exporter
    finally:
        dbapi.unwrap_connect(driver, "connect")
        instrument.unregister(instrumentation)
        connection.close()


def parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


async def test_a_chat_messages_insert_nests_under_its_on_message_span(
    exporter: InMemorySpanExporter,
) -> None:
    with trio.fail_after(TIMEOUT):
        async with WebSocketTestClient(
            get_asgi_application(), "/ws/chat/lobby/", query_string="nick=ada"
        ) as client:
            while (await client.receive_json())["type"] != "history":
                pass
            await client.send(json.dumps({"type": "message", "text": "traced"}))
            while (frame := await client.receive_json())["type"] != "message":
                pass
            assert frame["text"] == "traced"
    spans = exporter.get_finished_spans()
    (connection_span,) = [s for s in spans if s.name == "websocket.connection"]
    assert connection_span.attributes is not None
    assert connection_span.attributes["websocket.namespace"] == "/ws/chat/<slug:room>/"
    on_message = [s for s in spans if s.name == "websocket.on_message"]
    assert len(on_message) == 1 and parent_id(on_message[0]) == connection_span.context.span_id
    under = [s for s in spans if parent_id(s) == on_message[0].context.span_id]
    statements = [str((s.attributes or {}).get("db.statement", s.name)) for s in under]
    assert any(text.upper().startswith("INSERT") for text in statements), statements
