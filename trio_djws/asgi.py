"""The ASGI 3 application: ``get_asgi_application()``.

- ``lifespan``: always answered (an app that returns from it crashes Hypercorn's trio
  ``serve()``); startup opens the server nursery (broker), shutdown drains and ends it.
- ``http``: Django's WSGI handler in worker threads (``trio_djws.wsgi_bridge``, this app's
  WSGI bridge).
- ``websocket``: routed to the ``@Namespace`` handler for the path (``trio_djws.connection``).

Django's own ``ASGIHandler`` and async ORM need asyncio and fail under trio, hence the WSGI
bridge. Runs under ``hypercorn --worker-class trio project.asgi:application`` and, with the
fixes listed in docs/explanation/transports.md, under ``manage.py serve``.

What this app does about Hypercorn's WebSocket layer (hypercorn 0.18, measured):

- A handshake followed by extra bytes before the accept (a stray byte, a pipelined frame):
  Hypercorn answers 400, marks its stream closed, drops every later ``send`` and never sends
  ``websocket.disconnect``. ``ASGITransport.accept`` notices that its accept was dropped and
  ends the connection, so the app returns and Hypercorn closes the socket.
- A server-side close while the client has more than ``max_app_queue_size`` (10) messages in
  flight: Hypercorn's reader blocks on its full app queue for good. After the connection ends,
  the app keeps receiving (and dropping) messages until ``websocket.disconnect``, for at most
  ``WEBSOCKET_CLOSE_TIMEOUT`` seconds, then empties the queue without waiting.
- An invalid ``Sec-WebSocket-Key`` (RFC 6455 §4.2.1: base64 of 16 bytes) is accepted by
  wsproto: the app answers it with HTTP 400.
"""

from __future__ import annotations

import logging
from typing import ClassVar

import django
import h11
import trio
from hypercorn.protocol.ws_stream import ASGIWebsocketState, WSStream
from wsproto.connection import ConnectionState
from wsproto.frame_protocol import CloseReason

from .conf import get_settings
from .connection import serve_websocket, valid_handshake_key
from .exceptions import ConnectionClosed
from .log import peer_warning
from .routing import autodiscover
from .state import open_server
from .typing import ASGIReceive, ASGISend, Message, Scope, WebSocketScope
from .wsgi_bridge import serve_http

__all__ = ["get_asgi_application"]

logger = logging.getLogger(__name__)

_REASONS = {
    400: b"Bad Request",
    403: b"Forbidden",
    500: b"Internal Server Error",
    503: b"Service Unavailable",
}


def _client(scope: WebSocketScope) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "an unknown client"


def _hypercorn_stream(send: ASGISend) -> WSStream | None:
    # Hypercorn hands the app its WSStream's bound ``app_send``: the stream whose state tells
    # what Hypercorn did with our events (it reports neither a dropped accept nor a protocol
    # error to the app). None under any other server.
    stream = getattr(send, "__self__", None)
    return stream if isinstance(stream, WSStream) else None


