"""Groups: named sets of connections, and fan-out to them.

Each membership holds its own ``clone()`` of the member's send channel, so fan-out is a loop
of ``send_nowait`` with no await per member: a slow member never delays the sender or the
others. A message that finds a member's send queue full is held for it, in order, in a
bounded overflow (``WEBSOCKET_SEND_QUEUE_SIZE`` messages more), and the member gets the
``WEBSOCKET_SEND_TIMEOUT`` seconds ``send()`` gets to catch up; still behind then, or with
the overflow full too, it is closed with 1008 "slow consumer" (RFC 6455 §7.4.1). On the
standalone ``websockets`` engine, a member whose writer waits on an empty queue gets the frame
written at once by a non-blocking write, still with no await (the runtime's
``queue_nowait``). Delivery goes through the server's broker
(``WEBSOCKET_BROKER``); with the default in-process broker it is a direct call to
``Groups.deliver``. After a gap in delivery (the Redis broker resubscribed a group),
``Groups.resync`` runs each member's ``on_resync`` hook.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Protocol

import trio
from django.core.serializers.json import DjangoJSONEncoder

from . import instrument
from .typing import JSONValue, Message

if TYPE_CHECKING:
    from ._runtime import Runtime
    from .brokers import Broker
    from .websocket import WebSocket

__all__ = ["send_group_json", "send_to_group"]

logger = logging.getLogger(__name__)

Announce = Callable[[Mapping[str, int]], Message]
"""Renders a group's presence (identity → connection count) as the frame sent on a change."""

GroupWatcher = Callable[[str, bool], None]
"""Called with (group, presence_changed) on every membership change; must not block."""

Hold = Callable[[str, int, Message], None]
"""Takes a history group's live message ``(epoch, offset, message)`` for a member that is
being handed over from the group's history (see ``Groups.hold``); must not block."""


class GroupServer(Protocol):
    """What group sending needs of the server of this trio run (``trio_djws.state``'s
    ``ServerState``): its groups and its broker."""

    @property
    def groups(self) -> Groups: ...

    @property
    def broker(self) -> Broker: ...


_lookup: Callable[[], GroupServer] | None = None


def set_group_server_lookup(lookup: Callable[[], GroupServer]) -> None:
    """Register how ``current_group_server()`` finds the server of the current trio run.
    ``trio_djws.state`` registers ``current_server`` when it is imported (the server state
    sits above this module: it owns the ``Groups``)."""
    global _lookup
    _lookup = lookup


def current_group_server() -> GroupServer:
    """The server of the current trio run, for its groups and broker (made on first use, as
    ``trio_djws.state.current_server``).

    Raises:
        RuntimeError: ``trio_djws.state`` was never imported (no server can exist).
    """
    if _lookup is None:
        raise RuntimeError("no trio_djws server state: trio_djws.state is not imported")
    return _lookup()


