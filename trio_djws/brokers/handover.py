"""Internal: the hand-over from history to live messages, shared by ``trio_djws.brokers``.

The hand-over from a group's history to its live messages, shared by every broker.

A member that rejoins with ``since`` must get every message after ``since`` once, oldest
first, then the live ones, with no duplicate and no gap where the two meet. ``hand_over``
does it in four steps, whatever the broker:

1. **subscribe**: the member is in the group from now on, but its live messages go to a
   ``LiveBuffer`` (at most the history size) instead of its send queue;
2. **read**: the history after ``since`` and the group's position now;
3. **send**: the history entries, awaited one by one (backpressure: a full send queue
   waits, it does not close the member with 1008 as live fan-out does);
4. **drain**: the buffered live messages the history did not have (offset above the last
   one sent), awaited too, until the buffer is empty; then, with no checkpoint in between,
   the member goes live. A gap in the buffer (it overflowed, or a message is missing) is
   filled by reading the history again.

Between the steps ``hand_over`` awaits ``pause(point)`` with ``point`` in ``PAUSE_POINTS``:
tests inject publishes there to prove each interleaving (a broker's ``hand_over_pause``
attribute). Nothing is assumed from the configured history size: ``HistoryRead.first`` is
the real first entry kept.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Literal

import trio

from ..exceptions import BrokerError
from ..history import HistoryPolicy, JoinResult, Position
from ..typing import Message

if TYPE_CHECKING:
    from .._runtime import Runtime
    from ..groups import Groups

__all__: list[str] = []

logger = logging.getLogger(__name__)

PausePoint = Literal["subscribed", "read", "sent", "drained"]
PAUSE_POINTS: Final[tuple[PausePoint, ...]] = ("subscribed", "read", "sent", "drained")
Pause = Callable[[PausePoint], Awaitable[None]]
"""Awaited between the steps of ``hand_over`` (tests inject publishes there)."""


@dataclass(frozen=True)
class Entry:
    """One message of a group's history, as members receive it."""

    offset: int
    """Its offset in the group's current epoch."""
    message: Message
    """The frame to send (its position already merged in or formatted)."""


@dataclass(frozen=True)
class HistoryRead:
    """One read of a group's history."""

    position: Position
    """The group's position at the read: its epoch and last offset (0: no message yet)."""
    first: int
    """Offset of the first entry still kept; ``position.offset + 1`` when none is."""
    entries: list[Entry] = field(default_factory=list)
    """The entries after the ``since`` asked for, oldest first: every one of them when
    ``covers(since)``, else empty."""

    def covers(self, since: Position) -> bool:
        """Whether every message after ``since`` is still kept (same epoch, and the first
        entry kept is at most ``since.offset + 1``)."""
        return (
            since.epoch == self.position.epoch
            and self.first <= since.offset + 1
            and since.offset <= self.position.offset
        )


