"""Internal: the ``websockets`` engine (``WEBSOCKET_ENGINE``; not part of the API).

The ``websockets`` engine: ``websockets.server.ServerProtocol`` (sans-I/O) on trio streams.

The library parses the handshake and the frames, validates the close handshake, answers pings
and enforces ``WEBSOCKET_MAX_MESSAGE_SIZE`` (1009); this module moves bytes, reassembles
fragmented messages and decodes text (strict UTF-8: RFC 6455 §8.1 → 1007), as the library's
own trio and asyncio connections do. Writes are batched: whatever the protocol has to send
after one read (pongs, the echo of a close frame) leaves in one write. A write cut short part
way through a frame (``abort()``, a slow consumer's 1008) keeps the frame's rest, which the
next write sends first: the close frame then follows whole frames, and a peer that resumes
reading within ``WEBSOCKET_CLOSE_TIMEOUT`` gets it; one that does not is dropped then. A peer
that takes no data for ``WEBSOCKET_SEND_TIMEOUT`` seconds while the writer sends is a slow
consumer (``SlowConsumer``: 1008); any other write that long aborts the stream.

Tasks of one connection: the connection model's reader (``receive``), its writer (``send``)
and the keepalive pinger share the stream through a send lock and a read lock; the read lock
also lets ``close`` read the peer's answer to our close frame after the reader has stopped.
Neither lock costs a scheduler round trip when it is free, and after a read that emptied the
socket the next one waits for readability before reading (no read that can only fail).

Fast path (``send_nowait``, used by the connection runtime, ``trio_djws._runtime``, while
the connection's writer waits on an empty send queue): a message's frame is written at once
with one non-blocking ``send()``: no task wake-up, lock or cancel scope. If the socket would
block, nothing is written and the message takes the queued path; if it takes part of the
frame, the rest is written first by the next write of any task. Frames are made by the library's
``Frame.serialize``, and the last one is reused while the same message object is sent again,
so a group broadcast frames its payload once. A connection that negotiated an extension has
its frames made by its protocol, always on the queued path.

Why one module of more than 450 lines: ``SansIOTransport`` alone is about 490 lines (reads,
the queued and the fast write paths, the kept rest of a cut write, the close handshake), and
it shares the sans-I/O protocol object, its undocumented attributes (pinned in
``trio_djws.engines.pins``) and ``_write`` with the handshake code below it; split, each half
would reach into the other's private names.
"""

from __future__ import annotations

import codecs
import contextlib
import enum
import errno
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Final, Protocol

import trio
from websockets.datastructures import Headers
from websockets.exceptions import InvalidMessage, PayloadTooBig, ProtocolError
from websockets.extensions import ServerExtensionFactory
from websockets.extensions.permessage_deflate import enable_server_permessage_deflate
from websockets.frames import Close, Frame, Opcode
from websockets.headers import parse_subprotocol
from websockets.http11 import Request, Response
from websockets.protocol import Event, State
from websockets.server import ServerProtocol
from wsproto.frame_protocol import CloseReason

from ..conf import KIB, get_settings
from ..connection import serve_websocket
from ..exceptions import ConnectionClosed, SlowConsumer
from ..log import escape, peer_warning, readable
from ..typing import Message
from . import StreamEngine, make_scope, peer, reason_phrase

__all__: list[str] = []

logger = logging.getLogger(__name__)
_MAX_REASON_CHARS: Final = 30  # of an exception text as a close reason (<= 123 bytes)

RECEIVE_BYTES: Final = 64 * KIB  # one read; also bounds the frames buffered from one read
WRITE_CHUNK_BYTES: Final = 256 * KIB  # the write deadline applies to each piece this large
_BAD_REQUEST: Final = 400
_UTF8_DECODER: Final = codecs.getincrementaldecoder("utf-8")  # strict
_DATA_OPCODES: Final = frozenset({Opcode.TEXT, Opcode.CONT})  # frames whose UTF-8 is checked


class _Written(enum.Enum):
    ALL = enum.auto()
    PART = enum.auto()
    NONE = enum.auto()


_ALL: Final = _Written.ALL
_PART: Final = _Written.PART
_NONE: Final = _Written.NONE