class Groups:
    """The groups of one server (one trio run): group name → member → (its runtime, its
    channel clone).

    Attributes:
        overflows: messages that found a member's send queue full (held for it in its
            overflow, or dropped and that member closed with 1008 "slow consumer"); counted
            across all groups.
    """

    def __init__(self) -> None:
        self._members: dict[
            str, dict[WebSocket, tuple[Runtime, trio.MemorySendChannel[Message]]]
        ] = {}
        # Presence: group → member → (identity, announce renderer or None).
        self._present: dict[str, dict[WebSocket, tuple[str, Announce | None]]] = {}
        self._watcher: GroupWatcher | None = None
        # Server-side members (Groups.listen): group → channels offered each message.
        self._listeners: dict[str, list[trio.MemorySendChannel[Message]]] = {}
        # History groups: members being handed over from history to live messages, whose
        # live messages are held (buffered) instead of queued ...
        self._held: dict[str, dict[WebSocket, Hold]] = {}
        # ... and, once released, the last offset each was sent by its hand-over: messages
        # up to it may still reach this process's fan-out (a read of the history can see a
        # message before the broker's subscription delivers it) and are skipped for it.
        self._floors: dict[str, dict[WebSocket, tuple[str, int]]] = {}
        self.overflows = 0

    def watch(self, watcher: GroupWatcher) -> None:
        """Register the one watcher (the broker): called synchronously, on the trio thread,
        after a group's first join and last leave and after each presence change, so it must
        only record the change."""
        self._watcher = watcher

    def _notify(self, group: str, presence: bool) -> None:
        if self._watcher is not None:
            self._watcher(group, presence)

    def add(self, group: str, runtime: Runtime, channel: trio.MemorySendChannel[Message]) -> bool:
        """Add a member (``runtime.websocket``) with its own channel clone; returns False if
        it was already in."""
        first = not self.has_members(group)
        members = self._members.setdefault(group, {})
        websocket = runtime.websocket
        if websocket in members:
            channel.close()
            return False
        members[websocket] = (runtime, channel)
        if first:
            self._notify(group, False)  # the broker subscribes while a group has members
        return True

    def discard(self, group: str, websocket: WebSocket) -> None:
        """Remove a member and close its clone; no error if it was not in."""
        members = self._members.get(group)
        if members is None:
            return
        member = members.pop(websocket, None)
        if member is not None:
            member[1].close()
        self.release(group, websocket)
        last = not members
        if last:
            del self._members[group]
        present = self._present.get(group)
        was_present = present is not None and present.pop(websocket, None) is not None
        if present is not None and not present:
            del self._present[group]
        if member is not None and (last or was_present):
            self._notify(group, was_present)

    def has_members(self, group: str) -> bool:
        """Whether ``group`` has a local member (a connection or a listener)."""
        return group in self._members or group in self._listeners

    @contextmanager
    def listen(self, group: str, channel: trio.MemorySendChannel[Message]) -> Iterator[None]:
        """Make ``channel`` a server-side member of ``group`` for the block: every message
        delivered to ``group`` in this process is offered to it with ``send_nowait`` (dropped
        if it is full or closed: a listener never slows the fan-out). The broker subscribes
        to the group meanwhile, as for a connection. Not a checkpoint."""
        first = not self.has_members(group)
        self._listeners.setdefault(group, []).append(channel)
        if first:
            self._notify(group, False)
        try:
            yield
        finally:
            listeners = self._listeners[group]
            listeners.remove(channel)
            if not listeners:
                del self._listeners[group]
                if not self.has_members(group):
                    self._notify(group, False)

    # -- presence ----------------------------------------------------------------------------

    def set_identity(
        self, group: str, websocket: WebSocket, identity: str, announce: Announce | None
    ) -> None:
        """Count ``websocket`` (a member of ``group``) as present under ``identity``.

        Raises:
            ValueError: ``websocket`` is not a member of ``group``.
        """
        if websocket not in self._members.get(group, ()):
            raise ValueError(f"{websocket!r} must join group {group!r} before presence")
        self._present.setdefault(group, {})[websocket] = (identity, announce)
        self._notify(group, True)

    def presence(self, group: str) -> dict[str, int]:
        """This process's present identities in ``group`` with their connection counts."""
        return dict(Counter(identity for identity, _ in self._present.get(group, {}).values()))

    def presence_groups(self) -> list[str]:
        """The groups with at least one local present member."""
        return list(self._present)

    def announce(self, group: str, members: Mapping[str, int]) -> None:
        """Queue each present member's rendering of ``members`` for it (rendered once per
        renderer, never blocking; full queues are handled as ``deliver`` does)."""
        rendered: dict[Announce, Message] = {}
        channels = self._members.get(group, {})
        for websocket, (_, render) in list(self._present.get(group, {}).items()):
            member = channels.get(websocket)
            if render is None or member is None:
                continue
            if render not in rendered:
                rendered[render] = render(members)
            self._send(member[0], member[1], rendered[render])

    def members(self, group: str) -> list[WebSocket]:
        """The local members of ``group``."""
        return list(self._members.get(group, ()))

    def names(self) -> list[str]:
        """The groups that have at least one local member (a connection or a listener)."""
        return [*self._members, *(g for g in self._listeners if g not in self._members)]

    def deliver(self, group: str, message: Message) -> int:
        """Queue ``message`` for every local member of ``group``, never blocking.

        A member whose send queue is full gets it held in its overflow, and
        ``WEBSOCKET_SEND_TIMEOUT`` seconds to catch up before it is closed with 1008 "slow
        consumer" (at once if its overflow, ``WEBSOCKET_SEND_QUEUE_SIZE`` messages, is full).

        Returns:
            The number of members the message was queued or held for.
        """
        listeners = self._listeners.get(group)
        if listeners is not None:
            for listener in listeners:
                try:
                    listener.send_nowait(message)
                except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
                    pass  # documented: a full or closed listener misses messages
        members = self._members.get(group)
        if not members:
            return 0
        delivered = 0
        for runtime, channel in list(members.values()):
            delivered += self._send(runtime, channel, message)
        observer = instrument.active
        if observer is not None:
            observer.group_delivered(len(members), delivered)
        return delivered

    def deliver_at(self, group: str, epoch: str, offset: int, message: Message) -> int:
        """``deliver`` a history group's message at position ``(epoch, offset)``: members
        being handed over (``hold``) get it in their hand-over buffer instead.

        Returns:
            The number of members the message was queued or held for.
        """
        if group not in self._held and group not in self._floors:
            return self.deliver(group, message)  # nobody handed over: the plain fan-out
        members = self._members.get(group)
        if not members:
            return 0
        held = self._held.get(group, {})
        floors = self._floors.get(group)
        delivered = 0
        for websocket, (runtime, channel) in list(members.items()):
            hold = held.get(websocket)
            if hold is not None:
                hold(epoch, offset, message)
                delivered += 1
                continue
            if floors is not None and websocket in floors:
                floor_epoch, floor = floors[websocket]
                if floor_epoch == epoch and offset <= floor:
                    continue  # its hand-over sent it already
                del floors[websocket]  # messages arrive in offset order: no longer needed
                if not floors:
                    del self._floors[group]
                    floors = None
            delivered += self._send(runtime, channel, message)
        observer = instrument.active
        if observer is not None:
            observer.group_delivered(len(members), delivered)
        return delivered

    def hold(self, group: str, websocket: WebSocket, hold: Hold) -> None:
        """Send ``websocket``'s messages of ``group`` (delivered with ``deliver_at``) to
        ``hold`` until ``release``: its hand-over from the group's history is under way.

        Raises:
            ValueError: ``websocket`` is not a member of ``group``.
        """
        if websocket not in self._members.get(group, ()):
            raise ValueError(f"{websocket!r} must join group {group!r} before a hand-over")
        self._held.setdefault(group, {})[websocket] = hold

    def release(
        self, group: str, websocket: WebSocket, floor: tuple[str, int] | None = None
    ) -> None:
        """End ``hold``: messages of ``group`` are queued for ``websocket`` again (sync, so
        nothing can arrive in between), except those at or below ``floor`` (``(epoch,
        offset)`` of the last message its hand-over sent). No error if it was not held."""
        held = self._held.get(group)
        if held is not None and held.pop(websocket, None) is not None and not held:
            del self._held[group]
        if floor is not None and websocket in self._members.get(group, ()):
            self._floors.setdefault(group, {})[websocket] = floor
        else:
            floors = self._floors.get(group)
            if floors is not None and floors.pop(websocket, None) is not None and not floors:
                del self._floors[group]

    def resync(self, group: str, members: list[WebSocket] | None = None) -> int:
        """Run the ``on_resync(websocket, group)`` hook of ``members`` (default: every local
        member of ``group`` but those being handed over from its history, whose hand-over
        reads the history afterwards and reports what it recovered) as a task of each
        connection: called by a broker that resubscribed ``group`` after a gap, in which
        messages were lost. Members whose connection has ended are skipped.

        Returns:
            The number of members it was run for.
        """
        local = self._members.get(group, {})
        if members is None:
            held = self._held.get(group, {})
            targets = [m for w, m in local.items() if w not in held]
        else:
            targets = [local[w] for w in members if w in local]
        for runtime, _ in targets:
            runtime.resync(group)
        return len(targets)

    def _send(
        self, runtime: Runtime, channel: trio.MemorySendChannel[Message], message: Message
    ) -> int:
        try:
            runtime.queue_nowait(channel, message)
        except trio.WouldBlock:
            # The member is behind: held for it, in order, with WEBSOCKET_SEND_TIMEOUT seconds
            # to catch up (the runtime's hold_nowait), as send() waits for room.
            self.overflows += 1
            if (observer := instrument.active) is not None:
                observer.broker_event("overflow")
            return 1 if runtime.hold_nowait(message) else 0
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass  # the member is closing; it leaves the group on its own
        else:
            return 1
        return 0


