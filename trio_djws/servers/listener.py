"""Internal: the one listener of ``manage.py serve`` (not part of the API).

The one listener of ``manage.py serve``: WebSocket upgrades to our engine, the rest to
Hypercorn.

Each accepted TCP connection's first request head is read and parsed with ``h11`` (the parser
Hypercorn uses), within Hypercorn's ``keep_alive_timeout`` seconds (a client that sends its
head too slowly is dropped, as Hypercorn drops an idle connection) and up to its
``h11_max_incomplete_size`` bytes. Then:

- an HTTP/1.1 WebSocket upgrade (``GET`` with ``Connection: upgrade`` and ``Upgrade:
  websocket``, Hypercorn's own rule) is served by the ``websockets`` engine
  (``trio_djws.engines.websockets.serve_stream``), which hands it to ``serve_websocket``: every
  handler, mixin, group, origin and close-code rule is the standalone server's. The bytes
  already read are parsed first. Its pings come from this module's one ``Pinger``.
- anything else (HTTP requests, an ``h2c`` upgrade, HTTP/2 with prior knowledge, bytes h11
  refuses, a head over the size limit) goes unchanged to Hypercorn, on a ``ReplayStream``
  that returns the bytes already read before reading on: Hypercorn parses them again and keeps
  its keep-alive, streaming, HTTP/2 and error responses (400, 431).

Decided edges (README, "Transports"): an upgrade that arrives later on a keep-alive connection
Hypercorn already serves stays on Hypercorn's WebSocket layer, as do WebSockets over HTTP/2
(RFC 8441); TLS is not offered (terminate it at the proxy); with an ``ASGI_APPLICATION`` that
is not trio-djws's own application every connection goes to Hypercorn (``Listener`` with
``websockets=False``), so that application sees every request.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Final, Protocol

import h11
import trio

from ..engines import peer
from ..engines.websockets import SansIOTransport, serve_stream
from ..exceptions import ConnectionClosed

__all__: list[str] = []

logger = logging.getLogger(__name__)

RECEIVE_BYTES: Final = 2**16  # one read of the request head (Hypercorn's MAX_RECV)


class ReplayStream(trio.abc.HalfCloseableStream):
    """An accepted ``SocketStream`` whose first reads return bytes already read from it.

    What Hypercorn's ``TCPServer`` needs of a stream (pinned by
    ``trio_djws.servers.hypercorn.check_hypercorn``): ``receive_some``, ``send_all``, ``send_eof``,
    ``aclose`` and ``socket``; no ``do_handshake``, so that it takes the stream as plain TCP.
    """

    __slots__ = ("_replay", "_stream")

    def __init__(self, stream: trio.SocketStream, replay: bytes) -> None:
        self._stream = stream
        self._replay = replay

    @property
    def socket(self) -> trio.socket.SocketType:
        """The connection's socket (for its addresses, ``TCP_USER_TIMEOUT``, polling)."""
        return self._stream.socket

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        """The bytes to replay first (at most ``max_bytes``), then the socket's."""
        replay = self._replay
        if not replay:
            return await self._stream.receive_some(max_bytes)
        await trio.lowlevel.checkpoint()
        size = len(replay) if max_bytes is None else max_bytes
        data, self._replay = replay[:size], replay[size:]
        return data

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self._stream.send_eof()

    async def aclose(self) -> None:
        await self._stream.aclose()


async def read_request_head(stream: trio.SocketStream, max_size: int) -> tuple[bytearray, bool]:
    """Read until ``h11`` has parsed the first request head, or refused the bytes.

    Args:
        stream: a fresh connection.
        max_size: bytes a head may take (Hypercorn's ``h11_max_incomplete_size``); more is
            h11's ``RemoteProtocolError``, which Hypercorn answers with 431.

    Returns:
        Every byte read (the head, perhaps more: a body, early frames), and whether the head
        is an HTTP/1.1 WebSocket upgrade. Nothing read if the peer closed first.
        A checkpoint; the caller bounds it with a deadline.
    """
    connection = h11.Connection(h11.SERVER, max_incomplete_event_size=max_size)
    received = bytearray()
    while True:
        try:
            event = connection.next_event()
        except h11.RemoteProtocolError:
            return received, False  # Hypercorn parses it again and answers the error
        if isinstance(event, h11.Request):
            return received, _is_websocket_upgrade(event)
        if event is not h11.NEED_DATA:
            return received, False  # the peer closed (ConnectionClosed) mid-head
        try:
            data = await stream.receive_some(RECEIVE_BYTES)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            data = b""
        received += data
        connection.receive_data(data)  # b"": EOF


def _is_websocket_upgrade(request: h11.Request) -> bool:
    # Hypercorn's rule (H11Protocol._create_stream), restricted to HTTP/1.1: GET, a
    # "Connection" header with the "upgrade" token and "Upgrade: websocket" (RFC 6455 §4.2.1).
    if request.method != b"GET" or request.http_version != b"1.1":
        return False
    upgrade = connection = False
    for name, value in request.headers:  # h11 lower-cases the names
        if name == b"upgrade":
            upgrade = value.strip().lower() == b"websocket"
        elif name == b"connection":
            connection = any(token.strip() == b"upgrade" for token in value.lower().split(b","))
    return upgrade and connection


class Pingable(Protocol):
    """A connection the ``Pinger`` pings."""

    async def ping(self) -> None:
        """Send one ping, or nothing if a write is under way or stuck; never waits on the
        peer."""


class _SansIOPings:
    # The Pingable face of one connection on the websockets engine.
    __slots__ = ("transport",)

    def __init__(self, transport: SansIOTransport) -> None:
        self.transport = transport

    async def ping(self) -> None:
        self.transport.ping_nowait()