class _FrameCache:
    """The last frame made, with its message: a broadcast sends one message object to every
    member, so its payload is framed once. Compared by identity (``str`` and ``bytes`` are
    immutable, and the pair keeps the message alive); one per trio run (``_FRAMES``)."""

    __slots__ = ("last",)

    def __init__(self) -> None:
        self.last: tuple[object, bytes] = (object(), b"")

    def frame(self, message: Message) -> bytes:
        """The unmasked frame of ``message`` with no extension (RFC 6455 §5.2), made by the
        library's ``Frame.serialize``: text for ``str``, binary for ``bytes``."""
        last = self.last
        if last[0] is message:
            return last[1]
        if isinstance(message, str):
            frame = Frame(Opcode.TEXT, message.encode("utf-8"))
        else:
            frame = Frame(Opcode.BINARY, message)
        data = frame.serialize(mask=False)
        self.last = (message, data)
        return data


_FRAMES: trio.lowlevel.RunVar[_FrameCache] = trio.lowlevel.RunVar("trio_djws.sansio_frames")


def _frame_cache() -> _FrameCache:
    try:
        return _FRAMES.get()
    except LookupError:
        cache = _FrameCache()
        _FRAMES.set(cache)
        return cache


class SansIOTransport:
    """The ``Transport`` of one connection on ``ServerProtocol``."""

    def __init__(
        self,
        stream: trio.SocketStream,
        protocol: ServerProtocol,
        response: Response,
        early: Sequence[Event],
    ) -> None:
        settings = get_settings()
        self._stream = stream
        self._protocol = protocol
        self._response = response
        self._write_timeout = settings.send_timeout
        self._close_timeout = settings.close_timeout
        self._max_size = settings.max_message_size
        self._send_lock = trio.Lock()
        self._read_lock = trio.Lock()
        # Frames made by send() and not written yet (at most one per task waiting for the send
        # lock); the rest of a frame that send_nowait wrote only part of (always written
        # first) and its message.
        self._out: list[bytes] = []
        self._rest: memoryview | None = None
        self._rest_message: Message | None = None
        self._plain = False  # no extension negotiated: frames are made without the protocol
        self._frames = _frame_cache()
        self._drained = False  # the last read took less than RECEIVE_BYTES (see _receive_some)
        # Frames parsed from the last read and not handled yet: at most RECEIVE_BYTES worth.
        self._pending: Iterator[Event] = iter(list(early))
        self._fragments: bytearray | None = None
        self._utf8: codecs.IncrementalDecoder | None = None  # while a text message is fragmented
        self._held: list[bytes] | None = None  # the protocol's output held back (see _read)
        self._fragment_opcode = Opcode.TEXT
        self._done: ConnectionClosed | None = None  # set once nothing more can be received
        self._peer = peer(stream)
        self._ping_timeout = settings.ping_timeout
        self._unanswered_since: float | None = None  # a ping went out, nothing heard since

    # -- Transport -----------------------------------------------------------------------------

    async def accept(self, subprotocol: str | None) -> None:
        if subprotocol is not None:
            self._response.headers["Sec-WebSocket-Protocol"] = subprotocol
            self._protocol.subprotocol = subprotocol  # type: ignore[assignment]  # a NewType
        self._protocol.send_response(self._response)
        self._plain = not self._protocol.extensions
        self._fail_pipelined()
        await self._flush()
        self._check_done()

    def _fail_pipelined(self) -> None:
        # A frame pipelined with the handshake was parsed before the response, when the
        # library cannot send a close frame (it is CONNECTING): its error is only recorded.
        # Fail the connection now that it is open, with the code RFC 6455 gives the error.
        protocol = self._protocol
        exc = protocol.parser_exc
        if exc is None or protocol.close_sent is not None or protocol.state is not State.OPEN:
            return
        if isinstance(exc, PayloadTooBig):
            code = CloseReason.MESSAGE_TOO_BIG
        elif isinstance(exc, UnicodeDecodeError):
            code = CloseReason.INVALID_FRAME_PAYLOAD_DATA
        else:
            code = CloseReason.PROTOCOL_ERROR
        protocol.fail(code, str(exc)[:_MAX_REASON_CHARS])

    async def reject(self, status: int) -> None:
        await _send_status(self._stream, self._protocol, status)

    async def receive(self) -> Message:
        # A cancellation point; a schedule point only when it waits for the peer (a message
        # already parsed from the last read is returned at once).
        await trio.lowlevel.checkpoint_if_cancelled()
        lock = self._read_lock
        if lock.locked():
            await lock.acquire()
        else:
            lock.acquire_nowait()  # no scheduler round trip when the reader is alone
        try:
            while True:
                message = self._next_message()
                if message is not None:
                    return message
                if self._done is not None:
                    self._release_held()
                    with contextlib.suppress(ConnectionClosed):
                        await self._flush()  # the close frame after a failure (1007)
                    raise self._done
                await self._read()
        finally:
            lock.release()

    async def send(self, message: Message) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        if message is self._rest_message:
            # send_nowait wrote part of this message's frame: only the rest is left to write
            # (by now perhaps written already, first thing, by another task's flush).
            self._rest_message = None
        elif self._protocol.state is not State.OPEN:
            raise self._closed()
        elif not self._plain:
            if isinstance(message, str):
                self._protocol.send_text(message.encode("utf-8"))
            else:
                self._protocol.send_binary(message)
        else:
            written = self._write_now(message)
            if written is _ALL:
                await trio.lowlevel.cancel_shielded_checkpoint()
                return
            if written is _NONE:
                self._out.append(self._frames.frame(message))
        await self._flush(slow_consumer=True)
        await trio.lowlevel.cancel_shielded_checkpoint()

    def send_nowait(self, message: Message) -> None:
        """Write ``message``'s frame now, without waiting, if nothing else is being written.

        The optional fast path of this transport (the connection runtime,
        ``trio_djws._runtime``, uses it while the connection's writer waits on an empty send
        queue). Sync: never blocks.

        Raises:
            trio.WouldBlock: the frame was not written whole; hand ``message`` to ``send``.
                Either nothing was written (the socket would block, another write is pending
                or under way, the connection is not open, or an extension was negotiated),
                or only part of it was: ``send`` of this same message then writes just the
                rest, and any other write writes that rest first.
        """
        if not self._plain or self._protocol.state is not State.OPEN:
            raise trio.WouldBlock
        written = self._write_now(message)
        if written is _ALL:
            return
        if written is _PART:
            self._rest_message = message
        raise trio.WouldBlock

    def _write_now(self, message: Message) -> _Written:
        # One non-blocking send() of ``message``'s frame, only if nothing else is pending or
        # being written. A part written leaves the rest in _rest. An error leaves the frame
        # unwritten: the awaited path (send_all) then reports it.
        if self._out or self._rest is not None or self._send_lock.locked():
            return _NONE
        sock = self._stream.socket
        fd = sock.fileno()  # checked each time: -1 once closed (never a reused descriptor)
        if fd < 0 or sock.did_shutdown_SHUT_WR:
            return _NONE
        frame = self._frames.frame(message)
        try:
            sent = os.write(fd, frame)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK):
                logger.debug("non-blocking write to %s failed: %s", self._peer, exc)
            return _NONE
        if sent == len(frame):
            return _ALL
        if sent <= 0:
            return _NONE
        self._rest = memoryview(frame)[sent:]
        return _PART

    async def close(self, code: int, reason: str) -> None:
        if self._protocol.state is State.OPEN:
            try:
                self._protocol.send_close(code, reason)
            except ProtocolError:  # a code that must not be sent (1005, 1006, 1015)
                self._protocol.send_close(CloseReason.INTERNAL_ERROR, reason)
            # After whatever a cut-short write left (a slow consumer): WEBSOCKET_CLOSE_TIMEOUT
            # seconds for the peer to take it and the close frame, else it is dropped.
            with trio.move_on_after(self._close_timeout) as flushing:
                await self._flush()
            if flushing.cancelled_caught:
                logger.info(
                    "%s took not even the close frame within WEBSOCKET_CLOSE_TIMEOUT; "
                    "closing the TCP connection",
                    self._peer,
                )
                self._stream.socket.close()
                return
        await self._flush_held()
        # RFC 6455 §7.1.1: wait (WEBSOCKET_CLOSE_TIMEOUT at most) for the peer's close frame;
        # the engine then closes the TCP connection. Data frames still arriving are dropped
        # (§1.4). The connection model's reader may hold the read lock: it sees the close
        # frame, releases the lock, and this loop finds ``_done`` set.
        # After a failure (our close frame sent, the peer's never read: 1002, 1007, 1009) the
        # library has half-closed; read what the peer still sends until its EOF (same
        # deadline): closing a socket with unread data resets the connection, and the peer may
        # lose the close frame. After a close handshake the socket is closed at once (§7.1.1:
        # the server closes the TCP connection first).
        with trio.move_on_after(self._close_timeout):
            async with self._read_lock:
                while self._done is None:
                    self._pending = iter(())
                    await self._read()
                await self._flush_held()
                protocol = self._protocol
                if protocol.eof_sent and protocol.close_rcvd is None:
                    while await self._receive_some():
                        pass

    # -- keepalive -------------------------------------------------------------------------

    async def keepalive(self, interval: float) -> None:
        """Ping every ``interval`` seconds while open (RFC 6455 §5.5.2). The ping's bytes
        make the kernel's ``TCP_USER_TIMEOUT`` abort a peer that stopped acknowledging; a peer
        that has sent nothing since a ping ``WEBSOCKET_PING_TIMEOUT`` seconds old is aborted
        at the next ping (``_pong_overdue``)."""
        while True:
            await trio.sleep(interval)
            if self._protocol.state is State.CONNECTING:
                continue
            if self._protocol.state is not State.OPEN:
                return
            if self._pong_overdue():
                return
            self._ping_sent()
            self._protocol.send_ping(os.urandom(4))
            try:
                await self._flush()
            except ConnectionClosed:
                return

    def _ping_sent(self) -> None:
        if self._unanswered_since is None:
            self._unanswered_since = trio.current_time()

    def _pong_overdue(self) -> bool:
        # WEBSOCKET_PING_TIMEOUT: the peer has sent nothing (no pong, no message) since a ping
        # at least that old. Data waiting unread in the socket counts as heard: the peer is
        # alive and only this connection's handler is slow to read. If overdue, the socket is
        # closed (the peer sees the connection end; the handler, 1006) and True returned.
        since, timeout = self._unanswered_since, self._ping_timeout
        if since is None or timeout is None or trio.current_time() - since < timeout:
            return False
        if readable(self._stream.socket):
            return False
        peer_warning(
            logger,
            "%s sent nothing, not even a pong, for WEBSOCKET_PING_TIMEOUT (%.0f s) after a "
            "ping; closing the connection",
            self._peer,
            timeout,
        )
        self._stream.socket.close()  # wakes the reader: the connection ends as lost (1006)
        return True

    def ping_nowait(self) -> None:
        """Send a ping (RFC 6455 §5.5.2) now, with one non-blocking write, if the connection is
        open and nothing else is being written; else do nothing (the data under way already
        arms the kernel's ``TCP_USER_TIMEOUT``). Sync: never blocks. Used by the one pinger of
        ``manage.py serve`` (``trio_djws.servers.listener``) instead of a ``keepalive`` task per
        connection. Pongs are not awaited (see ``keepalive``)."""
        if self._protocol.state is not State.OPEN or self._pong_overdue():
            return
        if self._out or self._rest is not None or self._send_lock.locked():
            return
        sock = self._stream.socket
        fd = sock.fileno()
        if fd < 0 or sock.did_shutdown_SHUT_WR:
            return
        self._ping_sent()
        self._protocol.send_ping(os.urandom(4))
        data = b"".join(self._protocol.data_to_send())
        try:
            sent = os.write(fd, data)
        except OSError:
            sent = 0  # the socket is full or gone: the next write of any task sends it
        if sent < len(data):
            self._rest = memoryview(data)[sent:]

    # -- I/O -------------------------------------------------------------------------------

    async def _flush(self, *, slow_consumer: bool = False) -> None:
        # Everything produced so far goes out in one write, in order: the rest of a frame
        # partly written by send_nowait, frames made by send(), then the protocol's own bytes
        # (the response, pongs, a close frame, EOF). Whoever holds the lock takes all pending
        # bytes, including other tasks'. Nothing pending: no lock, no scheduler round trip.
        # A write cut short keeps its rest first in line (_keep); ``slow_consumer`` (the
        # writer's send): its write deadline raises SlowConsumer, the stream stays usable.
        protocol_data = self._protocol.data_to_send()
        if protocol_data:
            self._out += protocol_data
        if not self._out and self._rest is None:
            return
        async with self._send_lock:
            data, self._out = self._out, []
            if self._rest is not None:
                data.insert(0, bytes(self._rest))
                self._rest = None
            if not data:
                return  # written meanwhile by the task that held the lock
            await _write(
                self._stream, data, self._write_timeout, self._keep, slow_consumer=slow_consumer
            )

    def _keep(self, rest: memoryview) -> None:
        # The bytes of a write cut short: first in line for the next write (under the send
        # lock nothing else was written meanwhile, and the fast path waits while _out is not
        # empty).
        if rest:
            self._out.insert(0, bytes(rest))

    async def _read(self) -> None:
        data = await self._receive_some()
        if data:
            self._unanswered_since = None  # the peer is alive (WEBSOCKET_PING_TIMEOUT)
            self._protocol.receive_data(data)
        else:
            self._protocol.receive_eof()
        events = self._protocol.events_received()
        self._pending = iter(events)
        if self._protocol.close_rcvd is not None and any(
            isinstance(e, Frame) and e.opcode in _DATA_OPCODES for e in events
        ):
            # The peer's close frame came with data frames in one read, and the library has
            # already queued its answer (the echo of the close). Held back until the messages
            # before it are decoded: a text message that is not UTF-8 turns it into 1007.
            self._held = self._protocol.data_to_send()
        try:
            await self._flush()  # pongs, the echo of a close frame, a close after an error
        except ConnectionClosed as exc:
            self._done = exc
            return
        self._check_done()

    async def _receive_some(self) -> bytes:
        # One read of at most RECEIVE_BYTES; b"" at EOF or once the connection is lost. After a
        # read that took less than it could, the socket is most likely empty: wait until it is
        # readable first rather than try a read that fails (in request/response traffic that
        # saves a system call and a scheduler round trip per message). A checkpoint.
        if not self._drained:
            try:
                data = await self._stream.receive_some(RECEIVE_BYTES)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            self._drained = len(data) < RECEIVE_BYTES
            return data
        sock = self._stream.socket
        while True:
            if sock.fileno() < 0:
                return b""  # closed by another task (a write deadline): as a lost connection
            try:
                await trio.lowlevel.wait_readable(sock)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return b""
            fd = sock.fileno()
            if fd < 0:
                return b""
            try:
                data = os.read(fd, RECEIVE_BYTES)
            except BlockingIOError:
                continue  # woken without data after all
            except OSError:
                return b""  # reset by the peer: as a lost connection
            self._drained = len(data) < RECEIVE_BYTES
            return data

    def _check_done(self) -> None:
        protocol = self._protocol
        if self._done is not None:
            return
        if protocol.close_rcvd is not None and protocol.parser_exc is None:
            # The peer's own close code and reason (1005 if its close frame had none).
            self._done = ConnectionClosed(protocol.close_rcvd.code, protocol.close_rcvd.reason)
            return
        exc = protocol.parser_exc
        if exc is None:
            return
        sent = protocol.close_sent
        code = sent.code if sent is not None else CloseReason.ABNORMAL_CLOSURE
        reason = sent.reason if sent is not None else "connection lost"
        if isinstance(exc, PayloadTooBig):
            peer_warning(
                logger,
                "message from %s exceeds WEBSOCKET_MAX_MESSAGE_SIZE (%d bytes): %s; "
                "closing with 1009",
                self._peer,
                self._max_size,
                exc,
            )
        elif isinstance(exc, EOFError):
            logger.debug("connection from %s lost without a close frame", self._peer)
        else:
            peer_warning(
                logger, "%s from %s; closing with %d", escape(_describe(exc)), self._peer, code
            )
        self._done = ConnectionClosed(code, reason)

    def _next_message(self) -> Message | None:
        for frame in self._pending:
            if not isinstance(frame, Frame):
                continue
            opcode = frame.opcode
            if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
                if frame.fin:
                    return self._decode(opcode, frame.data)
                self._fragments = bytearray(frame.data)
                self._fragment_opcode = opcode
                if opcode is Opcode.TEXT:
                    # Each fragment is checked as it arrives, so invalid UTF-8 fails the
                    # connection at once (RFC 6455 §8.1), not at the end of the message.
                    self._utf8 = _UTF8_DECODER()
                    self._check_utf8(frame.data, 0)
            elif opcode is Opcode.CONT and self._fragments is not None:
                start = len(self._fragments)
                self._fragments += frame.data
                if self._utf8 is not None:
                    self._check_utf8(frame.data, start, final=frame.fin)
                if frame.fin and self._done is None:
                    data, self._fragments, self._utf8 = self._fragments, None, None
                    return self._decode(self._fragment_opcode, data)
            # PING is answered by the protocol, PONG needs nothing, CLOSE sets close_rcvd.
            if self._done is not None:
                break
        return None

    def _check_utf8(
        self, data: bytes | bytearray | memoryview, offset: int, *, final: bool = False
    ) -> None:
        # One fragment of a text message through the incremental decoder (only validated: the
        # whole message is decoded once complete); invalid UTF-8 fails the connection (1007).
        assert self._utf8 is not None
        try:
            self._utf8.decode(data, final)
        except UnicodeDecodeError as exc:
            self._fail_utf8(offset + exc.start)

    def _decode(self, opcode: Opcode, data: bytes | bytearray | memoryview) -> Message | None:
        if opcode is Opcode.BINARY:
            return data if type(data) is bytes else bytes(data)
        try:
            return str(data, "utf-8")
        except UnicodeDecodeError as exc:
            self._fail_utf8(exc.start)
            return None

    async def _flush_held(self) -> None:
        # The protocol's output held back by _read() (the answer to the peer's close), now.
        if self._held is not None:
            self._release_held()
            with contextlib.suppress(ConnectionClosed):
                await self._flush()

    def _release_held(self) -> None:
        # The protocol's output held back by _read(): written by the next flush.
        if self._held is not None:
            self._out += self._held
            self._held = None

    def _fail_utf8(self, position: int) -> None:
        held = self._held
        if held is not None:
            # The peer's close frame followed in the same read: our answer becomes 1007
            # instead of the library's echo (still unsent), then EOF as the library's was.
            reason = f"invalid UTF-8 at byte {position}"
            peer_warning(
                logger,
                "text message from %s is not valid UTF-8 (%s); closing with 1007",
                self._peer,
                reason,
            )
            close = Close(CloseReason.INVALID_FRAME_PAYLOAD_DATA, reason).serialize()
            self._held = [Frame(Opcode.CLOSE, close).serialize(mask=False), b""]
            self._pending = iter(())
            self._done = ConnectionClosed(CloseReason.INVALID_FRAME_PAYLOAD_DATA, reason)
        elif self._done is None:
            reason = f"invalid UTF-8 at byte {position}"
            peer_warning(
                logger,
                "text message from %s is not valid UTF-8 (%s); closing with 1007",
                self._peer,
                reason,
            )
            if self._protocol.state is State.OPEN:
                self._protocol.fail(CloseReason.INVALID_FRAME_PAYLOAD_DATA, reason)
            self._pending = iter(())
            self._done = ConnectionClosed(CloseReason.INVALID_FRAME_PAYLOAD_DATA, reason)
        self._fragments = self._utf8 = None

    def _closed(self) -> ConnectionClosed:
        if self._done is not None:
            return self._done
        close = self._protocol.close_rcvd or self._protocol.close_sent
        if close is None:
            return ConnectionClosed(CloseReason.ABNORMAL_CLOSURE, "connection lost")
        return ConnectionClosed(close.code, close.reason)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, UnicodeDecodeError):
        return "close reason that is not valid UTF-8"
    if isinstance(exc, ProtocolError):
        return f"protocol error ({exc})"
    return f"{type(exc).__name__} ({exc})"