class LiveBuffer:
    """Live messages of one member during its hand-over, at most ``limit`` of them.

    Past the limit it keeps nothing more and sets ``overflowed``: the hand-over then reads
    the history again instead (bounded memory whatever the publish rate).
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.overflowed = False
        self._entries: list[tuple[str, Entry]] = []

    def append(self, epoch: str, entry: Entry) -> None:
        """Keep one live message (called by the group's fan-out; never blocks)."""
        if len(self._entries) >= self.limit:
            self.overflowed = True
            self._entries.clear()
        if not self.overflowed:
            self._entries.append((epoch, entry))

    def take(self) -> tuple[list[tuple[str, Entry]], bool]:
        """Everything kept so far and whether it overflowed; empties the buffer."""
        entries, overflowed = self._entries, self.overflowed
        self._entries, self.overflowed = [], False
        return entries, overflowed

    def __len__(self) -> int:
        return len(self._entries)


@dataclass(frozen=True)
class HandOverResult:
    """What ``hand_over`` did."""

    result: JoinResult
    """What ``websocket.join`` returns."""
    resync: bool
    """True when the member missed messages after all (the history was lost or trimmed
    past what it needed while it was being caught up): the app's ``on_resync`` is due."""


async def _no_pause(point: PausePoint) -> None:
    return None


async def hand_over(
    since: Position | None,
    *,
    subscribe: Callable[[LiveBuffer], Awaitable[None]],
    read: Callable[[Position | None], Awaitable[HistoryRead]],
    send: Callable[[Message], Awaitable[None]],
    go_live: Callable[[Position], None],
    limit: int,
    before_messages: Callable[[JoinResult], Awaitable[None]] | None = None,
    pause: Pause | None = None,
) -> HandOverResult:
    """Join a group with history and hand the member over from ``since`` to live messages.

    Args:
        since: the last position the member saw, or None (nothing to recover).
        subscribe: makes the member a member whose live messages go to the buffer given;
            returns once live messages are sure to reach it (Redis: subscribed).
        read: reads the history after a position (all entries after it, when covered).
        send: queues one message for the member, waiting while its queue is full.
        go_live: switches the member from its buffer to its send queue (sync: nothing can
            arrive in between), given the last position sent: live messages up to it may
            still come (the broker's subscription can lag behind a history read) and must
            be skipped.
        limit: the most live messages buffered (the group's history size).
        before_messages: awaited with the result once it is known, before the first
            recovered message is sent (e.g. a ``{"type": "recovery"}`` frame); its position
            is the group's at the read (the last message the history sends).
        pause: awaited at each of ``PAUSE_POINTS`` (tests).

    Returns:
        The join result, and whether the member needs a resync after all.

    Raises:
        BrokerError: ``subscribe`` or ``read`` could not reach the broker (the member stays
            subscribed with its buffer: the caller goes live or leaves).
        ConnectionClosed: from ``send``, the member is closing.

    A checkpoint; cancelled, the member may have been sent part of what it missed.
    """
    pause = pause or _no_pause
    buffer = LiveBuffer(limit)
    await subscribe(buffer)
    await pause("subscribed")
    now = await read(since)
    await pause("read")
    recovered = since is not None and now.covers(since)
    epoch = now.position.epoch
    last = since.offset if since is not None and recovered else now.position.offset
    if before_messages is not None:
        # The group's position at the read: what the member has once the history is sent.
        await before_messages(JoinResult(recovered, now.position))
    resync = False
    if recovered:
        for entry in now.entries:
            await send(entry.message)
            last = entry.offset
    await pause("sent")
    while True:
        pending, overflowed = buffer.take()
        if not pending and not overflowed:
            break
        for entry_epoch, entry in pending:
            if entry_epoch != epoch:
                # The history was lost meanwhile (a new epoch): what came before this
                # message in the new epoch is gone. Go on from here; the app resyncs.
                resync = True
                epoch, last = entry_epoch, entry.offset - 1
            if entry.offset <= last:
                continue  # the history had it (or the member's state predates it)
            if entry.offset != last + 1 or overflowed:
                overflowed = True  # a gap: read the history again from the last one sent
                break
            await send(entry.message)
            last = entry.offset
        if overflowed:
            catch_up = await read(Position(epoch, last))
            if not catch_up.covers(Position(epoch, last)):
                logger.warning(
                    "history trimmed or lost during a hand-over: resync after offset %d", last
                )
                resync = True
                epoch, last = catch_up.position.epoch, catch_up.position.offset
            for entry in catch_up.entries:
                await send(entry.message)
                last = entry.offset
    go_live(Position(epoch, last))
    await pause("drained")
    return HandOverResult(JoinResult(recovered, Position(epoch, last)), resync)


async def join_with_history(
    groups: Groups,
    runtime: Runtime,
    group: str,
    channel: trio.MemorySendChannel[Message],
    policy: HistoryPolicy,
    since: Position | None,
    *,
    read: Callable[[Position | None], Awaitable[HistoryRead]],
    subscribed: Callable[[], Awaitable[None]] | None = None,
    before_messages: Callable[[JoinResult], Awaitable[None]] | None = None,
    pause: Pause | None = None,
) -> JoinResult:
    """A broker's ``join_history``: make ``runtime``'s connection a member of ``group``
    (with its ``channel`` clone) through ``hand_over``, held in ``groups`` until it goes
    live.

    Args:
        read: the broker's history read for ``group``.
        subscribed: awaited once the member is in: returns when live messages of the group
            reach this process (Redis: the subscription is acknowledged).

    If the broker cannot be reached (``BrokerError``), the member goes live at once with
    nothing recovered (``JoinResult(False, None)``) and a warning is logged. A member that
    missed messages during its hand-over after all gets ``on_resync``.

    Raises:
        ConnectionClosed: the connection closed during the hand-over.
    """
    websocket = runtime.websocket
    held = False
    announced = False

    async def announce(result: JoinResult) -> None:
        nonlocal announced
        announced = True
        if before_messages is not None:
            await before_messages(result)

    async def subscribe(buffer: LiveBuffer) -> None:
        nonlocal held
        groups.add(group, runtime, channel)
        groups.hold(group, websocket, lambda e, o, m: buffer.append(e, Entry(o, m)))
        held = True
        if subscribed is not None:
            await subscribed()

    def go_live(last: Position | None = None) -> None:
        groups.release(group, websocket, None if last is None else (last.epoch, last.offset))

    try:
        done = await hand_over(
            since,
            subscribe=subscribe,
            read=read,
            send=websocket.send,
            go_live=go_live,
            limit=policy.size,
            before_messages=announce,
            pause=pause,
        )
    except BrokerError as exc:
        go_live()
        if not held:
            raise
        logger.warning("group %s: history not read, nothing recovered (%s)", group, exc)
        result = JoinResult(False, None)
        if not announced:
            await announce(result)
        elif since is not None:
            groups.resync(group, [websocket])  # recovery began, then the broker went away
        return result
    except BaseException:
        go_live()  # e.g. cancelled, or the member closed: stop holding for it
        raise
    if done.resync:
        groups.resync(group, [websocket])
    return done.result
