r"""Internal: the connection runtime behind each public ``WebSocket`` (not part of the API).

One ``Runtime`` per connection holds what the ``WebSocket`` facade hides: the state machine,
the send queue and its writer task; its receive side is ``trio_djws._receive``.

The send queue is a bounded ``trio`` memory channel of ``WEBSOCKET_SEND_QUEUE_SIZE`` messages
drained by one writer task in the connection's nursery. Both start with the first message
queued (or the first ``join``): a connection that never sends holds neither (idle memory).
That queue is the backpressure point and the reason queued messages are delivered before a
normal close: ``aclose()`` leaves the groups (closing their channel clones), closes the
connection's own send end, lets the writer drain to ``EndOfChannel`` and only then sends the
close frame.

Group messages that find the queue full are held in order (``trio_djws._overflow``) with
the ``WEBSOCKET_SEND_TIMEOUT`` that ``send()`` gets to wait for room.

``State`` (closing has begun in every state from ``REFUSING`` on)::

    CONNECTING -> ACCEPTING -> OPEN -> CLOSING -> CLOSED    close, abort, failure, 1009
                                  \--> GONE ----> CLOSED    the peer closed or vanished
    CONNECTING/ACCEPTING -> REFUSING -> REFUSED             closing before the accept
    (REFUSING -> CLOSING when an accept under way completes; CLOSING -> GONE if the peer
    leaves before our close frame)

``Cause`` says why, set when closing begins: ``CLOSE`` (``close()``, a drain, the handler's
end), ``PEER`` (the peer left, also during a ``CLOSE``), or one logged where it happened:
``TOO_BIG`` (1009), ``FAILED`` (a hook or task failed: 1011; a late ``Reject``: 1008),
``ABORTED`` (``abort()``: no flush).

Internal interface (other modules use these names only, never a leading-underscore member):
the facade (``trio_djws.websocket``) is made over a ``Runtime(transport, server)`` and calls
the methods behind its public ones; ``connection`` uses ``attach``, ``handler``, ``counts``,
``accept``, ``accepted``, ``fail``, ``cause`` and ``_receive.receive_loop``; ``groups`` uses
``websocket``, ``queue_nowait``, ``abort`` and ``resync``; the brokers' history hand-over
uses ``websocket``; ``views`` uses ``accept``,
``wait_accepted`` and ``fail``; ``state`` maps live connections to runtimes (``runtime_of``).

Why one module of more than 450 lines: the state machine, the send queue with its writer and
the group memberships are one connection's state under one rule (closing begins once, and the
queue drains before the close frame), held in ``Runtime``'s slots; the receive side
(``trio_djws._receive``) and the overflow of group messages (``trio_djws._overflow``) are
already apart.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final

import trio
from wsproto.frame_protocol import CloseReason

from ._overflow import Overflow
from .conf import get_settings
from .exceptions import ConnectionClosed, SlowConsumer
from .history import HistoryPolicy, JoinResult, Position
from .typing import Message, Transport

if TYPE_CHECKING:
    from .handler import BaseWSClass
    from .instrument import MessageCounts
    from .state import ServerState
    from .websocket import WebSocket

__all__ = ["Cause", "Runtime", "State"]

logger = logging.getLogger("trio_djws.websocket")  # the facade's logger: one name per concept

_MAX_REASON_BYTES = 123  # RFC 6455 §5.5: a control frame payload is at most 125 bytes
_MESSAGE_TYPES: Final = (str, bytes)  # a tuple: ``str | bytes`` builds a UnionType per call
_NORMAL: Final = CloseReason.NORMAL_CLOSURE


class State(enum.IntEnum):
    """Where a connection is in its life (see the module docstring for the transitions)."""

    CONNECTING = 0  # the handshake is not answered yet: select_subprotocol() still allowed
    ACCEPTING = 1  # transport.accept() is under way
    OPEN = 2  # accepted, nothing closing
    REFUSING = 3  # closing began before the handshake was accepted
    CLOSING = 4  # closing began after the accept: flush the send queue, then the close frame
    GONE = 5  # the peer closed or vanished: no flush, no close frame, sends raise
    CLOSED = 6  # done after the accept (our close frame, if any, is sent)
    REFUSED = 7  # done, never accepted


_ACCEPTED: Final = frozenset({State.OPEN, State.CLOSING, State.GONE, State.CLOSED})


class Cause(enum.Enum):
    """Why a connection closes, set when closing begins (None before)."""

    CLOSE = "close"  # close()/close_nowait(), a drain, the end of the handler
    PEER = "peer"  # the peer closed or vanished (also after a CLOSE already under way)
    TOO_BIG = "too big"  # a message over WEBSOCKET_MAX_MESSAGE_SIZE: 1009, logged
    FAILED = "failed"  # a hook or task failed, or a Reject after the accept: logged there
    ABORTED = "aborted"  # abort(): closed without flushing, logged


def truncate_reason(reason: str) -> str:
    """``reason`` cut to the 123 bytes of UTF-8 a close frame carries (RFC 6455 §5.5)."""
    encoded = reason.encode("utf-8")
    if len(encoded) <= _MAX_REASON_BYTES:
        return reason
    return encoded[:_MAX_REASON_BYTES].decode("utf-8", "ignore")


class Runtime:
    """The state, send queue, writer and receive loop of one connection."""

    # Slots keep each connection small (idle memory).
    __slots__ = (
        "accept_waiter",
        "cause",
        "counts",
        "flush_waiter",
        "groups",
        "handler",
        "nursery",
        "outbox",
        "outbox_send",
        "overflow",
        "receive_scope",
        "send_nowait",
        "server",
        "settings",
        "state",
        "transport",
        "websocket",
        "write_now",
    )

    websocket: WebSocket  # the facade, set by its constructor: WebSocket(runtime, scope, ...)

    def __init__(self, transport: Transport, server: ServerState) -> None:
        self.transport = transport
        self.server = server
        self.settings = get_settings()
        self.state = State.CONNECTING
        self.cause: Cause | None = None
        # The handler instance serving this connection (set by serve_connection): on_resync.
        self.handler: BaseWSClass | None = None
        self.nursery: trio.Nursery | None = None
        # The send queue: opened with the writer by the first message or join (open_queue).
        # ``outbox`` is the writer's end: None before the writer starts and once it is done.
        self.outbox_send: trio.MemorySendChannel[Message] | None = None
        self.outbox: trio.MemoryReceiveChannel[Message] | None = None
        self.groups: set[str] | None = None  # made by the first join
        # Group messages held over a full queue (hold_nowait): None unless behind.
        self.overflow: Overflow | None = None
        # Events only for a task that has to wait (most connections never need one).
        self.accept_waiter: trio.Event | None = None
        self.flush_waiter: trio.Event | None = None
        self.receive_scope: trio.CancelScope | None = None
        # The transport's optional fast path (see queue_nowait), and that same callable while
        # the writer waits on an empty queue of an OPEN connection (else None).
        self.send_nowait: Callable[[Message], None] | None = getattr(transport, "send_nowait", None)
        self.write_now: Callable[[Message], None] | None = None
        # Where messages and bytes are counted while an instrumentation asks (else None).
        self.counts: MessageCounts | None = None

    # -- state -----------------------------------------------------------------------------

    @property
    def accepted(self) -> bool:
        """Whether the handshake was accepted (``transport.accept()`` returned)."""
        return self.state in _ACCEPTED

    def _ids(self) -> tuple[str, str]:
        return self.websocket.id, self.websocket.path  # for log lines

    def closed_error(self) -> ConnectionClosed:
        """The ``ConnectionClosed`` a send on this closing connection raises."""
        code = self.websocket.close_code
        code = CloseReason.ABNORMAL_CLOSURE if code is None else code
        return ConnectionClosed(code, self.websocket.close_reason)

    def _begin_closing(self) -> None:
        # OPEN -> CLOSING, CONNECTING/ACCEPTING -> REFUSING; already closing: unchanged.
        if self.state < State.REFUSING:
            self.state = State.CLOSING if self.state is State.OPEN else State.REFUSING
            self.write_now = None  # the fast path is for OPEN connections only

    def begin_closing(self, cause: Cause, code: int, reason: str) -> None:
        """Record why the connection closes (the close frame carries ``code`` and ``reason``
        once the queue is flushed) and leave OPEN (or CONNECTING)."""
        self.websocket.close_code = code
        self.websocket.close_reason = truncate_reason(reason)
        self.cause = cause
        self._begin_closing()

    def close_nowait(self, code: int, reason: str) -> None:
        """``WebSocket.close_nowait``: start closing, stop the receive loop."""
        if self.state >= State.REFUSING:
            return
        self.begin_closing(Cause.CLOSE, code, reason)
        if self.receive_scope is not None:
            self.receive_scope.cancel()

    def abort(self, code: int, reason: str) -> None:
        """``WebSocket.abort``: close without flushing; cancels every task of the connection."""
        if self.cause is Cause.ABORTED:
            return
        websocket = self.websocket
        if self.state < State.REFUSING or (
            self.state < State.CLOSED and websocket.close_code in (None, _NORMAL)
        ):
            self.begin_closing(Cause.ABORTED, code, reason)
        else:
            # Already closing with its own code, or the close frame is already written
            # (CLOSED): the close code stays the one the peer was sent.
            self.cause = Cause.ABORTED
        logger.warning(
            "aborting connection %s on %r: close code %d (%r)", *self._ids(), code, reason
        )
        if self.nursery is not None:
            self.nursery.cancel_scope.cancel()

    def fail(self, code: int, reason: str) -> None:
        """A hook or background task failed: close with ``code`` after flushing. Overrides a
        normal close already under way, but not an abort. The caller has logged the cause."""
        if self.cause is Cause.ABORTED:
            return
        self.begin_closing(Cause.FAILED, code, reason)
        if self.receive_scope is not None:
            self.receive_scope.cancel()

    def peer_gone(self, code: int, reason: str) -> None:
        """The peer closed or vanished (``code``: its close code, 1006 if it vanished).

        Sends raise ConnectionClosed from now on; messages that arrived before are still
        handled, and a hook still running after WEBSOCKET_CLOSE_TIMEOUT seconds is cancelled
        (as a drain bounds a shutdown). A disconnect that answers our own close frame is a
        normal closing handshake, not a vanished peer."""
        if self.state >= State.CLOSED:
            return
        if self.cause is None:
            self.websocket.close_code, self.websocket.close_reason = code, reason
        if self.cause is None or self.cause is Cause.CLOSE:
            self.cause = Cause.PEER
        self.state = State.GONE
        self.write_now = None
        if self.receive_scope is not None:
            self.receive_scope.deadline = min(
                self.receive_scope.deadline, trio.current_time() + self.settings.close_timeout
            )

    # -- handshake -------------------------------------------------------------------------

    async def accept(self) -> None:
        """Accept the handshake once: called by serve_connection after ``on_connect``, or
        earlier by ``send()`` when ``on_connect`` fills the send queue. Does nothing unless
        CONNECTING (the state changes before the await, so that it runs once)."""
        if self.state is not State.CONNECTING:
            return
        self.state = State.ACCEPTING
        await self.transport.accept(self.websocket.subprotocol)
        # Closing may have begun while the accept was under way (REFUSING): accepted now.
        self.state = State.OPEN if self.state is State.ACCEPTING else State.CLOSING
        if self.accept_waiter is not None:
            self.accept_waiter.set()
        logger.info("accepted %s on %r", *self._ids())

    async def wait_accepted(self) -> None:
        """Wait until the handshake is accepted; a checkpoint."""
        if self.accepted:
            await trio.lowlevel.checkpoint()
            return
        if self.accept_waiter is None:
            self.accept_waiter = trio.Event()
        await self.accept_waiter.wait()

    # -- sending ---------------------------------------------------------------------------

    def attach(self, nursery: trio.Nursery) -> None:
        """Run the connection's tasks (writer, reader, ``start_soon``) in ``nursery``."""
        self.nursery = nursery

    def open_queue(self) -> trio.MemorySendChannel[Message]:
        """The send end of the send queue; the first call (``send``, ``join``) opens it and
        starts the writer, which runs until the queue is closed and drained (order kept)."""
        if self.outbox_send is None:
            self.outbox_send, self.outbox = trio.open_memory_channel[Message](
                self.settings.send_queue_size
            )
            if self.nursery is not None:
                self.nursery.start_soon(self._writer)
        return self.outbox_send

    async def send(self, message: Message) -> None:
        """``WebSocket.send``: queue ``message`` (see its docstring)."""
        if not isinstance(message, _MESSAGE_TYPES):
            raise TypeError(f"send() expects str or bytes, got {type(message).__name__}")
        await trio.lowlevel.checkpoint_if_cancelled()
        if self.state is State.GONE:
            raise self.closed_error()
        try:
            self.queue_nowait(self.outbox_send or self.open_queue(), message)
        except trio.WouldBlock:
            pass
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise self.closed_error() from None
        else:
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        if self.state is State.CONNECTING:
            # on_connect filled the queue before the accept: only the writer can make room,
            # and it starts at the accept. Waiting here would stall the handshake until the
            # slow-consumer deadline and then abort a client that never had a chance to read.
            await self.accept()
        with trio.move_on_after(self.settings.send_timeout) as deadline:
            try:
                while (overflow := self.overflow) is not None:
                    await overflow.caught_up.wait()  # group messages held go first
                await self.open_queue().send(message)
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                raise self.closed_error() from None
        if deadline.cancelled_caught:
            self.abort(CloseReason.POLICY_VIOLATION, "slow consumer")
            raise self.closed_error()

    def queue_nowait(self, channel: trio.MemorySendChannel[Message], message: Message) -> None:
        """Queue ``message`` on ``channel`` (the send queue or a group's clone of it), raising
        as its ``send_nowait`` does.

        With a transport that can write at once (``send_nowait``, the standalone
        ``websockets`` engine), a message that would only wake an idle writer on an empty
        queue is written by this task instead: same order, no task wake-up.
        """
        write_now = self.write_now
        if write_now is not None:
            self.write_now = None  # until it is written: anything sent meanwhile queues
            try:
                write_now(message)
            except trio.WouldBlock:
                pass  # the writer takes it from the queue (the rest of it, if written in part)
            else:
                self.write_now = write_now
                if (counts := self.counts) is not None:
                    counts.count_sent(message)
                return
        channel.send_nowait(message)

    async def _writer(self) -> None:
        send = self.transport.send
        send_nowait = self.send_nowait
        counts = self.counts
        outbox, outbox_send = self.outbox, self.outbox_send
        assert outbox is not None and outbox_send is not None  # the writer starts with them
        try:
            await self.wait_accepted()
            async with outbox:  # the writer owns the receive end
                while True:
                    # Take what is already queued without a scheduler round trip (each
                    # transport send is a checkpoint); park only on an empty queue. While
                    # parked, queue_nowait may write for this task (a transport with
                    # ``send_nowait``); whoever hands it a message disarms write_now first,
                    # so nothing overtakes a message it has not written yet.
                    try:
                        message = outbox.receive_nowait()
                    except trio.WouldBlock:
                        if send_nowait is not None and self.state is State.OPEN:
                            self.write_now = send_nowait
                        try:
                            message = await outbox.receive()
                        except trio.EndOfChannel:
                            break
                        finally:
                            self.write_now = None
                    except trio.EndOfChannel:
                        break
                    overflow = self.overflow  # refilled before any checkpoint (order kept)
                    if overflow is not None and overflow.refill(outbox, outbox_send):
                        self.overflow = None
                    await send(message)
                    if counts is not None:
                        counts.count_sent(message)
        except SlowConsumer as exc:
            # The transport's write deadline: the peer took no data for WEBSOCKET_SEND_TIMEOUT
            # seconds. As a full queue would: 1008, with a bounded chance for the close frame.
            self.abort(exc.code, exc.reason)
        except ConnectionClosed as exc:
            self.peer_gone(exc.code, exc.reason)
        finally:
            self.outbox = None  # flushed (or given up): aclose() need not wait
            if self.overflow is not None:
                self.overflow.drop()
                self.overflow = None
            if self.flush_waiter is not None:
                self.flush_waiter.set()

    # -- group messages over a full queue --------------------------------------------------

    def hold_nowait(self, message: Message) -> bool:
        """A group message found the send queue full: hold it (``trio_djws._overflow``), and
        start the slow-consumer deadline (WEBSOCKET_SEND_TIMEOUT seconds) unless it runs.
        Sync. Returns False if it was dropped: the handshake was refused, the connection
        was aborted or its peer is gone, or the overflow (WEBSOCKET_SEND_QUEUE_SIZE messages)
        was full too, which aborts it with 1008. During a normal close (CLOSING, still in
        its groups until ``aclose`` leaves them) it is held: the flush delivers it before
        the close frame, as it does what is queued."""
        if self.state >= State.REFUSING and not (self.state is State.CLOSING and self._flushing()):
            return False  # nobody will read it; the connection leaves its groups on its own
        overflow = self.overflow
        if overflow is None and self.nursery is not None:
            overflow = self.overflow = Overflow(self.settings.send_queue_size)
            self.nursery.start_soon(overflow.watch, self.settings.send_timeout, self._behind)
        if overflow is not None and overflow.hold_nowait(message):
            return True
        self._behind()
        return False

    def _behind(self) -> None:
        self.abort(CloseReason.POLICY_VIOLATION, "slow consumer")

    # -- groups and tasks ------------------------------------------------------------------

    def join(self, group: str) -> None:
        """``WebSocket.join`` without its checkpoint."""
        if self.state >= State.REFUSING:
            raise self.closed_error()
        if self.groups is None:
            self.groups = set()
        if group in self.groups:
            return
        self.groups.add(group)
        # Group messages enter the queue through the membership's clone, not send(): the
        # queue and its writer must run from now on.
        self.server.groups.add(group, self, self.open_queue().clone())

    async def join_history(
        self,
        group: str,
        policy: HistoryPolicy,
        since: Position | None,
        before_messages: Callable[[JoinResult], Awaitable[None]] | None,
    ) -> JoinResult:
        """``WebSocket.join`` of a group with history: the broker hands the member over from
        the history after ``since`` to live messages."""
        if self.state >= State.REFUSING:
            raise self.closed_error()
        if self.groups is None:
            self.groups = set()
        elif group in self.groups:
            result = JoinResult(False, None)
            if before_messages is not None:
                await before_messages(result)
            return result
        self.groups.add(group)
        return await self.server.broker.join_history(
            self, group, self.open_queue().clone(), policy, since, before_messages=before_messages
        )

    def leave(self, group: str) -> None:
        """``WebSocket.leave`` without its checkpoint."""
        if self.groups is not None and group in self.groups:
            self.groups.discard(group)
            self.server.groups.discard(group, self.websocket)

    def resync(self, group: str) -> None:
        """Run the handler's ``on_resync(websocket, group)`` as a task of this connection
        (after the broker resubscribed ``group`` following a gap); nothing once it ended."""
        handler = self.handler
        if handler is None:
            return
        try:
            self.start_soon(handler.run_on_resync, self.websocket, group)
        except RuntimeError:
            pass  # the connection has ended

    def start_soon(self, fn: Callable[..., Awaitable[object]], *args: object) -> None:
        """``WebSocket.start_soon``: ``fn(*args)`` in the connection's nursery, guarded.

        Raises:
            RuntimeError: the connection's nursery is not running (it has ended).
        """
        if self.nursery is None:
            raise RuntimeError("start_soon() needs a running connection; this one has ended")
        self.nursery.start_soon(self._guarded, fn, *args)

    async def _guarded(self, fn: Callable[..., Awaitable[object]], *args: object) -> None:
        try:
            await fn(*args)
        except ConnectionClosed:
            pass
        except Exception:
            name = getattr(fn, "__qualname__", fn)
            logger.exception(
                "background task %s of connection %s on %r failed; closing with 1011",
                name,
                *self._ids(),
            )
            self.fail(CloseReason.INTERNAL_ERROR, "internal error")

    # -- closing ---------------------------------------------------------------------------

    def _flushing(self) -> bool:
        return not (self.cause is Cause.ABORTED or self.state is State.GONE)

    async def aclose(self) -> None:
        """``WebSocket.aclose``: leave all groups, flush the send queue (within
        WEBSOCKET_CLOSE_TIMEOUT seconds), then send the close frame. Idempotent."""
        if self.state >= State.CLOSED:
            return
        websocket = self.websocket
        if websocket.close_code is None:
            websocket.close_code = CloseReason.NORMAL_CLOSURE
        if self.cause is None:
            self.cause = Cause.CLOSE
        self._begin_closing()
        for group in list(self.groups or ()):
            self.leave(group)
        deadline = trio.current_time() + get_settings().close_timeout
        if self.overflow is not None and self.state is State.CLOSING and self._flushing():
            # Held group messages go before the close frame too: into the queue first.
            with trio.move_on_at(deadline):
                await self.overflow.caught_up.wait()
        if self.outbox_send is None:
            # Nothing was ever queued (every way into the queue opens it with the writer):
            # nothing to flush. A closed queue makes later sends raise.
            self.outbox_send, outbox = trio.open_memory_channel[Message](0)
            outbox.close()
        self.outbox_send.close()
        if self.state is State.REFUSING:
            self.state = State.REFUSED
            return
        if self._flushing():
            with trio.move_on_at(deadline) as flush:
                if self.outbox is not None:  # the writer has not finished
                    self.flush_waiter = trio.Event()
                    await self.flush_waiter.wait()
            if flush.cancelled_caught:
                logger.warning(
                    "connection %s on %r: send queue not flushed within WEBSOCKET_CLOSE_TIMEOUT",
                    *self._ids(),
                )
        if self.state is not State.GONE:
            self.state = State.CLOSED  # from now on a disconnect answers our close frame
            try:
                await self.transport.close(websocket.close_code, websocket.close_reason)
            except ConnectionClosed:
                pass
        self.state = State.CLOSED