async def _write(
    stream: trio.SocketStream,
    data: list[bytes],
    seconds: float,
    keep: Callable[[memoryview], None] | None = None,
    *,
    slow_consumer: bool = False,
) -> None:
    # All of ``data`` (in WRITE_CHUNK_BYTES pieces when larger); an empty last chunk
    # (websockets' SEND_EOF) half-closes. A peer that takes no piece for ``seconds``
    # (WEBSOCKET_SEND_TIMEOUT) is a slow consumer; a slow but reading peer makes progress
    # piece by piece and is kept. Written with the socket's own send(), each call of which
    # is a checkpoint that either wrote or (cancelled) did not, so the bytes not written are
    # known exactly when the write is cut short.
    # Cut short (cancelled, e.g. by abort(); or, with ``slow_consumer``, timed out): the rest
    # goes to ``keep``, and the transport writes it first next time, so that a close frame
    # can still follow whole frames (RFC 6455 §5.4). Without ``keep`` nothing more may be
    # written (RFC 6455 §7.1.7): the socket is closed and the peer sees the TCP connection end.
    eof = data[-1] == b""
    payload = b"".join(data)
    view = memoryview(payload)
    sock = stream.socket
    size = len(payload)
    sent = 0
    timed_out = False
    try:
        while sent < size:
            end = min(sent + WRITE_CHUNK_BYTES, size)
            with trio.move_on_after(seconds) as deadline:
                while sent < end:
                    sent += await sock.send(view[sent:end])
            if deadline.cancelled_caught:
                timed_out = True
                break
        else:
            if eof:
                with trio.move_on_after(seconds) as deadline:
                    await stream.send_eof()
                timed_out = deadline.cancelled_caught
    except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
        raise ConnectionClosed(CloseReason.ABNORMAL_CLOSURE, "connection lost") from None
    except trio.Cancelled:
        if keep is not None:
            keep(view[sent:])
        else:
            sock.close()
        raise
    if not timed_out:
        return
    if slow_consumer and keep is not None:
        logger.warning(
            "%s took no data for %.1f s (WEBSOCKET_SEND_TIMEOUT): a slow consumer",
            peer(stream),
            seconds,
        )
        keep(view[sent:])
        raise SlowConsumer
    logger.warning(
        "%s took no data for %.1f s (WEBSOCKET_SEND_TIMEOUT); aborting the connection",
        peer(stream),
        seconds,
    )
    await trio.aclose_forcefully(stream)
    raise ConnectionClosed(CloseReason.ABNORMAL_CLOSURE, "write timed out")


