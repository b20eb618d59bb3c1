"""Internal: group history of ``trio_djws.brokers.InMemoryBroker``.

The in-memory broker's group history: one bounded ring buffer per group with history.

Each ring holds the last ``SIZE`` messages of its group, already formatted for members
(position merged in), with their offsets. Its epoch is made with it, so a restarted process
(a new broker) always has new epochs: positions from before the restart are never taken for
positions of the new history. A ring unused for ``TTL`` seconds (no message, no read) is
dropped, and its group starts a new epoch on next use, as a Redis key expiring does.
"""

from __future__ import annotations

import secrets
from collections import deque
from collections.abc import Callable
from itertools import islice

import trio

from ..history import HistoryPolicy, Position
from ..typing import Message
from .handover import Entry, HistoryRead

__all__: list[str] = []


def new_epoch() -> str:
    """A fresh epoch: 16 random hex digits (64 bits)."""
    return secrets.token_hex(8)


class _Ring:
    __slots__ = ("entries", "epoch", "expires", "offset")

    def __init__(self, size: int, expires: float) -> None:
        self.epoch = new_epoch()
        self.offset = 0
        self.entries: deque[Entry] = deque(maxlen=size)  # a ring: the oldest falls out
        self.expires = expires


class MemoryHistory:
    """The history of every group of one in-memory broker (one process, one trio run)."""

    def __init__(self) -> None:
        self._rings: dict[str, _Ring] = {}
        self._next_sweep = 0.0

    def _ring(self, group: str, policy: HistoryPolicy) -> _Ring:
        now = trio.current_time()
        if now >= self._next_sweep:
            # Drop every expired ring now and then, so groups that fell silent do not keep
            # their history (memory) beyond their TTL.
            self._next_sweep = now + min(policy.ttl, 60.0)
            for name in [n for n, r in self._rings.items() if r.expires <= now]:
                del self._rings[name]
        ring = self._rings.get(group)
        if ring is None or ring.expires <= now:
            ring = self._rings[group] = _Ring(policy.size, now + policy.ttl)
        elif ring.entries.maxlen != policy.size:  # the setting changed (tests)
            ring.entries = deque(ring.entries, maxlen=policy.size)
        ring.expires = now + policy.ttl
        return ring

    def append(
        self, group: str, policy: HistoryPolicy, render: Callable[[Position], Message]
    ) -> tuple[Position, Message]:
        """Give the next message of ``group`` its position and keep it.

        Args:
            render: builds the message members receive from its position (once).

        Returns:
            The position and the rendered message.
        """
        ring = self._ring(group, policy)
        ring.offset += 1
        position = Position(ring.epoch, ring.offset)
        message = render(position)
        ring.entries.append(Entry(ring.offset, message))
        return position, message

    def read(self, group: str, policy: HistoryPolicy, since: Position | None) -> HistoryRead:
        """The group's position now, the first offset kept and, if ``since`` is covered,
        every entry after it (starts a new, empty history if the group had none)."""
        ring = self._ring(group, policy)
        position = Position(ring.epoch, ring.offset)
        first = ring.entries[0].offset if ring.entries else ring.offset + 1
        read = HistoryRead(position, first)
        if since is None or not read.covers(since):
            return read
        skip = since.offset + 1 - first  # entries are contiguous: index by offset
        return HistoryRead(position, first, list(islice(ring.entries, skip, None)))

    def __len__(self) -> int:
        """Messages kept across all groups."""
        return sum(len(ring.entries) for ring in self._rings.values())
