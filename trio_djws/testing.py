"""``WebSocketTestClient``: drive the ASGI app in memory, without a socket or a thread.

Like Channels' ``WebsocketCommunicator``, but on trio: the app runs in a task of the client's
own nursery, and the two directions are bounded memory channels (10 events towards the app,
as Hypercorn's ``max_app_queue_size``; ``receive_buffer`` messages towards the client). A
client that does not read therefore applies real backpressure, so slow-consumer and deadline
logic can be proven with trio's ``MockClock``::

    async with WebSocketTestClient(app, "/chat/lobby/") as client:
        await client.send_json({"type": "message", "text": "hi"})
        assert (await client.receive_json())["text"] == "hi"

``SignalQueue`` (from ``trio_djws.signals.capture``) captures ``trigger()`` calls instead of
delivering them. ``open_live_server()`` serves the project on a real socket, as
``manage.py serve`` does, inside the caller's trio run (Channels' ``ChannelsLiveServerTestCase``).
The pytest plugin (``pytest_trio_djws``) wraps both as fixtures.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING, cast

import trio
from django.core.serializers.json import DjangoJSONEncoder
from wsproto.frame_protocol import CloseReason

from .exceptions import ConnectionClosed, TrioDjwsError
from .signals.capture import SignalQueue
from .typing import ASGIApp, ASGIEvent, ASGIReceive, ASGISend, JSONValue, Message, WebSocketScope

if TYPE_CHECKING:
    from hypercorn.typing import ASGIFramework

__all__ = [
    "HandshakeRejected",
    "LiveServer",
    "SignalQueue",
    "WebSocketTestClient",
    "open_live_server",
]


class HandshakeRejected(TrioDjwsError):
    """The app refused the handshake; ``status`` is the HTTP status it answered with."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status

    def __str__(self) -> str:
        return f"handshake rejected with HTTP {self.status}"