async def _send_status(stream: trio.SocketStream, protocol: ServerProtocol, status: int) -> None:
    # An HTTP response refusing the handshake; the engine closes the stream afterwards.
    phrase = reason_phrase(status)
    body = f"{status} {phrase}\n".encode()
    headers = Headers(
        [
            ("Connection", "close"),
            ("Content-Length", str(len(body))),
            ("Content-Type", "text/plain; charset=utf-8"),
        ]
    )
    response = Response(status, phrase, headers, body)
    if not protocol.eof_sent:
        protocol.send_response(response)
        data = protocol.data_to_send()
    else:  # the protocol gave up on the request (not HTTP at all): answer it ourselves
        data = [response.serialize(), b""]
    try:
        await _write(stream, data, get_settings().close_timeout)
    except ConnectionClosed:
        pass


async def _read_handshake(
    stream: trio.SocketStream, protocol: ServerProtocol, received: bytearray | bytes
) -> tuple[Request, list[Event]] | None:
    # The request and any frames that arrived with it, or None once the connection has been
    # answered (malformed request → 400; oversized lines → the library's 414/431) or lost.
    # ``received``: bytes already read from the stream (by manage.py serve's listener); a
    # bytearray is emptied once parsed.
    data = bytes(received)
    if isinstance(received, bytearray):
        received.clear()
    while True:
        if not data:
            try:
                data = await stream.receive_some(RECEIVE_BYTES)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return None
            if not data:
                return None
        protocol.receive_data(data)
        data = b""
        events = protocol.events_received()
        if events and isinstance(events[0], Request):
            return events[0], events[1:]
        if protocol.handshake_exc is not None:
            peer_warning(
                logger,
                "malformed handshake from %s (%s); HTTP %d",
                peer(stream),
                escape(_handshake_cause(protocol.handshake_exc)),
                _BAD_REQUEST,
            )
            answer = protocol.data_to_send()
            if any(answer[:-1]):  # the library's own 414/431 response, then EOF
                await _write(stream, answer, get_settings().close_timeout)
            else:
                await _send_status(stream, protocol, _BAD_REQUEST)
            return None


