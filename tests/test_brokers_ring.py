"""trio_djws.brokers.ring: the in-memory broker's ring buffer per group with history."""

from __future__ import annotations

from typing import Final

import trio
import trio.testing

from trio_djws.brokers.ring import MemoryHistory
from trio_djws.history import HistoryPolicy, Position

POLICY: Final = HistoryPolicy(size=4, ttl=30)


def render(position: Position) -> str:
    return f"m{position.offset}"


async def test_the_ring_keeps_the_last_size_messages_and_reads_from_the_first_kept() -> None:
    history = MemoryHistory()
    positions = [history.append("g", POLICY, render)[0] for _ in range(10)]
    assert [p.offset for p in positions] == list(range(1, 11))
    assert len(history) == POLICY.size  # bounded whatever was published
    epoch = positions[0].epoch
    read = history.read("g", POLICY, Position(epoch, 6))
    assert read.first == 7 and read.position == positions[-1]
    assert [(e.offset, e.message) for e in read.entries] == [
        (7, "m7"),
        (8, "m8"),
        (9, "m9"),
        (10, "m10"),
    ]
    assert not history.read("g", POLICY, Position(epoch, 5)).covers(Position(epoch, 5))
    assert history.read("g", POLICY, Position(epoch, 10)).entries == []


async def test_a_new_broker_has_new_epochs() -> None:
    before = MemoryHistory().append("g", POLICY, render)[0]
    after = MemoryHistory().read("g", POLICY, before)
    assert after.position.epoch != before.epoch and not after.covers(before)


async def test_an_idle_ring_expires_after_its_ttl(autojump_clock: trio.testing.MockClock) -> None:
    history = MemoryHistory()
    first = history.append("g", POLICY, render)[0]
    history.append("idle", POLICY, render)
    await trio.sleep(POLICY.ttl - 1)
    assert history.read("g", POLICY, first).covers(first)  # a read keeps it alive
    await trio.sleep(POLICY.ttl + 1)
    read = history.read("g", POLICY, first)
    assert read.position.epoch != first.epoch and read.position.offset == 0
    assert len(history) == 0  # "idle", silent past its TTL too, was swept on the way
