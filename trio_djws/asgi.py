"""The ASGI 3 application: ``get_asgi_application()``.

- ``lifespan``: always answered (an app that returns from it crashes Hypercorn's trio
  ``serve()``); startup opens the server nursery (broker), shutdown drains and ends it.
- ``http``: Django's WSGI handler in worker threads (``trio_djws.wsgi_bridge``, this app's
  WSGI bridge).
- ``websocket``: routed to the ``@Namespace`` handler for the path (``trio_djws.connection``).

Django's own ``ASGIHandler`` and async ORM need asyncio and fail under trio, hence the WSGI
bridge. Runs under ``hypercorn --worker-class trio project.asgi:application`` and, with the
fixes listed in docs/explanation/transports.md, under ``manage.py serve``.
"""

from __future__ import annotations

import logging
from typing import ClassVar

import django
from wsproto.frame_protocol import CloseReason

from .connection import serve_websocket
from .exceptions import ConnectionClosed
from .routing import autodiscover
from .state import open_server
from .typing import ASGIReceive, ASGISend, Message, Scope, WebSocketScope
from .wsgi_bridge import serve_http

__all__ = ["ASGITransport", "TrioDjwsApplication", "get_asgi_application"]

logger = logging.getLogger(__name__)

_REASONS = {
    400: b"Bad Request",
    403: b"Forbidden",
    500: b"Internal Server Error",
    503: b"Service Unavailable",
}


class ASGITransport:
    """The ``Transport`` of one ASGI ``websocket`` scope."""

    __slots__ = ("_receive", "_scope", "_send")  # one per connection: kept small

    # Hypercorn reports every client close as websocket.disconnect code 1006 (upstream issue
    # 127), so a 1006 from here says only that the client left.
    close_code_known: ClassVar[bool] = False

    def __init__(self, scope: WebSocketScope, receive: ASGIReceive, send: ASGISend) -> None:
        self._scope = scope
        self._receive = receive
        self._send = send

    async def accept(self, subprotocol: str | None) -> None:
        await self._send({"type": "websocket.accept", "subprotocol": subprotocol, "headers": []})

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
                raise ConnectionClosed(
                    int(event.get("code", CloseReason.NO_STATUS_RCVD)),
                    str(event.get("reason") or ""),
                )

    async def send(self, message: Message) -> None:
        if isinstance(message, str):
            await self._send({"type": "websocket.send", "text": message})
        else:
            await self._send({"type": "websocket.send", "bytes": message})

    async def close(self, code: int, reason: str) -> None:
        await self._send({"type": "websocket.close", "code": code, "reason": reason})


class TrioDjwsApplication:
    """The ASGI 3 callable; build it with ``get_asgi_application()``."""

    async def __call__(self, scope: Scope, receive: ASGIReceive, send: ASGISend) -> None:
        if scope["type"] == "websocket":
            event = await receive()
            if event["type"] != "websocket.connect":
                return
            await serve_websocket(ASGITransport(scope, receive, send), scope)
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
