"""OpenTelemetry spans per hook call (trio_djws/tracing.py), recorded with the SDK's
in-memory exporter; the ORM query a plain ``def`` hook makes in its worker thread is traced
by opentelemetry-instrumentation-dbapi and nests under the hook's span."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

import pytest
from opentelemetry.instrumentation import dbapi
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import tests.handlers  # noqa: F401  (registers /orm-in-thread/, /fail/, /reject/)
from trio_djws import instrument
from trio_djws.asgi import get_asgi_application
from trio_djws.testing import HandshakeRejected, WebSocketTestClient
from trio_djws.tracing import enable


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentation = enable(provider)
    # Django's SQLite backend connects through sqlite3.dbapi2.connect.
    dbapi.trace_integration(sqlite3.dbapi2, "connect", "sqlite", tracer_provider=provider)
    try:
        yield exporter
    finally:
        dbapi.unwrap_connect(sqlite3.dbapi2, "connect")
        instrument.unregister(instrumentation)


def named(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [span for span in spans if span.name == name]


def parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


@pytest.mark.django_db(transaction=True)
async def test_orm_query_in_the_worker_thread_nests_under_the_on_message_span(
    exporter: InMemorySpanExporter,
) -> None:
    app = get_asgi_application()
    async with WebSocketTestClient(app, "/orm-in-thread/") as client:
        await client.send("count users")
        assert await client.receive() == "0"
    spans = exporter.get_finished_spans()
    (connection,) = named(spans, "websocket.connection")
    (on_connect,) = named(spans, "websocket.on_connect")
    (on_message,) = named(spans, "websocket.on_message")
    (on_close,) = named(spans, "websocket.on_close")
    assert connection.kind is SpanKind.SERVER
    assert connection.attributes is not None
    assert connection.attributes["websocket.namespace"] == "/orm-in-thread/"
    assert connection.attributes["websocket.close_code"] == 1000
    connection_id = connection.attributes["websocket.connection_id"]
    assert isinstance(connection_id, str) and len(connection_id) == 32
    for hook in (on_connect, on_message, on_close):
        assert parent_id(hook) == connection.context.span_id
        assert hook.context.trace_id == connection.context.trace_id
        assert hook.attributes is not None
        assert hook.attributes["websocket.connection_id"] == connection_id
    assert on_message.attributes is not None
    assert on_message.attributes["websocket.message.size"] == len("count users")
    assert on_close.attributes is not None
    assert on_close.attributes["websocket.close_code"] == 1000
    # The query ran in a worker thread (a plain def hook) and is a child of the hook's span.
    queries = [s for s in spans if s.attributes and s.attributes.get("db.system") == "sqlite"]
    assert queries, [span.name for span in spans]
    under_hook = [s for s in queries if parent_id(s) == on_message.context.span_id]
    assert any("SELECT COUNT" in s.name.upper() or "SELECT" in s.name.upper() for s in under_hook)


async def test_a_failing_hook_span_records_the_error_and_a_refusal_is_marked(
    exporter: InMemorySpanExporter,
) -> None:
    app = get_asgi_application()
    async with WebSocketTestClient(app, "/fail/") as client:
        await client.send("boom")
        with pytest.raises(Exception, match="1011"):
            await client.receive()
    with pytest.raises(HandshakeRejected):
        async with WebSocketTestClient(app, "/reject/"):
            pass
    spans = exporter.get_finished_spans()
    (failed,) = named(spans, "websocket.on_message")
    assert failed.status.status_code is StatusCode.ERROR
    assert any(event.name == "exception" for event in failed.events)
    connections = named(spans, "websocket.connection")
    codes = sorted((span.attributes or {}).get("websocket.close_code", 0) for span in connections)
    assert codes == [0, 1011]
    (refused,) = [s for s in connections if (s.attributes or {}).get("websocket.refused")]
    assert (refused.attributes or {})["websocket.namespace"] == "/reject/"
