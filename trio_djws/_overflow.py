"""Internal: group messages held for a connection whose send queue is full (not part of the API).

A group message never waits for a member (``trio_djws.groups``), but a member whose send queue
is full must not lose it either while it may still catch up, nor see it overtaken by what is
queued later. The connection runtime (``trio_djws._runtime``) makes an ``Overflow`` when the
first group message finds the queue full: the message is held there, in order, and the
slow-consumer deadline starts (``WEBSOCKET_SEND_TIMEOUT`` seconds, as ``send()`` waits for
room). The writer moves held messages into the queue as it takes messages out (``refill``),
before any checkpoint, so the queue stays full while anything is held and nothing queued
later can pass them; ``send()`` waits for ``caught_up`` first. The overflow holds as many
messages as the queue (``WEBSOCKET_SEND_QUEUE_SIZE``): a member is at most twice its queue
behind. Once everything held is in the queue, the member has caught up and the runtime drops
the ``Overflow``; held messages still there when the deadline passes, or one more than the
overflow holds, close the connection with 1008 "slow consumer".
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from .typing import Message

__all__ = ["Overflow"]


class Overflow:
    """Group messages held, in order, for one connection whose send queue is full."""

    __slots__ = ("_held", "_hold", "caught_up")

    def __init__(self, size: int) -> None:
        """``size``: the most messages held (``WEBSOCKET_SEND_QUEUE_SIZE``)."""
        self._hold, self._held = trio.open_memory_channel[Message](size)
        self.caught_up = trio.Event()  # set once everything held is queued, or dropped

    def hold_nowait(self, message: Message) -> bool:
        """Hold ``message`` after those held already; False if the overflow is full. Sync."""
        try:
            self._hold.send_nowait(message)
        except trio.WouldBlock:
            return False
        return True

    def refill(
        self, queue: trio.MemoryReceiveChannel[Message], send: trio.MemorySendChannel[Message]
    ) -> bool:
        """Move held messages into the send queue (``queue``, the writer's end, and ``send``)
        while it has room; the writer calls it each time it has taken a message. A ``send()``
        already waiting on the full queue took the room first: it came first. Sync.

        Returns:
            True once nothing is held (``caught_up`` is then set).
        """
        while True:
            statistics = queue.statistics()
            if statistics.current_buffer_used >= statistics.max_buffer_size:
                return False
            try:
                message = self._held.receive_nowait()
            except trio.WouldBlock:
                self.caught_up.set()
                return True
            try:
                send.send_nowait(message)
            except (trio.WouldBlock, trio.ClosedResourceError):
                # Closed without a flush (an abort): dropped with the rest of the queue.
                self.drop()
                return True

    def drop(self) -> None:
        """Give up what is held (the connection is closing without a flush): sets
        ``caught_up``, so that a ``send()`` waiting for it goes on and finds the queue
        closed. Sync."""
        self.caught_up.set()

    async def watch(self, seconds: float, expired: Callable[[], None]) -> None:
        """Call ``expired()`` if ``caught_up`` is not set within ``seconds``
        (``WEBSOCKET_SEND_TIMEOUT``); runs as a task of the connection, cancelled with it."""
        with trio.move_on_after(seconds):
            await self.caught_up.wait()
            return
        expired()
