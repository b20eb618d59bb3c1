"""Internal: the ``trio_websocket`` engine (``WEBSOCKET_ENGINE``; not part of the API).

The ``trio_websocket`` engine: trio-websocket (wsproto inside) under our accept loop.

Each accepted stream goes through ``trio_websocket.wrap_server_stream``, the public function
``trio_websocket.serve_websocket``'s ``WebSocketServer`` is built on; we run the accept loop
ourselves because in ``WebSocketServer`` an exception in one connection's tasks reaches the
handler nursery and ends the server. What trio-websocket leaves to its user, added here:

- a write deadline (``WEBSOCKET_SEND_TIMEOUT`` seconds) on every send: a client that stops
  reading blocks nothing else and is closed as a slow consumer (1008);
- a close frame when wsproto fails a connection (invalid UTF-8 → 1007, a protocol error →
  1002): trio-websocket only drops the TCP connection then. That needs one private attribute
  of trio-websocket 0.12, read in ``_failed_without_close_frame`` only. It is written after
  the rest of a message another task is writing (one write at a time on the socket);
- a write cut short part way through a frame (``abort()``, the write deadline of a slow
  consumer) keeps the frame's rest, written first by the next write: the close frame (1008
  "slow consumer") still follows whole frames, within ``WEBSOCKET_CLOSE_TIMEOUT``;
- keepalive pings every ``WEBSOCKET_PING_INTERVAL`` seconds (trio-websocket has none);
- a log line naming ``WEBSOCKET_MAX_MESSAGE_SIZE`` when trio-websocket closes with 1009.

trio-websocket counts a text message's size in characters, not bytes; the connection model
then checks the UTF-8 size against the same limit, so no message over the limit gets through.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Final

import trio
import trio_websocket
from wsproto.connection import ConnectionState
from wsproto.frame_protocol import LOCAL_ONLY_CLOSE_REASONS, CloseReason, FrameProtocol

from ..conf import get_settings
from ..connection import serve_websocket, valid_handshake_key
from ..exceptions import ConnectionClosed, SlowConsumer
from ..log import escape, peer_warning, readable
from ..typing import Message
from . import StreamEngine, make_scope, peer, reason_phrase

__all__: list[str] = []

logger = logging.getLogger(__name__)

_MAX_HEAD_BYTES: Final = 64 * 1024  # a request head longer than this is refused by wsproto
_MESSAGE_QUEUE_SIZE: Final = 1  # trio-websocket's default; the connection model buffers
_PING_PAYLOAD: Final = b"trio-djws"
_DRAIN_BYTES: Final = 65536  # one read while waiting for the peer's EOF after a failure


def _code(exc: trio_websocket.ConnectionClosed) -> tuple[int, str]:
    reason = exc.reason
    if reason is None:
        return CloseReason.ABNORMAL_CLOSURE, "connection lost"
    return reason.code, reason.reason or ""


class TrioWebsocketTransport:
    """The ``Transport`` of one trio-websocket connection."""

    def __init__(self, request: trio_websocket.WebSocketRequest, stream: _Stream) -> None:
        settings = get_settings()
        self._request = request
        self._stream = stream
        self._connection: trio_websocket.WebSocketConnection | None = None
        self._write_timeout = settings.send_timeout
        self._close_timeout = settings.close_timeout
        self._max_size = settings.max_message_size

    @property
    def connection(self) -> trio_websocket.WebSocketConnection | None:
        """The accepted connection, or None before the accept."""
        return self._connection

    async def accept(self, subprotocol: str | None) -> None:
        with self._write_deadline():
            self._connection = await self._request.accept(subprotocol=subprotocol)
        self._stream.handshake_done.set()  # the reader may now see what was pipelined

    async def reject(self, status: int) -> None:
        self._stream.handshake_done.set()
        body = f"{status} {reason_phrase(status)}\n".encode()
        headers = [(b"content-type", b"text/plain; charset=utf-8")]
        with trio.move_on_after(self._close_timeout):
            await self._request.reject(status, extra_headers=headers, body=body)

    async def receive(self) -> Message:
        assert self._connection is not None, "receive() before accept()"
        try:
            return await self._connection.get_message()
        except trio_websocket.ConnectionClosed as exc:
            code, reason = _code(exc)
            if code == CloseReason.MESSAGE_TOO_BIG and reason.startswith("Exceeded maximum"):
                peer_warning(
                    logger,
                    "message from %s exceeds WEBSOCKET_MAX_MESSAGE_SIZE (%d bytes); "
                    "closed with 1009",
                    self._stream.peer,
                    self._max_size,
                )
            raise ConnectionClosed(code, reason) from None

    async def send(self, message: Message) -> None:
        assert self._connection is not None, "send() before accept()"
        # A peer that takes no data for WEBSOCKET_SEND_TIMEOUT seconds is a slow consumer:
        # the write stops (its rest is kept, see _Stream.send_all) and the connection model
        # closes with 1008, the close frame after that rest.
        with trio.move_on_after(self._write_timeout) as deadline:
            try:
                await self._connection.send_message(message)
            except trio_websocket.ConnectionClosed as exc:
                raise ConnectionClosed(*_code(exc)) from None
        if deadline.cancelled_caught:
            logger.warning(
                "%s took no data for %.1f s (WEBSOCKET_SEND_TIMEOUT): a slow consumer",
                self._stream.peer,
                self._write_timeout,
            )
            raise SlowConsumer

    async def close(self, code: int, reason: str) -> None:
        if self._connection is None:
            return
        if code in LOCAL_ONLY_CLOSE_REASONS:  # 1005, 1006, 1015 must not be sent
            code = CloseReason.INTERNAL_ERROR
        # aclose() sends the close frame and waits for the peer's (RFC 6455 §7.1.1).
        with trio.move_on_after(self._close_timeout):
            await self._connection.aclose(code, reason or None)

    async def keepalive(self, interval: float, nursery: trio.Nursery) -> None:
        """Ping every ``interval`` seconds (RFC 6455 §5.5.2), one ping in flight at a time.

        trio-websocket's ``ping()`` sends and then waits for the pong; it runs in its own
        task in ``nursery`` (the connection's: no nursery of its own, idle memory), so a peer
        slow to answer (its reader waits while a handler is busy) delays the next ping instead
        of failing the connection. The ping's bytes make the kernel's ``TCP_USER_TIMEOUT``
        abort a peer that stopped acknowledging. A ping unanswered for
        ``WEBSOCKET_PING_TIMEOUT`` seconds, with no data waiting unread in the socket (a busy
        handler's peer is alive), aborts the connection at the next ping (1006 for the
        handler)."""
        in_flight = False
        started = 0.0
        timeout = get_settings().ping_timeout

        async def ping(connection: trio_websocket.WebSocketConnection) -> None:
            nonlocal in_flight, started
            in_flight = True
            started = trio.current_time()
            try:
                # No deadline: it would count the wait for the pong. A ping stuck behind a
                # stalled peer ends when the writer's deadline aborts the stream.
                await connection.ping(_PING_PAYLOAD)
            except trio_websocket.ConnectionClosed:
                pass
            finally:
                in_flight = False

        while True:
            await trio.sleep(interval)
            connection = self._connection
            if connection is None:
                continue
            if connection.closed is not None:
                break
            if (
                in_flight
                and timeout is not None
                and trio.current_time() - started >= timeout
                and not readable(self._stream.socket)
            ):
                peer_warning(
                    logger,
                    "%s answered no ping for WEBSOCKET_PING_TIMEOUT (%.0f s); closing the "
                    "connection",
                    self._stream.peer,
                    timeout,
                )
                self._stream.abort()
                break
            if not in_flight:
                nursery.start_soon(ping, connection)

    def _write_deadline(self) -> AbstractContextManager[None]:
        return _write_deadline(self._stream, self._write_timeout)


@contextmanager
def _write_deadline(stream: _Stream, timeout: float) -> Iterator[None]:
    # A block bounded by WEBSOCKET_SEND_TIMEOUT seconds; on expiry the stream is aborted (a
    # cancelled send_all leaves it unusable anyway) and ConnectionClosed raised.
    with trio.move_on_after(timeout) as deadline:
        yield
    if deadline.cancelled_caught:
        logger.warning(
            "%s took no data for %.1f s (WEBSOCKET_SEND_TIMEOUT); aborting the connection",
            stream.peer,
            timeout,
        )
        stream.abort()
        raise ConnectionClosed(CloseReason.ABNORMAL_CLOSURE, "write timed out")


def _request_connection(
    request: trio_websocket.WebSocketRequest,
) -> trio_websocket.WebSocketConnection:
    # The connection behind a handshake request, before it is accepted: its reader task
    # already runs and may fail the connection (and close the stream) while accept() is still
    # writing the 101 response, before accept() returns it. Private API of trio-websocket
    # 0.12 (``WebSocketRequest._connection``), as below.
    connection: trio_websocket.WebSocketConnection = request._connection  # noqa: SLF001  (pinned)
    return connection


def _failed_without_close_frame(connection: trio_websocket.WebSocketConnection) -> int | None:
    # The close code to send when wsproto failed the connection (invalid UTF-8: 1007; a
    # protocol error: 1002) and trio-websocket is closing the stream without a close frame;
    # else None. Private API of trio-websocket 0.12: ``_wsproto`` (its wsproto connection)
    # still OPEN means no close frame was sent or received, while ``closed`` (public) holds
    # the failure's code. tests/test_server.py pins this for every engine, and repeats it on
    # fresh connections (the failure can come before accept() returns).
    reason = connection.closed
    if reason is None or reason.code in LOCAL_ONLY_CLOSE_REASONS:
        return None
    state = connection._wsproto.state  # noqa: SLF001  (trio-websocket 0.12, pinned in engines.pins)
    return reason.code if state is ConnectionState.OPEN else None


class _Stream(trio.abc.HalfCloseableStream):
    """The accepted ``SocketStream`` as trio-websocket uses it, adding the close frame it
    does not send when wsproto fails a connection, and a synchronous abort.

    Bytes that arrive after the handshake's request head in the same read (a frame pipelined
    with the handshake) are held back until the handshake is answered (``handshake_done``):
    handed to wsproto before, they would wait as its trailing data until the next read, so a
    pipelined message, or a bad frame that must fail the connection with 1002, would go
    unnoticed until the client sent more.
    """

    def __init__(self, stream: trio.SocketStream, close_timeout: float) -> None:
        self._stream = stream
        self._close_timeout = close_timeout
        self.peer = peer(stream)
        self.connection: trio_websocket.WebSocketConnection | None = None
        self.handshake_done = trio.Event()  # set by the transport's accept() and reject()
        self._head: bytearray | None = bytearray()  # the request head so far; None once read
        self._held = b""  # what followed the request head, delivered after the handshake
        self._rest = b""  # the unwritten end of a write cut short: written first next time
        # trio-websocket serialises its own writes, but aclose() writes the close frame from
        # the reading task (wsproto failed the connection) while a message may be half
        # written by another: one write at a time, so the close frame follows that message.
        self._send_lock = trio.StrictFIFOLock()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        # With the socket's own send(), each call of which either wrote or (cancelled) did
        # not: a write cut short part way through a frame (abort(), the write deadline of a
        # slow consumer) knows its rest, and the next write sends it first, so that
        # trio-websocket's close frame still follows whole frames (RFC 6455 §5.4).
        async with self._send_lock:
            if self._rest:
                data, self._rest = self._rest + bytes(data), b""
            view = memoryview(data)
            sock = self._stream.socket
            sent = 0
            try:
                while sent < len(view):
                    sent += await sock.send(view[sent:])
            except trio.Cancelled:
                self._rest = bytes(view[sent:])
                raise
            except OSError as exc:
                raise trio.BrokenResourceError(str(exc)) from exc

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self._stream.send_eof()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if self._held:
            await self.handshake_done.wait()
            data = self._held[:max_bytes] if max_bytes else self._held
            self._held = self._held[len(data) :]
            return data
        data = await self._stream.receive_some(max_bytes)
        head = self._head
        if head is not None and data:
            start = len(head)
            head += data
            end = head.find(b"\r\n\r\n", max(0, start - 3))
            if end >= 0:
                cut = end + 4 - start
                self._held = bytes(data[cut:])
                data = data[:cut]
                self._head = None
            elif len(head) > _MAX_HEAD_BYTES:
                self._head = None  # wsproto refuses it: nothing to hold back
        return data

    @property
    def socket(self) -> trio.socket.SocketType:
        """The accepted socket."""
        return self._stream.socket

    def abort(self) -> None:
        """Close the socket now: every task blocked on it wakes with ClosedResourceError."""
        self._stream.socket.close()

    async def aclose(self) -> None:
        connection = self.connection
        code = _failed_without_close_frame(connection) if connection is not None else None
        if code is not None and connection is not None and connection.closed is not None:
            reason = connection.closed.reason or ""
            peer_warning(
                logger,
                "%s from %s (wsproto); closing with %d",
                escape(reason or "protocol error"),
                self.peer,
                code,
            )
            frame = bytes(FrameProtocol(client=False, extensions=[]).close(code, reason))
            # Then half-close and read what the peer still sends until its EOF (RFC 6455
            # §7.1.1: the server closes the TCP connection first): closing a socket with unread
            # data (the peer's own close frame, often) resets the connection, and the peer
            # loses this close frame (measured: 1 connection in 6 at conformance-client speed).
            with trio.move_on_after(self._close_timeout, shield=True):
                try:
                    await self.send_all(frame)
                    await self._stream.send_eof()
                    while await self._stream.receive_some(_DRAIN_BYTES):
                        pass
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
        await self._stream.aclose()


async def _serve_stream(stream: trio.SocketStream) -> None:
    # One accepted TCP connection; StreamEngine contains its exceptions (an exception ends
    # this connection only) and closes the stream.
    settings = get_settings()
    wrapped = _Stream(stream, settings.close_timeout)
    async with trio.open_nursery() as nursery:
        with trio.move_on_after(settings.close_timeout) as handshake_deadline:
            request = await trio_websocket.wrap_server_stream(
                nursery,
                wrapped,
                message_queue_size=_MESSAGE_QUEUE_SIZE,
                max_message_size=settings.max_message_size,
                receive_buffer_size=None,
            )
        if handshake_deadline.cancelled_caught:
            # No handshake in time, or a malformed one: wsproto has answered it with 400.
            nursery.cancel_scope.cancel()
            return
        wrapped.connection = _request_connection(request)  # before anything can fail it
        transport = TrioWebsocketTransport(request, wrapped)
        offered = list(request.proposed_subprotocols)
        scope = make_scope(
            request.path,
            [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers],
            offered,
            stream,
        )
        if not valid_handshake_key(scope):
            peer_warning(
                logger,
                "rejected handshake from %s for %r with 400: invalid Sec-WebSocket-Key "
                "(RFC 6455 §4.2.1: base64 of 16 bytes)",
                peer(stream),
                scope["path"],
            )
            await transport.reject(400)
            nursery.cancel_scope.cancel()
            return
        if settings.ping_interval is not None:
            nursery.start_soon(transport.keepalive, settings.ping_interval, nursery)
        await serve_websocket(transport, scope)
        nursery.cancel_scope.cancel()


# WEBSOCKET_ENGINE = "trio_websocket": trio.serve_listeners + trio_websocket.wrap_server_stream.
ENGINE: Final = StreamEngine("trio_websocket", _serve_stream)
