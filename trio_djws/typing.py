"""Types shared across trio_djws: ASGI events (one TypedDict per event, as Hypercorn's
``typing.py`` has them), the transport Protocol and JSON values."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Literal, NotRequired, Protocol, TypeAlias, TypedDict

__all__ = [
    "ASGIApp",
    "ASGIEvent",
    "ASGIReceive",
    "ASGISend",
    "HTTPScope",
    "JSONValue",
    "LifespanScope",
    "Message",
    "Scope",
    "Transport",
    "WebSocketScope",
]

JSONValue: TypeAlias = Any
"""Anything Django's DjangoJSONEncoder can encode."""

Message: TypeAlias = str | bytes
"""One WebSocket message: text frames are ``str``, binary frames ``bytes``, end to end."""


class WebSocketScope(TypedDict):
    type: Literal["websocket"]
    asgi: dict[str, str]
    http_version: str
    scheme: str
    path: str
    raw_path: bytes
    query_string: bytes
    root_path: str
    headers: Iterable[tuple[bytes, bytes]]
    client: tuple[str, int] | None
    server: tuple[str, int | None] | None
    subprotocols: Iterable[str]
    extensions: NotRequired[dict[str, dict[object, object]]]
    state: NotRequired[dict[str, object]]


class HTTPScope(TypedDict):
    type: Literal["http"]
    asgi: dict[str, str]
    http_version: str
    method: str
    scheme: str
    path: str
    raw_path: bytes
    query_string: bytes
    root_path: str
    headers: Iterable[tuple[bytes, bytes]]
    client: tuple[str, int] | None
    server: tuple[str, int | None] | None
    extensions: NotRequired[dict[str, dict[object, object]]]
    state: NotRequired[dict[str, object]]


class LifespanScope(TypedDict):
    type: Literal["lifespan"]
    asgi: dict[str, str]
    state: NotRequired[dict[str, object]]


Scope: TypeAlias = WebSocketScope | HTTPScope | LifespanScope
# ASGI events are plain dicts on the wire, typed loosely on purpose so that any ASGI server's
# receive/send fit. Each event's keys follow the ASGI spec (3.0, websocket 2.3).
ASGIEvent: TypeAlias = dict[str, JSONValue]
ASGIReceive: TypeAlias = Callable[[], Awaitable[ASGIEvent]]
ASGISend: TypeAlias = Callable[[ASGIEvent], Awaitable[None]]
ASGIApp: TypeAlias = Callable[[Scope, ASGIReceive, ASGISend], Awaitable[None]]


class Transport(Protocol):
    """The connection model's view of one WebSocket transport (ASGI, a standalone engine, or
    the in-memory test client). Every handler, mixin, group and close-code rule is written
    against this Protocol only.

    A transport may also have ``send_nowait(message) -> None``: write the message now without
    waiting, or raise ``trio.WouldBlock`` (then it goes through the send queue to ``send``, as
    on every transport). The standalone ``websockets`` engine has it; ``trio_djws._runtime``
    uses it only while the connection's writer waits on an empty queue, so order is kept.

    A transport may also have ``close_code_known = False``: its server reports every client
    close as 1006, so that code says only that the client left (Hypercorn's ASGI; the close
    log line then reads "client closed (code unknown)").
    """

    async def accept(self, subprotocol: str | None) -> None:
        """Complete the handshake (HTTP 101), with the chosen subprotocol if any."""

    async def reject(self, status: int) -> None:
        """Refuse the handshake with an HTTP status; nothing was accepted."""

    async def receive(self) -> Message:
        """Wait for the next complete message.

        Raises:
            ConnectionClosed: the peer closed or vanished; ``code`` is its close code
                (on Hypercorn always 1006: upstream issue 127).
        """

    async def send(self, message: Message) -> None:
        """Write one message; after the peer is gone this may return without writing.

        Cancelled part way through the frame (``abort()``), the transport either keeps the
        frame's rest for its next write, so that ``close`` can still send the close frame
        after it (the engines), or never writes again on that connection.

        Raises:
            ConnectionClosed: the peer is gone.
            SlowConsumer: (a ``ConnectionClosed``) the transport's write deadline passed
                (the engines: no data taken for WEBSOCKET_SEND_TIMEOUT seconds); the close
                frame can still be sent: the connection closes with 1008 "slow consumer".
        """

    async def close(self, code: int, reason: str) -> None:
        """Send the close frame (RFC 6455 §5.5.1) and end the transport."""
