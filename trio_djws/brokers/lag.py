"""Internal: the Redis broker's pub/sub lag (exported by ``trio_djws.metrics``).

Pub/sub lag of the Redis broker, measured on this process's own messages.

Redis sends a publishing process its own message back when that process subscribes to the
group's Redis channel (it has local members), in publish order per channel. ``EchoClock``
notes when each such envelope was published and, when it comes back, how long it took: the
publish-to-receipt time every subscriber of that channel sees, give or take its own distance
to Redis. Bounded: ``DEPTH`` envelopes per channel, ``CHANNELS`` channels.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Final

__all__: list[str] = []

DEPTH: Final = 256  # envelopes in flight per Redis channel
CHANNELS: Final = 1024  # Redis channels tracked at once


class EchoClock:
    """Publish times of envelopes awaiting their echo, per Redis channel."""

    def __init__(self) -> None:
        self._pending: dict[str, deque[tuple[bytes, float]]] = {}

    def sent(self, channel: str, envelope: bytes) -> None:
        """Note that ``envelope`` was published on ``channel`` now."""
        pending = self._pending.get(channel)
        if pending is None:
            if len(self._pending) >= CHANNELS:
                self._pending.clear()  # forget rather than grow: a few samples are lost
            pending = self._pending[channel] = deque(maxlen=DEPTH)
        pending.append((envelope, time.perf_counter()))

    def received(self, channel: str, envelope: bytes) -> float | None:
        """The seconds since ``envelope`` was published on ``channel``, or None if it was not
        noted (published before the subscription, or forgotten). Envelopes noted before it
        that never came back are dropped."""
        pending = self._pending.get(channel)
        if not pending:
            return None
        for index, (sent, at) in enumerate(pending):
            if sent == envelope:
                for _ in range(index + 1):
                    pending.popleft()
                if not pending:
                    del self._pending[channel]
                return time.perf_counter() - at
        return None
