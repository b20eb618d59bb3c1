"""The ``WebSocket`` object handlers talk to: one per connection, any transport.

Outgoing messages go through the send queue, a bounded ``trio`` memory channel of
``WEBSOCKET_SEND_QUEUE_SIZE`` messages drained by one writer task in the connection's nursery.
The writer starts with the first message queued (or the first ``join``): a connection that
never sends holds no writer task, which keeps idle connections small. That queue is the
backpressure point and the reason queued messages are delivered before a normal close:
``aclose()`` leaves the groups (closing their channel clones), closes the connection's own
send end, lets the writer drain to ``EndOfChannel`` and only then sends the close frame.
"""

from __future__ import annotations

import enum
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from functools import cached_property
from typing import TYPE_CHECKING, Any, Final

import trio
from django.core.serializers.json import DjangoJSONEncoder
from django.http import QueryDict
from django.http.cookie import parse_cookie
from wsproto.frame_protocol import CloseReason

from .conf import get_settings
from .exceptions import ConnectionClosed
from .state import current_server
from .typing import JSONValue, Message, Transport, WebSocketScope

if TYPE_CHECKING:
    from django.contrib.auth.base_user import AbstractBaseUser
    from django.contrib.auth.models import AnonymousUser
    from django.contrib.sessions.backends.base import SessionBase
    from django.http import HttpRequest

    from .state import ServerState

__all__ = ["SyncWebSocket", "WebSocket"]

logger = logging.getLogger(__name__)

_MAX_REASON_BYTES = 123  # RFC 6455 §5.5: a control frame payload is at most 125 bytes
_MESSAGE_TYPES: Final = (str, bytes)  # a tuple: ``str | bytes`` builds a UnionType per call


class _State(enum.IntEnum):
    CONNECTING = 0
    OPEN = 1
    CLOSING = 2
    CLOSED = 3


def _truncate_reason(reason: str) -> str:
    encoded = reason.encode("utf-8")
    if len(encoded) <= _MAX_REASON_BYTES:
        return reason
    return encoded[:_MAX_REASON_BYTES].decode("utf-8", "ignore")


