"""OpenTelemetry spans per hook call (the ``trio-djws[tracing]`` extra: ``opentelemetry-api``).

``enable()`` registers ``OpenTelemetryInstrumentation`` with ``trio_djws.instrument``;
``AppConfig.ready()`` calls it when ``WEBSOCKET_TRACING`` is True. Configure the SDK and an
exporter yourself (``opentelemetry-sdk``, OTLP...), as for any OpenTelemetry library: without
an SDK the API's no-op tracer makes every span free.

Spans (every transport alike, from ``serve_connection``):

- ``websocket.connection`` (kind SERVER): from the routed handshake to the end of the
  connection; attributes ``websocket.namespace`` (the registered pattern),
  ``websocket.connection_id``, ``client.address``, and at the end ``websocket.close_code``
  (absent if the handshake was refused) and ``websocket.close_reason``;
- children ``websocket.on_connect``, ``websocket.on_message`` (plus
  ``websocket.message.size`` in bytes) and ``websocket.on_close`` (plus
  ``websocket.close_code``), one per hook call, mixins included; an exception marks the
  span as an error and is recorded on it.

The hook span is the current span while the hook runs, and trio copies the context into
tasks the hook starts and into worker threads (``database_sync_to_thread``, plain ``def``
hooks), so spans made there (Django DB instrumentation, ``requests``...) nest under it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, TypeVar

from opentelemetry import context, trace

from . import instrument
from .instrument import ConnectionProbe, Instrumentation, message_size

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

__all__ = ["TRACER_NAME", "OpenTelemetryInstrumentation", "enable"]

TRACER_NAME: Final = "trio_djws"

Hook = TypeVar("Hook", bound="Callable[..., Awaitable[Any]]")


class _SpanProbe(ConnectionProbe):
    __slots__ = ("attributes", "client", "namespace", "span", "token", "tracer")

    def __init__(self, tracer: trace.Tracer, namespace: str, client: str) -> None:
        self.tracer = tracer
        self.namespace = namespace
        self.client = client
        self.span: trace.Span | None = None
        self.token: object = None
        self.attributes: dict[str, str] = {"websocket.namespace": namespace}

    def begin(self, connection_id: str) -> None:
        self.attributes["websocket.connection_id"] = connection_id
        self.span = self.tracer.start_span(
            "websocket.connection",
            kind=trace.SpanKind.SERVER,
            attributes={**self.attributes, "client.address": self.client},
        )
        # The connection's task: its hooks (and what they start) see this span as parent.
        self.token = context.attach(trace.set_span_in_context(self.span))

    def wrap_hook(self, name: str, hook: Hook) -> Hook:
        tracer = self.tracer
        span_name = f"websocket.{name}"
        attributes = self.attributes

        async def traced(*args: Any) -> Any:
            with tracer.start_as_current_span(span_name, attributes=attributes) as span:
                if name == "on_message":
                    span.set_attribute("websocket.message.size", message_size(args[1]))
                try:
                    return await hook(*args)
                finally:
                    code = getattr(args[0], "close_code", None)
                    if name == "on_close" and code is not None:
                        span.set_attribute("websocket.close_code", code)

        return traced  # type: ignore[return-value]  # same signature as hook

    def accepted(self) -> None:
        if self.span is not None:
            self.span.add_event("accepted")

    def closed(self, accepted: bool, code: int | None, reason: str) -> None:
        span = self.span
        if span is None:
            return
        if accepted and code is not None:
            span.set_attribute("websocket.close_code", code)
            span.set_attribute("websocket.close_reason", reason)
        elif not accepted:
            span.set_attribute("websocket.refused", True)
        span.end()
        if self.token is not None:
            context.detach(self.token)  # type: ignore[arg-type]  # the token attach() gave
            self.token = None


class OpenTelemetryInstrumentation(Instrumentation):
    """One span per connection and per hook call (see the module docs).

    Args:
        tracer_provider: where spans go; default the global one
            (``opentelemetry.trace.set_tracer_provider``).
    """

    def __init__(self, tracer_provider: trace.TracerProvider | None = None) -> None:
        self.tracer = trace.get_tracer(TRACER_NAME, tracer_provider=tracer_provider)

    def open_connection(self, namespace: str, client: str) -> ConnectionProbe | None:
        return _SpanProbe(self.tracer, namespace, client)


_instrumentation: OpenTelemetryInstrumentation | None = None


def enable(tracer_provider: trace.TracerProvider | None = None) -> OpenTelemetryInstrumentation:
    """Register the tracing instrumentation: once per process with the global tracer
    provider; with ``tracer_provider`` (tests), a new one for it. Returns it."""
    global _instrumentation
    if tracer_provider is not None:
        made = OpenTelemetryInstrumentation(tracer_provider)
        instrument.register(made)
        return made
    if _instrumentation is None:
        _instrumentation = OpenTelemetryInstrumentation()
    instrument.register(_instrumentation)
    return _instrumentation