class Pinger:
    """One task that pings every WebSocket of a server every ``interval`` seconds, each on its
    own schedule (``interval`` after it was added, then every ``interval``), in that order.

    Instead of a task per connection (Hypercorn's ``WSStream._send_pings`` cost about 3.4 KiB
    per idle connection and held a closed connection's task until it woke). A ping is not
    awaited on any one connection: a connection whose writes are under way or stuck is skipped
    (its data already arms the kernel's ``TCP_USER_TIMEOUT``). Pongs are not checked here: a
    pong deadline would go in ``_ping_due``, next to the ping it answers.
    """

    __slots__ = ("_due", "_engine_keys", "interval")

    def __init__(self, interval: float | None) -> None:
        self.interval = interval
        """Seconds between two pings of one connection (``WEBSOCKET_PING_INTERVAL``); None:
        no pings."""
        # Each live connection and when it is next pinged (trio time, s), in that order.
        self._due: OrderedDict[Pingable, float] = OrderedDict()
        self._engine_keys: dict[SansIOTransport, _SansIOPings] = {}

    def schedule(self, connection: Pingable) -> None:
        """Ping ``connection`` from ``interval`` seconds from now on (no-op without pings)."""
        if self.interval is not None:
            self._due[connection] = trio.current_time() + self.interval

    def unschedule(self, connection: Pingable) -> None:
        """Stop pinging ``connection`` (it has ended)."""
        self._due.pop(connection, None)

    # The engine's PingSchedule (trio_djws.engines.websockets): its transports, by the engine.
    def add(self, transport: SansIOTransport) -> None:
        """Ping a connection of the websockets engine (``SansIOTransport.ping_nowait``)."""
        key = self._engine_keys[transport] = _SansIOPings(transport)
        self.schedule(key)

    def discard(self, transport: SansIOTransport) -> None:
        """Stop pinging a connection of the websockets engine."""
        key = self._engine_keys.pop(transport, None)
        if key is not None:
            self.unschedule(key)

    async def serve(self) -> None:
        """Ping until cancelled (returns at once without pings)."""
        interval = self.interval
        if interval is None:
            return
        due = self._due
        while True:
            if not due:
                # A connection added from now on is due ``interval`` from now: later than
                # this wake-up.
                await trio.sleep(interval)
                continue
            connection, when = next(iter(due.items()))
            now = trio.current_time()
            if when > now:
                await trio.sleep_until(when)
                continue
            due.move_to_end(connection)
            due[connection] = now + interval
            await self._ping_due(connection)

    async def _ping_due(self, connection: Pingable) -> None:
        try:
            await connection.ping()
        except Exception:
            logger.exception("sending a ping to %r failed; the pings go on", connection)


class Listener:
    """The ``trio.serve_listeners`` handler of ``manage.py serve`` (see the module docstring).

    Args:
        serve_hypercorn: serves one connection with Hypercorn's ``TCPServer`` (contains its
            exceptions and closes the stream).
        keep_alive_timeout: seconds the first request head may take (Hypercorn's
            ``keep_alive_timeout``).
        max_head_size: bytes it may take (Hypercorn's ``h11_max_incomplete_size``).
        pinger: pings the WebSockets this listener serves on the engine.
        websockets: False: every connection goes to Hypercorn (an ``ASGI_APPLICATION`` that
            is not trio-djws's own must see every request).
    """

    __slots__ = (
        "_keep_alive_timeout",
        "_max_head_size",
        "_pinger",
        "_reading",
        "_serve_hypercorn",
        "websockets",
    )

    def __init__(
        self,
        serve_hypercorn: Callable[[trio.abc.HalfCloseableStream], Awaitable[None]],
        *,
        keep_alive_timeout: float,
        max_head_size: int,
        pinger: Pinger,
        websockets: bool = True,
    ) -> None:
        self._serve_hypercorn = serve_hypercorn
        self._keep_alive_timeout = keep_alive_timeout
        self._max_head_size = max_head_size
        self._pinger = pinger
        self.websockets = websockets
        # Connections still sending their first request head: closed by close_idle().
        self._reading: set[trio.CancelScope] = set()

    async def _read_head(self, stream: trio.SocketStream) -> tuple[bytearray, bool]:
        # read_request_head() within keep_alive_timeout, cancelled by close_idle(); nothing
        # read if it timed out or was cancelled.
        with trio.move_on_after(self._keep_alive_timeout) as scope:
            self._reading.add(scope)
            try:
                return await read_request_head(stream, self._max_head_size)
            finally:
                self._reading.discard(scope)
        return bytearray(), False

    def close_idle(self) -> None:
        """Close every connection whose first request head has not arrived yet (at shutdown,
        as Hypercorn closes its idle keep-alive connections)."""
        for scope in self._reading:
            scope.cancel()

    async def serve(self, stream: trio.SocketStream) -> None:
        """Serve one accepted connection (see the module docstring) until it ends; an
        exception ends this connection only, logged with the client's address."""
        if not self.websockets:
            await self._serve_hypercorn(stream)
            return
        # Held for the connection's lifetime (by this frame): a bytearray that the engine
        # empties once parsed, so an idle WebSocket does not keep its request head.
        received, upgrade = await self._read_head(stream)
        if not received:  # closed, timed out or shut down before a request: nothing to answer
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(stream)
            return
        if not upgrade:
            await self._serve_hypercorn(ReplayStream(stream, bytes(received)))
            return
        try:
            await serve_stream(stream, received, self._pinger)
        except ConnectionClosed:
            pass  # the peer left, or a write timed out (logged)
        except Exception:
            logger.exception("WebSocket connection from %s failed; closing it", peer(stream))
        finally:
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(stream)