class WebSocket:
    """One WebSocket connection, as its handler sees it.

    Attributes:
        id: unique per connection (a UUID4 hex string).
        scope: the ASGI ``websocket`` scope (built alike by every transport).
        path: the request path.
        kwargs: the values of the namespace's path converters.
        subprotocol: the subprotocol chosen with ``select_subprotocol``, or None.
        close_code: None while open; then the close code (RFC 6455 §7.4): the one sent, or the
            peer's (on Hypercorn a client close always reads 1006: upstream issue 127).
        close_reason: the close reason text.
        request: Django's ``HttpRequest`` of the handshake after ``WEBSOCKET_MIDDLEWARE`` ran
            (``DjangoMiddlewareMixin``), else None.
        user: the handshake's user, resolved once at connect (``AnonymousUser`` without a
            login), else None; ``refresh_user()`` reloads it.
        session: the handshake's Django session (``save_session()`` persists changes).
        language: the request's language code (``LocaleMiddleware``, else ``LANGUAGE_CODE``).

    Other attributes may be set on it (per-connection state of a handler or mixin).
    """

    # Slots keep each connection's state small (idle memory); ``__dict__`` stays for the
    # cached properties below and for attributes that handlers set.
    __slots__ = (
        "__dict__",
        "__weakref__",
        "_aborted",
        "_accept_waiter",
        "_cause_logged",
        "_close_sent",
        "_close_timeout",
        "_flush_waiter",
        "_flushed",
        "_groups",
        "_is_accepted",
        "_max_message_size",
        "_nursery",
        "_outbox",
        "_outbox_send",
        "_peer_gone",
        "_receive_done",
        "_receive_scope",
        "_send_now",
        "_send_queue_size",
        "_send_timeout",
        "_server",
        "_state",
        "_transport",
        "_writer_idle",
        "_writer_started",
        "close_code",
        "close_reason",
        "id",
        "kwargs",
        "language",
        "path",
        "request",
        "scope",
        "session",
        "subprotocol",
        "user",
    )

    def __init__(
        self,
        transport: Transport,
        scope: WebSocketScope,
        kwargs: dict[str, Any] | None = None,
        *,
        server: ServerState | None = None,
    ) -> None:
        self.id = uuid.uuid4().hex
        self.scope = scope
        self.path = scope["path"]
        self.kwargs: dict[str, Any] = kwargs or {}
        self.subprotocol: str | None = None
        self.close_code: int | None = None
        self.close_reason = ""
        # Set by DjangoMiddlewareMixin (trio_djws.auth), in a worker thread at connect.
        self.request: HttpRequest | None = None
        self.user: AbstractBaseUser | AnonymousUser | None = None
        self.session: SessionBase | None = None
        self.language: str | None = None
        self._transport = transport
        self._server = server if server is not None else current_server()
        settings = get_settings()
        self._send_timeout = settings.send_timeout
        self._close_timeout = settings.close_timeout
        # The send queue is opened with the first message or join (_open_outbox), like the
        # writer: an idle connection holds neither (about 2 KiB less per connection).
        self._send_queue_size = settings.send_queue_size
        self._max_message_size = settings.max_message_size
        self._outbox_send: trio.MemorySendChannel[Message] | None = None
        self._outbox: trio.MemoryReceiveChannel[Message] | None = None
        self._groups: set[str] | None = None  # made by the first join
        self._state = _State.CONNECTING
        # Events only for a task that has to wait (most connections never need one).
        self._is_accepted = False
        self._accept_waiter: trio.Event | None = None
        self._flushed = False
        self._flush_waiter: trio.Event | None = None
        self._nursery: trio.Nursery | None = None
        self._writer_started = False  # started lazily: see _start_writer
        # The transport's optional fast path (see _queue_nowait) and whether the writer waits
        # on an empty send queue with nothing being written.
        self._send_now: Callable[[Message], None] | None = getattr(transport, "send_nowait", None)
        self._writer_idle = False
        self._receive_scope: trio.CancelScope | None = None
        self._aborted = False
        self._peer_gone = False
        self._receive_done = False  # the peer left or sent a message too big: stop receiving
        self._close_sent = False
        self._cause_logged = False  # a non-1000/1001 close whose cause is already logged

    def __repr__(self) -> str:
        return f"<WebSocket {self.id} {self.path!r} {self._state.name}>"

    # -- request data ----------------------------------------------------------------------

    @cached_property
    def headers(self) -> dict[str, str]:
        """Handshake headers, names lower-cased; repeated headers joined with ``", "``."""
        headers: dict[str, str] = {}
        for raw_name, raw_value in self.scope["headers"]:
            name = raw_name.decode("latin-1").lower()
            value = raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        return headers

    @cached_property
    def query(self) -> QueryDict:
        """The query string as an immutable Django ``QueryDict``."""
        return QueryDict(self.scope["query_string"].decode("latin-1"))

    @cached_property
    def cookies(self) -> dict[str, str]:
        """Cookies from the handshake's ``Cookie`` header (Django's ``parse_cookie``)."""
        return parse_cookie(self.headers.get("cookie", ""))

    @cached_property
    def sync(self) -> SyncWebSocket:
        """Blocking ``send``/``send_json``/``close`` for plain ``def`` hooks (worker threads)."""
        return SyncWebSocket(self)

    @property
    def closed(self) -> bool:
        """True once closing has begun (by either side)."""
        return self._state >= _State.CLOSING

    def select_subprotocol(self, name: str) -> None:
        """Choose the subprotocol to accept with (RFC 6455 §4.2.2, Sec-WebSocket-Protocol).

        Call it in ``on_connect``, before the handshake is accepted.

        Raises:
            ValueError: the client did not offer ``name``.
            RuntimeError: the handshake was already accepted.
        """
        offered = list(self.scope.get("subprotocols", ()))
        if name not in offered:
            raise ValueError(
                f"subprotocol {name!r} was not offered by the client; offered: {offered}"
            )
        if self._state is not _State.CONNECTING:
            raise RuntimeError(
                "select_subprotocol() must be called before the handshake is accepted"
            )
        self.subprotocol = name

    async def refresh_user(self) -> None:
        """Reload ``session`` and ``user`` from the session store (in a worker thread); see
        ``trio_djws.auth.refresh_user``. A checkpoint.

        Raises:
            RuntimeError: the handler has no ``DjangoMiddlewareMixin``.
        """
        from .auth import refresh_user

        await refresh_user(self)

    async def save_session(self) -> None:
        """Persist changes to ``session`` (in a worker thread); see
        ``trio_djws.auth.save_session``. A checkpoint.

        Raises:
            RuntimeError: there is no session (no ``DjangoMiddlewareMixin``).
        """
        from .auth import save_session

        await save_session(self)

    # -- sending ---------------------------------------------------------------------------

    async def send(self, message: Message) -> None:
        """Queue one message for this client: ``str`` as a text frame, ``bytes`` as binary.

        Waits while the send queue (WEBSOCKET_SEND_QUEUE_SIZE messages) is full; this is the
        backpressure point. If it stays full for WEBSOCKET_SEND_TIMEOUT seconds the connection
        is aborted with 1008 "slow consumer" (RFC 6455 §7.4.1). Sent during ``on_connect``, it
        waits in the queue and goes out right after the accept; if ``on_connect`` queues more
        than the queue holds, the handshake is accepted at that point (only the client can
        drain the queue), so a ``Reject`` raised after that closes with 1008. Always a
        checkpoint; if cancelled, nothing was queued.

        Raises:
            TypeError: ``message`` is neither ``str`` nor ``bytes``.
            ConnectionClosed: the connection is closing or closed; ``exc.code`` is the close
                code (1001 on server shutdown, 1006 if the peer vanished, 1008 slow consumer).
        """
        if not isinstance(message, _MESSAGE_TYPES):
            raise TypeError(f"send() expects str or bytes, got {type(message).__name__}")
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._peer_gone:
            raise self._closed_error()
        try:
            self._queue_nowait(self._outbox_send or self._open_outbox(), message)
        except trio.WouldBlock:
            pass
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise self._closed_error() from None
        else:
            if not self._writer_started:
                self._start_writer()
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        self._start_writer()  # a full queue always has a writer to drain it
        if self._state is _State.CONNECTING:
            # on_connect filled the queue before the accept: only the writer can make room,
            # and it starts at the accept. Waiting here would stall the handshake until the
            # slow-consumer deadline and then abort a client that never had a chance to read.
            await self._accept()
        with trio.move_on_after(self._send_timeout) as deadline:
            try:
                await self._open_outbox().send(message)
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                raise self._closed_error() from None
        if deadline.cancelled_caught:
            self.abort(CloseReason.POLICY_VIOLATION, "slow consumer")
            raise self._closed_error()

    async def send_json(self, data: JSONValue) -> None:
        """Send ``data`` encoded with Django's ``DjangoJSONEncoder`` as one text frame
        (datetimes as ISO 8601 with their timezone). Same waits and errors as ``send``."""
        await self.send(json.dumps(data, cls=DjangoJSONEncoder))

    def _closed_error(self) -> ConnectionClosed:
        return ConnectionClosed(
            self.close_code if self.close_code is not None else CloseReason.ABNORMAL_CLOSURE,
            self.close_reason,
        )

    # -- closing ---------------------------------------------------------------------------

    async def close(self, code: int = CloseReason.NORMAL_CLOSURE, reason: str = "") -> None:
        """Close the connection: queued messages are sent first, then the close frame.

        Idempotent: later calls do nothing. Stops the receive loop, so called from
        ``on_message`` it ends that hook at its next checkpoint; ``on_close`` then runs.
        Called in ``on_connect``, the handshake is refused with HTTP 403 instead.

        Args:
            code: the close code (RFC 6455 §7.4.1), 1000 by default.
            reason: at most 123 bytes of UTF-8 (longer is cut).
        """
        self.close_nowait(code, reason)
        await trio.lowlevel.checkpoint()

    def close_nowait(self, code: int = CloseReason.NORMAL_CLOSURE, reason: str = "") -> None:
        """``close()`` without the checkpoint: safe from sync code in the trio thread."""
        if self._state >= _State.CLOSING:
            return
        self._set_closing(code, reason)
        if self._receive_scope is not None:
            self._receive_scope.cancel()

    def _set_closing(self, code: int, reason: str) -> None:
        # Record why the connection closes; the close frame carries these once flushed.
        self.close_code = code
        self.close_reason = _truncate_reason(reason)
        self._state = max(self._state, _State.CLOSING)

    def abort(self, code: int, reason: str) -> None:
        """Close at once without flushing the send queue (slow consumer, policy violation).

        Cancels every task of the connection; ``on_close`` still runs. Logged as a WARNING.
        Sync and idempotent.
        """
        if self._aborted:
            return
        self._aborted = True
        self._cause_logged = True
        if self._state < _State.CLOSING or self.close_code in (None, CloseReason.NORMAL_CLOSURE):
            self._set_closing(code, reason)
        self._state = max(self._state, _State.CLOSING)
        logger.warning(
            "aborting connection %s on %r: close code %d (%r)", self.id, self.path, code, reason
        )
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    def _fail(self, code: int, reason: str) -> None:
        # A hook or background task failed: close with ``code`` (1011) after flushing; this
        # overrides a normal close already under way, but not an abort. The caller has logged
        # the cause.
        if self._aborted:
            return
        self._cause_logged = True
        self._set_closing(code, reason)
        if self._receive_scope is not None:
            self._receive_scope.cancel()

    # -- groups ----------------------------------------------------------------------------

    async def join(self, group: str) -> None:
        """Become a member of ``group``: messages sent to it reach this connection.

        The membership holds its own clone of the send queue's channel. Left automatically
        when the connection ends. A checkpoint.

        Raises:
            ConnectionClosed: the connection is closing.
        """
        await trio.lowlevel.checkpoint()
        if self._state >= _State.CLOSING:
            raise self._closed_error()
        if self._groups is None:
            self._groups = set()
        elif group in self._groups:
            return
        self._groups.add(group)
        # Group messages enter the queue through the membership's clone, not send(): the
        # writer must run from now on.
        self._start_writer()
        self._server.groups.add(group, self, self._open_outbox().clone())

    async def leave(self, group: str) -> None:
        """Stop being a member of ``group``; no error if not a member. A checkpoint."""
        await trio.lowlevel.checkpoint()
        self._leave(group)

    def _leave(self, group: str) -> None:
        if self._groups is not None and group in self._groups:
            self._groups.discard(group)
            self._server.groups.discard(group, self)

    @property
    def groups(self) -> frozenset[str]:
        """The groups this connection is a member of."""
        return frozenset(self._groups or ())

    # -- tasks -----------------------------------------------------------------------------

    def start_soon(self, fn: Callable[..., Awaitable[object]], *args: object) -> None:
        """Run ``fn(*args)`` as a background task owned by this connection's nursery.

        The task is cancelled when the connection ends. An exception from it closes the
        connection with 1011 and is logged with its traceback, like a hook's.

        Raises:
            RuntimeError: the connection's nursery is not running (it has ended).
        """
        if self._nursery is None:
            raise RuntimeError("start_soon() needs a running connection; this one has ended")
        self._nursery.start_soon(self._guarded, fn, *args)

    async def _guarded(self, fn: Callable[..., Awaitable[object]], *args: object) -> None:
        try:
            await fn(*args)
        except ConnectionClosed:
            pass
        except Exception:
            logger.exception(
                "background task %s of connection %s on %r failed; closing with 1011",
                getattr(fn, "__qualname__", fn),
                self.id,
                self.path,
            )
            self._fail(CloseReason.INTERNAL_ERROR, "internal error")

    # -- driven by serve_connection ----------------------------------------------------------

    def _attach(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery

    def _open_outbox(self) -> trio.MemorySendChannel[Message]:
        # The send end of the send queue, opened on first use.
        if self._outbox_send is None:
            self._outbox_send, self._outbox = trio.open_memory_channel[Message](
                self._send_queue_size
            )
        return self._outbox_send

    def _start_writer(self) -> None:
        # Called wherever a message can enter the send queue (send(), join()) and by aclose():
        # a connection that never sends never pays for a writer task (idle memory). Once
        # started it runs until the queue is closed and drained, so order is kept.
        if self._writer_started or self._nursery is None:
            return
        self._writer_started = True
        self._nursery.start_soon(self._writer)

    async def _writer(self) -> None:
        send = self._transport.send
        outbox = self._outbox
        assert outbox is not None  # the writer starts only once something was queued
        try:
            await self._wait_accepted()
            async with outbox:  # the writer owns the receive end
                while True:
                    # Take what is already queued without a scheduler round trip (each
                    # transport send is a checkpoint); park only on an empty queue. While
                    # parked, _queue_nowait may write for this task (a transport with
                    # ``send_nowait``); whoever hands it a message clears _writer_idle first,
                    # so nothing overtakes a message it has not written yet.
                    try:
                        message = outbox.receive_nowait()
                    except trio.WouldBlock:
                        self._writer_idle = True
                        try:
                            message = await outbox.receive()
                        except trio.EndOfChannel:
                            break
                        finally:
                            self._writer_idle = False
                    except trio.EndOfChannel:
                        break
                    await send(message)
        except ConnectionClosed as exc:
            self._on_peer_gone(exc.code, exc.reason)
        finally:
            self._flushed = True
            if self._flush_waiter is not None:
                self._flush_waiter.set()

    def _queue_nowait(self, channel: trio.MemorySendChannel[Message], message: Message) -> None:
        # Queue ``message`` on ``channel`` (the send queue or a group's clone of it), raising
        # as its send_nowait does. With a transport that can write at once (``send_nowait``,
        # the standalone ``websockets`` engine), a message that would only wake an idle writer
        # on an empty queue is written by this task instead: same order, no task wake-up.
        send_now = self._send_now
        if self._writer_idle and send_now is not None and self._state is _State.OPEN:
            self._writer_idle = False  # until it is written: anything sent meanwhile queues
            try:
                send_now(message)
            except trio.WouldBlock:
                pass  # the writer takes it from the queue (the rest of it, if written in part)
            else:
                self._writer_idle = True
                return
        channel.send_nowait(message)

    def _on_peer_gone(self, code: int, reason: str) -> None:
        # The peer closed or vanished. Sends raise ConnectionClosed from now on, so a hook that
        # streams to the client stops at its next send; messages that arrived before the
        # disconnect are still handled, and a hook still running after WEBSOCKET_CLOSE_TIMEOUT
        # seconds is cancelled (as a drain bounds a shutdown), so nothing waits for a client
        # that has gone. A disconnect that answers our own close frame is a normal closing
        # handshake, not a vanished peer.
        if self._close_sent:
            return
        self._peer_gone = True
        if self._state < _State.CLOSING:
            self.close_code = code
            self.close_reason = reason
            self._state = _State.CLOSING
        if self._receive_scope is not None:
            self._receive_scope.deadline = min(
                self._receive_scope.deadline, trio.current_time() + self._close_timeout
            )

    async def _accept(self) -> None:
        # Called by serve_connection after on_connect, or earlier by send() when on_connect
        # fills the send queue; the state changes before the await so that it runs once.
        if self._state is not _State.CONNECTING:
            return
        self._state = _State.OPEN
        await self._transport.accept(self.subprotocol)
        self._is_accepted = True
        if self._accept_waiter is not None:
            self._accept_waiter.set()
        logger.info("accepted %s on %r", self.id, self.path)

    async def _wait_accepted(self) -> None:
        # Until the handshake is accepted; a checkpoint.
        if self._is_accepted:
            await trio.lowlevel.checkpoint()
            return
        if self._accept_waiter is None:
            self._accept_waiter = trio.Event()
        await self._accept_waiter.wait()

    async def _receive_loop(
        self, on_message: Callable[[WebSocket, Message], Awaitable[None]]
    ) -> None:
        # Messages are handled in order on this task. Until the first message arrives this task
        # receives by itself: no hook is running, so a departed peer is noticed right here, and
        # an idle connection holds no reader task and no hand-over channel (idle memory). From
        # the first message on, a reader task keeps receiving while a hook runs, even for
        # send-only handlers: after a disconnect Hypercorn's send silently does nothing, so the
        # receive side is how a connection learns it is gone. The hand-over channel has no
        # buffer: the reader takes the next message only once the previous one is being
        # handled (Hypercorn's own queue is the backpressure).
        with trio.CancelScope() as self._receive_scope:
            if self._state >= _State.CLOSING or self._nursery is None:
                return
            message = None
            try:
                # _receive_one inlined: one coroutine frame less held by every idle connection.
                try:
                    message = await self._transport.receive()
                except ConnectionClosed as exc:
                    self._peer_left(exc)
                else:
                    if len(message) > self._max_message_size // 4 and self._too_big(message):
                        message = None
            finally:
                if (message is None or self._state >= _State.CLOSING) and self._reader_needed():
                    # Closing (close(), a failure or a shutdown) before any message: as with
                    # a reader below, receiving goes on (the messages dropped) so that a
                    # disconnect during on_close and the flush is still noticed.
                    self._nursery.start_soon(self._guarded, self._reader, None)
            if message is None or self._state >= _State.CLOSING:
                return
            inbox_send, inbox = trio.open_memory_channel[Message](0)
            self._nursery.start_soon(self._guarded, self._reader, inbox_send)
            receive = inbox.receive
            async with inbox:
                await on_message(self, message)
                while True:
                    try:
                        message = await receive()
                    except trio.EndOfChannel:
                        break
                    await on_message(self, message)

    def _reader_needed(self) -> bool:
        # After the receive loop stopped receiving by itself: whether it stopped because the
        # connection is closing while the peer is still there (not gone, not 1009).
        return (
            self._state >= _State.CLOSING
            and not self._peer_gone
            and not self._receive_done
            and self._nursery is not None
        )

    async def _receive_one(self) -> Message | None:
        # The next message, or None once receiving is over: the peer left (its close code is
        # recorded) or sent a message over WEBSOCKET_MAX_MESSAGE_SIZE (closing with 1009).
        try:
            message = await self._transport.receive()
        except ConnectionClosed as exc:
            self._peer_left(exc)
            return None
        if len(message) > self._max_message_size // 4 and self._too_big(message):
            return None
        return message

    def _peer_left(self, exc: ConnectionClosed) -> None:
        self._receive_done = True
        self._on_peer_gone(exc.code, exc.reason)

    def _too_big(self, message: Message) -> bool:
        # Whether ``message`` (at least a quarter of the limit long) exceeds
        # WEBSOCKET_MAX_MESSAGE_SIZE in bytes; if so receiving stops and the connection closes
        # with 1009, in order: a hook still handling an earlier message finishes first, then
        # the receive loop ends and the close frame follows.
        size = len(message.encode("utf-8")) if isinstance(message, str) else len(message)
        if size <= self._max_message_size:
            return False
        self._receive_done = True
        logger.warning(
            "message of %d bytes on %r exceeds WEBSOCKET_MAX_MESSAGE_SIZE (%d bytes); "
            "closing with 1009",
            size,
            self.path,
            self._max_message_size,
        )
        if self._state < _State.CLOSING:
            self._cause_logged = True
            self._set_closing(CloseReason.MESSAGE_TOO_BIG, "message too big")
        return True

    async def _reader(self, inbox: trio.MemorySendChannel[Message] | None) -> None:
        # Runs until the peer leaves or the connection's nursery is cancelled at its end.
        # Without an inbox (the connection is closing) every message is dropped.
        if inbox is None:
            while await self._receive_one() is not None:
                pass
            return
        receive = self._transport.receive
        quarter = self._max_message_size // 4
        with inbox:  # the reader owns the send end: closing it ends the receive loop
            while True:  # _receive_one inlined: this is the per-message path
                try:
                    message = await receive()
                except ConnectionClosed as exc:
                    self._peer_left(exc)
                    return
                if len(message) > quarter and self._too_big(message):
                    return
                try:
                    # The receive loop is usually already waiting: hand over without a
                    # scheduler round trip (the next receive() is this task's checkpoint).
                    inbox.send_nowait(message)
                except trio.WouldBlock:
                    try:
                        await inbox.send(message)
                    except trio.BrokenResourceError:
                        pass  # closing: dropped, but a disconnect is still noticed
                except trio.BrokenResourceError:
                    pass  # closing: messages are dropped, but a disconnect is still noticed

    async def aclose(self) -> None:
        """Leave all groups, flush the send queue (WEBSOCKET_CLOSE_TIMEOUT seconds at most),
        then send the close frame. Idempotent. Used by serve_connection; handlers call
        ``close()``."""
        if self._state is _State.CLOSED:
            return
        if self.close_code is None:
            self.close_code = CloseReason.NORMAL_CLOSURE
        self._state = _State.CLOSING
        for group in list(self._groups or ()):
            self._leave(group)
        self._open_outbox().close()  # opened if it never was, so later sends raise
        if not self._writer_started:
            # Nothing was ever queued (every way into the queue starts the writer): there is
            # nothing to flush, and the receive end is ours to close.
            self._writer_started = True
            if self._outbox is not None:
                self._outbox.close()
            self._flushed = True
        if not self._is_accepted:
            self._state = _State.CLOSED
            return
        if not (self._aborted or self._peer_gone):
            with trio.move_on_after(get_settings().close_timeout) as flush:
                if not self._flushed:
                    self._flush_waiter = trio.Event()
                    await self._flush_waiter.wait()
            if flush.cancelled_caught:
                logger.warning(
                    "connection %s on %r: send queue not flushed within WEBSOCKET_CLOSE_TIMEOUT",
                    self.id,
                    self.path,
                )
        if not self._peer_gone:
            self._close_sent = True
            try:
                await self._transport.close(self.close_code, self.close_reason)
            except ConnectionClosed:
                pass
        self._state = _State.CLOSED


class SyncWebSocket:
    """Blocking access to a ``WebSocket`` from a worker thread started by trio (plain ``def``
    hooks, ``to_thread`` functions), through ``trio.from_thread.run``.

    Raises:
        ConnectionClosed: as the async methods do.
        RuntimeError: called from a thread trio did not start.
    """

    def __init__(self, websocket: WebSocket) -> None:
        self._websocket = websocket

    def send(self, message: Message) -> None:
        """Blocking ``WebSocket.send``."""
        trio.from_thread.run(self._websocket.send, message)

    def send_json(self, data: JSONValue) -> None:
        """Blocking ``WebSocket.send_json``."""
        trio.from_thread.run(self._websocket.send_json, data)

    def close(self, code: int = CloseReason.NORMAL_CLOSURE, reason: str = "") -> None:
        """Start closing (see ``WebSocket.close``); returns at once."""
        trio.from_thread.run_sync(self._websocket.close_nowait, code, reason)

    def join(self, group: str) -> None:
        """Blocking ``WebSocket.join``."""
        trio.from_thread.run(self._websocket.join, group)

    def leave(self, group: str) -> None:
        """Blocking ``WebSocket.leave``."""
        trio.from_thread.run(self._websocket.leave, group)