def _handshake_cause(exc: BaseException) -> str:
    cause = exc.__cause__ if isinstance(exc, InvalidMessage) and exc.__cause__ else exc
    return f"{exc}: {cause}" if cause is not exc else str(exc)


def _extensions(compression: str | None) -> Sequence[ServerExtensionFactory] | None:
    # WEBSOCKET_COMPRESSION = "deflate": permessage-deflate (RFC 7692) with the library's
    # recommended settings (window 2**12 bytes each way, zlib memLevel 5), offered to every
    # client that asks; None: no extension.
    if compression == "deflate":
        return enable_server_permessage_deflate(None)
    return None


class PingSchedule(Protocol):
    """Pings connections on behalf of their engine (``manage.py serve``'s one pinger)."""

    def add(self, transport: SansIOTransport) -> None:
        """Ping ``transport`` (``ping_nowait()``) every ping interval from now on."""

    def discard(self, transport: SansIOTransport) -> None:
        """Stop pinging ``transport``."""


async def serve_stream(
    stream: trio.SocketStream,
    received: bytearray | bytes = b"",
    pings: PingSchedule | None = None,
) -> None:
    """Serve one accepted TCP connection, from the handshake to the close frame.

    Args:
        stream: the accepted connection; the caller closes it afterwards.
        received: bytes already read from ``stream`` (the start of the handshake request,
            perhaps more), parsed before anything else is read; a ``bytearray`` is emptied
            once parsed (the caller may hold it for the connection's lifetime).
        pings: if given, it pings the connection every ``WEBSOCKET_PING_INTERVAL`` seconds
            while it is open; else the connection runs a ``keepalive`` task of its own.

    A malformed handshake gets HTTP 400 (the library's 414/431 for oversized lines), a
    refused one its status (``serve_websocket``); no handshake within
    ``WEBSOCKET_CLOSE_TIMEOUT`` seconds ends the connection. Raises ``ConnectionClosed``
    when the peer leaves mid-handshake; any other exception is a bug, for the caller to log.
    """
    settings = get_settings()
    protocol = ServerProtocol(
        max_size=settings.max_message_size, extensions=_extensions(settings.compression)
    )
    with trio.move_on_after(settings.close_timeout) as handshake_deadline:
        found = await _read_handshake(stream, protocol, received)
    if handshake_deadline.cancelled_caught:
        logger.info("no handshake from %s within WEBSOCKET_CLOSE_TIMEOUT", peer(stream))
        return
    if found is None:
        return
    request, early = found
    response = protocol.accept(request)
    if response.status_code != 101:
        peer_warning(
            logger,
            "rejected handshake from %s for %r with HTTP %d: %s",
            peer(stream),
            request.path,
            response.status_code,
            escape(str(protocol.handshake_exc)),
        )
        protocol.send_response(response)
        await _write(stream, protocol.data_to_send(), settings.close_timeout)
        return
    offered = [
        item
        for value in request.headers.get_all("Sec-WebSocket-Protocol")
        for item in parse_subprotocol(value)
    ]
    transport = SansIOTransport(stream, protocol, response, early)
    scope = make_scope(request.path, request.headers.raw_items(), offered, stream)
    if settings.ping_interval is None:
        await serve_websocket(transport, scope)
    elif pings is not None:
        pings.add(transport)
        try:
            await serve_websocket(transport, scope)
        finally:
            pings.discard(transport)
    else:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(transport.keepalive, settings.ping_interval)
            await serve_websocket(transport, scope)
            nursery.cancel_scope.cancel()


# WEBSOCKET_ENGINE = "websockets": trio.serve_listeners + ServerProtocol.
ENGINE: Final = StreamEngine("websockets", serve_stream)
