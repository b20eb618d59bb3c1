"""The in-process broker: the default; group messages reach this process's members only."""

from __future__ import annotations

from collections.abc import Mapping

import trio

from ..groups import Groups
from ..typing import Message

__all__ = ["InMemoryBroker"]


class InMemoryBroker:
    """Delivers group messages within one process, with no I/O.

    Args:
        groups: the server's group registry.
        options: the ``WEBSOCKET_BROKER`` mapping (no options are read).
    """

    cross_process = False

    def __init__(self, groups: Groups, options: Mapping[str, object] | None = None) -> None:
        self._groups = groups

    async def publish(self, group: str, message: Message) -> None:
        """Queue ``message`` for every local member of ``group`` (never blocks). A checkpoint."""
        await trio.lowlevel.checkpoint_if_cancelled()
        self._groups.deliver(group, message)
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Nothing to run in the background: reports started and waits to be cancelled."""
        task_status.started()
        await trio.sleep_forever()