class WebSocketTestClient:
    """An in-memory WebSocket client for an ASGI 3 app.

    Args:
        app: the ASGI application (``trio_djws.asgi.get_asgi_application()``).
        path: the request path, e.g. ``"/chat/lobby/"``.
        query_string: the raw query string, without ``?``.
        headers: extra handshake headers as ``(name, value)`` str pairs.
        subprotocols: subprotocols offered, in order of preference.
        receive_buffer: how many events the app may send before it waits for the client
            to read (messages).

    Entering it performs the handshake. Raises ``HandshakeRejected`` if the app refuses.
    Leaving it disconnects with 1000 (``close()``), or, if the app closed first, answers its
    close frame (RFC 6455 §5.5.1); then waits, at most 5 seconds, for the app to finish.
    """

    def __init__(
        self,
        app: ASGIApp,
        path: str,
        *,
        query_string: str = "",
        headers: Iterable[tuple[str, str]] = (),
        subprotocols: Iterable[str] = (),
        receive_buffer: int = 64,
    ) -> None:
        self.app = app
        self.scope: WebSocketScope = {
            "type": "websocket",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "scheme": "ws",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query_string.encode(),
            "root_path": "",
            "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers],
            "client": ("127.0.0.1", 50000),
            "server": ("testserver", 80),
            "subprotocols": list(subprotocols),
            "extensions": {"websocket.http.response": {}},
        }
        self._to_app_send, self._to_app = trio.open_memory_channel[ASGIEvent](10)
        self._from_app_send, self._from_app = trio.open_memory_channel[ASGIEvent](receive_buffer)
        self._stack = AsyncExitStack()
        self._app_done = trio.Event()
        self.subprotocol: str | None = None
        self.close_code: int | None = None
        self.close_reason = ""

    async def _run_app(self) -> None:
        receive: ASGIReceive = self._to_app.receive
        send: ASGISend = self._app_send
        try:
            await self.app(self.scope, receive, send)
        finally:
            self._app_done.set()
            self._from_app_send.close()

    async def _app_send(self, event: ASGIEvent) -> None:
        if self.close_code is not None and event["type"] == "websocket.send":
            return  # as Hypercorn: sends after a disconnect do nothing
        await self._from_app_send.send(event)

    async def __aenter__(self) -> WebSocketTestClient:
        nursery = await self._stack.enter_async_context(trio.open_nursery())
        nursery.start_soon(self._run_app)
        await self._to_app_send.send({"type": "websocket.connect"})
        try:
            event = await self._from_app.receive()
        except trio.EndOfChannel:
            await self._stack.aclose()
            raise HandshakeRejected(500) from None
        if event["type"] == "websocket.accept":
            self.subprotocol = event.get("subprotocol")
            return self
        status = int(event.get("status", 403))
        await self._stack.aclose()
        raise HandshakeRejected(status)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            with trio.move_on_after(5, shield=True):
                if self.close_code is None:
                    await self.close()
                elif not self._app_done.is_set():
                    # The app closed first: answer its close frame as a client does (RFC 6455
                    # §5.5.1), so that it need not wait WEBSOCKET_CLOSE_TIMEOUT for the answer.
                    await self._to_app_send.send(
                        {"type": "websocket.disconnect", "code": self.close_code}
                    )
        finally:
            await self._stack.__aexit__(exc_type, exc, tb)

    async def send(self, message: Message) -> None:
        """Send one message to the app (``str``: text frame, ``bytes``: binary frame)."""
        if isinstance(message, str):
            await self._to_app_send.send({"type": "websocket.receive", "text": message})
        else:
            await self._to_app_send.send({"type": "websocket.receive", "bytes": message})

    async def send_json(self, data: JSONValue) -> None:
        """Send ``data`` as JSON in one text frame."""
        await self.send(json.dumps(data, cls=DjangoJSONEncoder))

    def _message(self, event: ASGIEvent) -> Message:
        if event["type"] == "websocket.close":
            self.close_code = int(event.get("code", CloseReason.NORMAL_CLOSURE))
            self.close_reason = str(event.get("reason") or "")
            raise ConnectionClosed(self.close_code, self.close_reason)
        text = event.get("text")
        if text is not None:
            return str(text)
        return bytes(event.get("bytes") or b"")

    async def receive(self) -> Message:
        """Wait for the next message from the app.

        Raises:
            ConnectionClosed: the app closed; ``code``/``reason`` are its close frame's
                (1006 if the app ended without one).
        """
        if self.close_code is not None:
            raise ConnectionClosed(self.close_code, self.close_reason)
        try:
            event = await self._from_app.receive()
        except trio.EndOfChannel:
            self.close_code = CloseReason.ABNORMAL_CLOSURE
            raise ConnectionClosed(self.close_code) from None
        return self._message(event)

    def receive_nowait(self) -> Message:
        """The next message if one is waiting.

        Raises:
            trio.WouldBlock: nothing was sent (call ``wait_all_tasks_blocked()`` first to
                assert that nothing will be).
            ConnectionClosed: as ``receive``.
        """
        if self.close_code is not None:
            raise ConnectionClosed(self.close_code, self.close_reason)
        try:
            event = self._from_app.receive_nowait()
        except trio.EndOfChannel:
            self.close_code = CloseReason.ABNORMAL_CLOSURE
            raise ConnectionClosed(self.close_code) from None
        return self._message(event)

    async def receive_json(self) -> JSONValue:
        """Wait for the next message and decode it as JSON."""
        return json.loads(await self.receive())

    async def close(self, code: int = CloseReason.NORMAL_CLOSURE) -> None:
        """Disconnect as a client would and wait for the app to finish with the connection.

        The app sees ``websocket.disconnect`` with ``code`` (unlike on Hypercorn, where
        every client close reads 1006).
        """
        if self.close_code is None:
            self.close_code = code
        if not self._app_done.is_set():
            await self._to_app_send.send({"type": "websocket.disconnect", "code": code})
            async for _ in self._from_app:  # discard what the app still sends, until it ends
                pass


@dataclass(frozen=True)
class LiveServer:
    """A server started by ``open_live_server()``."""

    url: str
    """``http://127.0.0.1:PORT``, for HTTP requests (Django's views, through the WSGI bridge)."""

    @property
    def ws_url(self) -> str:
        """``ws://127.0.0.1:PORT``: prefix a WebSocket path with it."""
        return "ws" + self.url.removeprefix("http")


@asynccontextmanager
async def open_live_server(
    app: ASGIApp | None = None, host: str = "127.0.0.1"
) -> AsyncIterator[LiveServer]:
    """Serve the project on an ephemeral port of ``host`` for the ``async with`` block.

    The server runs in a nursery of the calling task, by the same code as ``manage.py serve``
    (its listener, lifespan, drain), with the application ``manage.py serve`` would load
    (``ASGI_APPLICATION``, else ``trio_djws.asgi.get_asgi_application()``) unless ``app`` is
    given. Leaving the block closes every WebSocket with 1001 and stops the server.

    Django's test database is visible to the server's worker threads only with
    ``@pytest.mark.django_db(transaction=True)`` (as for Channels' live server).

    Raises:
        OSError: the port could not be bound.
    """
    from .servers.hypercorn import make_config, serve
    from .servers.serve import load_application
    from .servers.sockets import open_sockets

    # Our TypedDicts for scopes and events are not Hypercorn's, though the protocol is the same.
    application = cast("ASGIFramework", app) if app is not None else load_application()
    sockets = open_sockets([(host, 0)])
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        run = partial(serve, application, make_config(), sockets, shutdown_trigger=stop.wait)
        urls: list[str] = await nursery.start(run)
        try:
            yield LiveServer(urls[0])
        finally:
            stop.set()
