"""The in-process broker: the default; group messages reach this process's members only."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING

import trio

from .. import instrument
from ..groups import Groups
from ..history import HistoryPolicy, JoinResult, Position, history_policy, json_with_position
from ..typing import Message
from .handover import HistoryRead, Pause, join_with_history
from .ring import MemoryHistory

if TYPE_CHECKING:
    from .._runtime import Runtime

__all__ = ["InMemoryBroker"]

logger = logging.getLogger(__name__)


class InMemoryBroker:
    """Delivers group messages within one process, with no I/O.

    Presence is this process's own; each change is announced to the group's present
    members at once (``presence.join(..., announce=...)``). Groups with history keep it in
    a ring buffer per group (``trio_djws.brokers.ring``); a new broker (a restarted
    process) starts new epochs.

    Attributes:
        history: the ring buffers of the groups with history.
        hand_over_pause: awaited at each pause point of every hand-over (tests).

    Args:
        groups: the server's group registry.
        config: ``WEBSOCKET_BROKER['CONFIG']`` (no options are read).
    """

    cross_process = False

    def __init__(self, groups: Groups, config: Mapping[str, object] | None = None) -> None:
        self._groups = groups
        self.history = MemoryHistory()
        self.hand_over_pause: Pause | None = None
        groups.watch(self._changed)

    def _changed(self, group: str, presence: bool) -> None:
        if not presence:
            return
        try:
            self._groups.announce(group, self._groups.presence(group))
        except Exception:  # an app's announce renderer: never break a join or a leave
            logger.exception("announcing presence in group %s failed", group)

    async def publish(self, group: str, message: Message, *, json_object: bool = False) -> None:
        """Queue ``message`` for every local member of ``group`` (never blocks). A checkpoint.

        In a group with history the message is kept in the group's ring first, at the next
        offset, and members get it with its position (``json_object``: merged into the
        JSON object ``message`` is the text of; else through the group's formatter).
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        if (observer := instrument.active) is not None:
            observer.broker_event("publish")
        policy = history_policy(group)
        if policy is None:
            self._groups.deliver(group, message)
        else:

            def render(position: Position) -> Message:
                if json_object and isinstance(message, str):
                    return json_with_position(message, position)
                return policy.format(message, position)

            position, rendered = self.history.append(group, policy, render)
            self._groups.deliver_at(group, position.epoch, position.offset, rendered)
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def join_history(
        self,
        runtime: Runtime,
        group: str,
        channel: trio.MemorySendChannel[Message],
        policy: HistoryPolicy,
        since: Position | None,
        *,
        before_messages: Callable[[JoinResult], Awaitable[None]] | None = None,
    ) -> JoinResult:
        """Join ``group`` through the hand-over from its ring (see ``Broker``)."""

        async def read(after: Position | None) -> HistoryRead:
            await trio.lowlevel.checkpoint()
            return self.history.read(group, policy, after)

        return await join_with_history(
            self._groups,
            runtime,
            group,
            channel,
            policy,
            since,
            read=read,
            before_messages=before_messages,
            pause=self.hand_over_pause,
        )

    async def members(self, group: str) -> dict[str, int]:
        """This process's present identities in ``group`` with their connection counts."""
        await trio.lowlevel.checkpoint()
        return self._groups.presence(group)

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Nothing to run in the background: reports started and waits to be cancelled."""
        task_status.started()
        await trio.sleep_forever()