async def send_to_group(group: str, message: Message, *, json_object: bool = False) -> None:
    """Send one message to every member of ``group``, on every process the broker reaches.

    Never waits for a member: a member whose send queue is full gets the message held and
    ``WEBSOCKET_SEND_TIMEOUT`` seconds to catch up, then is closed with 1008 "slow consumer"
    (see ``Groups.deliver``). A checkpoint.
    In a group with history the message is kept first and members get it through the
    group's ``FORMATTER`` (unchanged by default), in offset order.

    Args:
        group: the group name.
        message: ``str`` (a text frame) or ``bytes`` (a binary frame), sent unchanged.
        json_object: ``message`` is the JSON text of an object: in a group with history
            members get it with ``"position"`` merged in, as ``send_group_json`` does.

    Raises:
        TypeError: ``message`` is neither ``str`` nor ``bytes``.
        BrokerError: a group with history whose broker stayed unreachable for
            ``WEBSOCKET_HISTORY_PUBLISH_TIMEOUT`` seconds: the message was not sent.
    """
    if not isinstance(message, str | bytes):
        raise TypeError(f"send_to_group expects str or bytes, got {type(message).__name__}")
    await current_group_server().broker.publish(group, message, json_object=json_object)


async def send_group_json(group: str, data: JSONValue) -> None:
    """Encode ``data`` once with Django's ``DjangoJSONEncoder`` and send it as a text frame to
    every member of ``group`` (see ``send_to_group``).

    In a group with history (``WEBSOCKET_GROUP_HISTORY``), a ``dict`` reaches members with
    ``"position": {"epoch": str, "offset": int}`` merged in as its last member, built once
    per message per server process (never per member).

    Raises:
        BrokerError: a history group's message could not be kept (see ``send_to_group``).
    """
    text = json.dumps(data, cls=DjangoJSONEncoder)
    await current_group_server().broker.publish(group, text, json_object=isinstance(data, dict))