class ASGITransport:
    """The ``Transport`` of one ASGI ``websocket`` scope."""

    # One per connection: kept small.
    __slots__ = ("_accepted", "_close_sent", "_disconnected", "_receive", "_scope", "_send")

    # Hypercorn reports every client close as websocket.disconnect code 1006 (upstream issue
    # 127), so a 1006 from here says only that the client left.
    close_code_known: ClassVar[bool] = False

    def __init__(self, scope: WebSocketScope, receive: ASGIReceive, send: ASGISend) -> None:
        self._scope = scope
        self._receive = receive
        self._send = send
        self._accepted = False
        self._close_sent = False
        self._disconnected = False

    async def accept(self, subprotocol: str | None) -> None:
        """Send ``websocket.accept``.

        Raises:
            ConnectionClosed: 1006; Hypercorn had already answered the handshake with 400
                (extra bytes arrived before the accept) and dropped the accept, or failed on
                it (h11's ``LocalProtocolError``, Hypercorn issue 225). One WARNING line.
        """
        try:
            await self._send(
                {"type": "websocket.accept", "subprotocol": subprotocol, "headers": []}
            )
        except h11.LocalProtocolError as exc:
            # Hypercorn's stream is unusable: nothing more comes. Its reader fails on the same
            # packet (manage.py serve logs that as the peer's fault; plain Hypercorn's trio
            # worker dies of it: its issue 225), so this is only noted.
            self._disconnected = True
            logger.info(
                "handshake from %s for %r failed in Hypercorn (%s): the client sent data "
                "before the handshake was answered",
                _client(self._scope),
                self._scope["path"],
                exc,
            )
            raise ConnectionClosed(CloseReason.ABNORMAL_CLOSURE, "handshake failed") from None
        stream = _hypercorn_stream(self._send)
        if stream is not None and stream.closed and stream.state is ASGIWebsocketState.HANDSHAKE:
            # Hypercorn answered 400 and dropped the accept; no websocket.disconnect follows.
            self._disconnected = True
            peer_warning(
                logger,
                "handshake from %s for %r refused by Hypercorn with HTTP 400: the client sent "
                "data before the handshake was answered",
                _client(self._scope),
                self._scope["path"],
            )
            raise ConnectionClosed(CloseReason.ABNORMAL_CLOSURE, "handshake refused")
        self._accepted = True

    async def reject(self, status: int) -> None:
        # The "websocket.http.response" extension (ASGI spec 2.3) carries any status;
        # without it a close before the accept is the only refusal, which servers map to 403.
        if "websocket.http.response" in self._scope.get("extensions", {}):
            body = _REASONS.get(status, b"")
            await self._send(
                {
                    "type": "websocket.http.response.start",
                    "status": status,
                    "headers": [
                        (b"content-type", b"text/plain"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await self._send({"type": "websocket.http.response.body", "body": body})
        else:
            await self._send({"type": "websocket.close", "code": CloseReason.POLICY_VIOLATION})

    async def receive(self) -> Message:
        while True:
            event = await self._receive()
            kind = event["type"]
            if kind == "websocket.receive":
                text = event.get("text")
                if text is not None:
                    return str(text)
                data = event.get("bytes")
                return bytes(data) if data is not None else b""
            if kind == "websocket.disconnect":
                self._disconnected = True
                code = int(event.get("code", CloseReason.NO_STATUS_RCVD))
                if code == CloseReason.ABNORMAL_CLOSURE and not self._close_sent:
                    self._log_abnormal_end()
                raise ConnectionClosed(code, str(event.get("reason") or ""))

    def _log_abnormal_end(self) -> None:
        # Hypercorn reports every client close as 1006 (its issue 127); its wsproto connection
        # tells a completed closing handshake from an end without one: a protocol error
        # (Hypercorn drops the TCP connection without the 1002 close frame of RFC 6455 §7.1.7)
        # or a lost connection.
        stream = _hypercorn_stream(self._send)
        connection = getattr(stream, "connection", None)
        if connection is None or connection.state is ConnectionState.CLOSED:
            return
        peer_warning(
            logger,
            "WebSocket from %s on %r ended without a closing handshake: a protocol error by "
            "the client (Hypercorn closes without a close frame) or a lost connection",
            _client(self._scope),
            self._scope["path"],
        )

    async def send(self, message: Message) -> None:
        if isinstance(message, str):
            await self._send({"type": "websocket.send", "text": message})
        else:
            await self._send({"type": "websocket.send", "bytes": message})

    async def close(self, code: int, reason: str) -> None:
        self._close_sent = True
        await self._send({"type": "websocket.close", "code": code, "reason": reason})

    async def finish(self) -> None:
        """After the connection has ended: receive (and drop) messages until
        ``websocket.disconnect``, for at most ``WEBSOCKET_CLOSE_TIMEOUT`` seconds, then empty
        Hypercorn's app queue without waiting. Hypercorn's reader blocks on that queue (10
        messages, ``max_app_queue_size``) once it is full, and its own disconnect after the
        app returns would block on it too: the socket would never be closed. A checkpoint.
        """
        if not self._accepted or self._disconnected:
            return
        with trio.move_on_after(get_settings().close_timeout):
            while (await self._receive())["type"] != "websocket.disconnect":
                pass
            return
        # The peer never completed the closing handshake: free the queue so that Hypercorn's
        # disconnect (sent when the app returns) and its reader are not blocked on it.
        channel = getattr(self._receive, "__self__", None)
        if isinstance(channel, trio.MemoryReceiveChannel):
            try:
                while True:
                    channel.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                pass


class TrioDjwsApplication:
    """The ASGI 3 callable; build it with ``get_asgi_application()``."""

    async def __call__(self, scope: Scope, receive: ASGIReceive, send: ASGISend) -> None:
        if scope["type"] == "websocket":
            event = await receive()
            if event["type"] != "websocket.connect":
                return
            transport = ASGITransport(scope, receive, send)
            if not valid_handshake_key(scope):
                peer_warning(
                    logger,
                    "rejected handshake from %s for %r with 400: invalid Sec-WebSocket-Key "
                    "(RFC 6455 §4.2.1: base64 of 16 bytes)",
                    _client(scope),
                    scope["path"],
                )
                await transport.reject(400)
                return
            await serve_websocket(transport, scope)
            await transport.finish()
        elif scope["type"] == "http":
            await serve_http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        else:
            raise ValueError(
                f"unknown ASGI scope type {scope['type']!r}; expected http, websocket or lifespan"
            )

    async def _lifespan(self, receive: ASGIReceive, send: ASGISend) -> None:
        # Always answered: an app that returns from the lifespan scope crashes Hypercorn's
        # trio serve(). Startup opens the server nursery; shutdown drains and closes it.
        event = await receive()
        if event["type"] != "lifespan.startup":
            return
        started = False
        try:
            async with open_server():
                await send({"type": "lifespan.startup.complete"})
                started = True
                while (await receive())["type"] != "lifespan.shutdown":
                    pass
        except Exception as exc:
            logger.exception("lifespan %s failed", "shutdown" if started else "startup")
            failed = "lifespan.shutdown.failed" if started else "lifespan.startup.failed"
            await send({"type": failed, "message": f"{type(exc).__name__}: {exc}"})
            return
        await send({"type": "lifespan.shutdown.complete"})


def get_asgi_application() -> TrioDjwsApplication:
    """Set Django up, register the handlers and return the ASGI 3 application.

    Imports every installed app's ``websockets`` module and the modules in
    ``WEBSOCKET_HANDLERS`` (so handlers register), as Django's ``get_asgi_application``
    calls ``django.setup()``.

    Raises:
        ImportError: a handler module failed to import (also reported by ``manage.py check``).
        ConfigurationError: ``"trio_djws"`` is not in ``INSTALLED_APPS`` (an
            ``ImproperlyConfigured``).
    """
    django.setup(set_prefix=False)
    autodiscover()  # checks that "trio_djws" is in INSTALLED_APPS first
    return TrioDjwsApplication()
