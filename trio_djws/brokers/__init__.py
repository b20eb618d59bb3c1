"""Brokers carry group messages between processes; chosen by ``WEBSOCKET_BROKER``.

A broker satisfies the ``Broker`` Protocol. ``InMemoryBroker`` (the default) delivers within
one process and needs nothing installed.
"""

from __future__ import annotations

from typing import Protocol

from ..typing import Message
from .memory import InMemoryBroker

__all__ = ["Broker", "InMemoryBroker"]


class Broker(Protocol):
    """Carries group messages; owned by one server (one trio run)."""

    cross_process: bool
    """Whether messages reach other processes (``manage.py serve --workers`` needs it)."""

    async def publish(self, group: str, message: Message) -> None:
        """Deliver ``message`` to every member of ``group`` that this broker reaches."""
        ...

    async def serve(self, *, task_status: object = ...) -> None:
        """Run the broker's background work until cancelled (started in the server nursery)."""
        ...
