"""Brokers carry group messages between processes; chosen by ``WEBSOCKET_BROKER``.

A broker satisfies the ``Broker`` Protocol and is built by the server as
``BACKEND(groups, CONFIG)`` from the setting (the shape of Channels' ``CHANNEL_LAYERS``)::

    WEBSOCKET_BROKER = {
        "BACKEND": "trio_djws.brokers.RedisBroker",
        "CONFIG": {"url": "redis://127.0.0.1:6379/0", "prefix": "trio_djws"},
    }

- ``InMemoryBroker`` (the default): one process, nothing to install.
- ``RedisBroker``: Redis pub/sub through coredis, one Redis channel per group, subscribed
  only while this process has members in it (``pip install trio-djws[redis]``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import trio

from ..history import HistoryPolicy, JoinResult, Position
from ..typing import Message
from .memory import InMemoryBroker

if TYPE_CHECKING:
    from .._runtime import Runtime
    from ..groups import Groups
    from .redis import RedisBroker

__all__ = ["Broker", "InMemoryBroker", "RedisBroker"]


@runtime_checkable
class Broker(Protocol):
    """Carries group messages and presence; owned by one server (one trio run).

    Built with ``(groups, config)``: the server's ``Groups`` (the broker watches it for
    first joins, last leaves and presence changes) and ``WEBSOCKET_BROKER['CONFIG']``.
    """

    cross_process: bool
    """Whether messages reach other processes (``manage.py serve --workers`` needs it)."""

    async def publish(self, group: str, message: Message, *, json_object: bool = False) -> None:
        """Deliver ``message`` to every member of ``group`` this broker reaches, each once.

        Local members get it without waiting for any of them; a checkpoint. In a group with
        history (``WEBSOCKET_GROUP_HISTORY``) the message is kept at the next offset first
        and every member gets it in offset order, with its position merged in
        (``json_object``: ``message`` is a JSON object's text) or through the group's
        formatter.

        Raises:
            BrokerError: a history group's message could not be kept (the broker stayed
                unreachable for ``WEBSOCKET_HISTORY_PUBLISH_TIMEOUT`` seconds).
        """
        ...

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
        """``websocket.join`` for a group with history: the member (``runtime``, the
        connection's internal runtime, with its ``channel`` clone) is handed over from the
        history after ``since`` to live messages (``trio_djws.brokers.handover``)."""
        ...

    async def members(self, group: str) -> dict[str, int]:
        """Presence: the identities in ``group`` across the processes this broker reaches,
        each with its number of connections. A checkpoint."""
        ...

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the broker's background work until cancelled (started in the server
        nursery). Reports started at once: no I/O sits on the lifespan startup path."""
        ...


def __getattr__(name: str) -> object:
    # RedisBroker needs the optional coredis/redis packages: imported on first use only.
    if name == "RedisBroker":
        from .redis import RedisBroker

        return RedisBroker
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if TYPE_CHECKING:

    def _both_satisfy_the_protocol(groups: Groups) -> tuple[Broker, Broker]:
        # mypy checks here that both brokers satisfy Broker (tests check it at runtime).
        return InMemoryBroker(groups), RedisBroker(groups)
