"""Internal: the receive side of a connection's runtime (not part of the API).

``receive_loop(runtime, on_message)`` is what ``serve_connection`` runs after the accept:
messages are handled in order on its task. Until the first message arrives that task receives
by itself: no hook is running, so a departed peer is noticed right there, and an idle
connection holds no reader task and no hand-over channel (idle memory). From the first
message on, a reader task keeps receiving while a hook runs, even for send-only handlers:
after a disconnect Hypercorn's send silently does nothing, so the receive side is how a
connection learns it is gone. The hand-over channel has no buffer: the reader takes the next
message only once the previous one is being handled (Hypercorn's own queue is the
backpressure).

A message over ``WEBSOCKET_MAX_MESSAGE_SIZE`` bytes stops receiving and closes with 1009, in
order: a hook still handling an earlier message finishes first, then the receive loop ends
and the close frame follows. It uses only the runtime's named interface (``trio_djws._runtime``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import trio
from wsproto.frame_protocol import CloseReason

from ._runtime import Cause, State
from .exceptions import ConnectionClosed
from .log import peer_warning
from .typing import Message

if TYPE_CHECKING:
    from ._runtime import Runtime
    from .websocket import WebSocket

__all__ = ["receive_loop"]

logger = logging.getLogger("trio_djws.websocket")  # the facade's logger, as the runtime's


async def receive_loop(
    runtime: Runtime, on_message: Callable[[WebSocket, Message], Awaitable[None]]
) -> None:
    """Receive and handle messages in order until the peer leaves or closing begins (then
    ``close_nowait``, ``fail`` and a drain cancel it through ``runtime.receive_scope``)."""
    websocket = runtime.websocket
    with trio.CancelScope() as runtime.receive_scope:
        if runtime.state >= State.REFUSING or runtime.nursery is None:
            return
        message = None
        over = False  # receiving ended: the peer left or sent a message too big
        try:
            # _receive_one inlined: one coroutine frame less held by every idle connection.
            try:
                message = await runtime.transport.receive()
            except ConnectionClosed as exc:
                over = True
                runtime.peer_gone(exc.code, exc.reason)
            else:
                if runtime.counts is not None:
                    runtime.counts.count_received(message)
                if len(message) > runtime.settings.max_message_size // 4 and _too_big(
                    runtime, message
                ):
                    message = None
                    over = True
        finally:
            if (
                (message is None or runtime.state >= State.REFUSING)
                and not over
                and runtime.state is State.CLOSING
            ):
                # Closing (close(), a failure or a shutdown) before any message while the peer
                # is still there: as with a reader below, receiving goes on (the messages
                # dropped) so that a disconnect during on_close and the flush is still noticed.
                runtime.start_soon(_reader, runtime, None)
        if message is None or runtime.state >= State.REFUSING:
            return
        inbox_send, inbox = trio.open_memory_channel[Message](0)
        runtime.start_soon(_reader, runtime, inbox_send)
        receive = inbox.receive
        async with inbox:
            await on_message(websocket, message)
            while True:
                try:
                    message = await receive()
                except trio.EndOfChannel:
                    break
                await on_message(websocket, message)


async def _receive_one(runtime: Runtime) -> Message | None:
    # The next message, or None once receiving is over: the peer left (its close code is
    # recorded) or sent a message over WEBSOCKET_MAX_MESSAGE_SIZE (closing with 1009).
    try:
        message = await runtime.transport.receive()
    except ConnectionClosed as exc:
        runtime.peer_gone(exc.code, exc.reason)
        return None
    if runtime.counts is not None:
        runtime.counts.count_received(message)
    if len(message) > runtime.settings.max_message_size // 4 and _too_big(runtime, message):
        return None
    return message


def _too_big(runtime: Runtime, message: Message) -> bool:
    # Whether ``message`` (at least a quarter of the limit long) exceeds
    # WEBSOCKET_MAX_MESSAGE_SIZE in bytes; if so the connection closes with 1009.
    limit = runtime.settings.max_message_size
    size = len(message.encode("utf-8")) if isinstance(message, str) else len(message)
    if size <= limit:
        return False
    peer_warning(
        logger,
        "message of %d bytes on %r exceeds WEBSOCKET_MAX_MESSAGE_SIZE (%d bytes); "
        "closing with 1009",
        size,
        runtime.websocket.path,
        limit,
    )
    if runtime.state < State.REFUSING:
        runtime.begin_closing(Cause.TOO_BIG, CloseReason.MESSAGE_TOO_BIG, "message too big")
    return True


async def _reader(runtime: Runtime, inbox: trio.MemorySendChannel[Message] | None) -> None:
    # Runs until the peer leaves or the connection's nursery is cancelled at its end.
    # Without an inbox (the connection is closing) every message is dropped.
    if inbox is None:
        while await _receive_one(runtime) is not None:
            pass
        return
    receive = runtime.transport.receive
    quarter = runtime.settings.max_message_size // 4
    counts = runtime.counts
    with inbox:  # the reader owns the send end: closing it ends the receive loop
        while True:  # _receive_one inlined: this is the per-message path
            try:
                message = await receive()
            except ConnectionClosed as exc:
                runtime.peer_gone(exc.code, exc.reason)
                return
            if counts is not None:
                counts.count_received(message)
            if len(message) > quarter and _too_big(runtime, message):
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
