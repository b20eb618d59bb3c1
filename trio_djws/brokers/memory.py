"""The in-process broker: the default; group messages reach this process's members only."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import trio

from .. import instrument
from ..groups import Groups
from ..typing import Message

__all__ = ["InMemoryBroker"]

logger = logging.getLogger(__name__)


class InMemoryBroker:
    """Delivers group messages within one process, with no I/O.

    Presence is this process's own; each change is announced to the group's present
    members at once (``presence.join(..., announce=...)``).

    Args:
        groups: the server's group registry.
        config: ``WEBSOCKET_BROKER['CONFIG']`` (no options are read).
    """

    cross_process = False

    def __init__(self, groups: Groups, config: Mapping[str, object] | None = None) -> None:
        self._groups = groups
        groups.watch(self._changed)

    def _changed(self, group: str, presence: bool) -> None:
        if not presence:
            return
        try:
            self._groups.announce(group, self._groups.presence(group))
        except Exception:  # an app's announce renderer: never break a join or a leave
            logger.exception("announcing presence in group %s failed", group)

    async def publish(self, group: str, message: Message) -> None:
        """Queue ``message`` for every local member of ``group`` (never blocks). A checkpoint."""
        await trio.lowlevel.checkpoint_if_cancelled()
        if (observer := instrument.active) is not None:
            observer.broker_event("publish")
        self._groups.deliver(group, message)
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def members(self, group: str) -> dict[str, int]:
        """This process's present identities in ``group`` with their connection counts."""
        await trio.lowlevel.checkpoint()
        return self._groups.presence(group)

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Nothing to run in the background: reports started and waits to be cancelled."""
        task_status.started()
        await trio.sleep_forever()
