"""trio_djws.brokers.handover: the shared hand-over from history to live messages.

Publishes are injected at each pause point of ``hand_over`` (``PAUSE_POINTS``), in many
counts, against both history stores: the in-memory ring (trio_djws.brokers.ring) and Redis
streams (trio_djws.brokers.streams, on a private real Redis). Whatever the interleaving, the
member gets every message after ``since`` exactly once, in offset order, then live ones.
The group's fan-out here is the few lines a broker runs per message: buffer the member
while it is handed over, else queue for it.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Final

import coredis
import pytest
import trio

from tests.redis_server import RedisServer
from trio_djws.brokers.handover import (
    PAUSE_POINTS,
    Entry,
    HistoryRead,
    LiveBuffer,
    PausePoint,
    hand_over,
)
from trio_djws.brokers.ring import MemoryHistory
from trio_djws.brokers.streams import RedisHistory
from trio_djws.history import HistoryPolicy, JoinResult, Position

POLICY: Final = HistoryPolicy(size=200, ttl=60)
LIMIT: Final = 50  # live messages buffered per member during a hand-over


def render(position: Position) -> str:
    return f"m{position.offset}"


class Group:
    """One group with history and its members' fan-out (a broker's per-message work)."""

    def __init__(self, store: str, client: coredis.Redis[bytes] | None = None) -> None:
        self.store = store
        self.client = client
        self.ring = MemoryHistory()
        self.redis = RedisHistory("test")
        self.buffers: list[LiveBuffer] = []
        self.live: list[trio.MemorySendChannel[str | bytes]] = []

    async def publish(self, count: int = 1) -> None:
        for _ in range(count):
            if self.client is None:
                position, message = self.ring.append("g", POLICY, render)
            else:
                position = await self.redis.append(
                    self.client, "g", POLICY, kind=b"t", payload=b"", channel="test:g", head=b""
                )
                message = render(position)
            for buffer in self.buffers:
                buffer.append(position.epoch, Entry(position.offset, message))
            for channel in self.live:
                channel.send_nowait(message)

    async def read(self, since: Position | None) -> HistoryRead:
        if self.client is None:
            return self.ring.read("g", POLICY, since)
        return await self.redis.read(
            self.client, "g", POLICY, since, lambda p, kind, payload: render(p)
        )

    async def join(
        self,
        since: Position | None,
        member: trio.MemorySendChannel[str | bytes],
        pause: Callable[[PausePoint], Awaitable[None]],
        limit: int = LIMIT,
    ) -> tuple[JoinResult, bool]:
        buffer: LiveBuffer | None = None

        async def subscribe(new: LiveBuffer) -> None:
            nonlocal buffer
            buffer = new
            self.buffers.append(new)
            await trio.lowlevel.checkpoint()

        def go_live(last: Position) -> None:
            assert buffer is not None
            self.buffers.remove(buffer)
            self.live.append(member)

        done = await hand_over(
            since,
            subscribe=subscribe,
            read=self.read,
            send=member.send,
            go_live=go_live,
            limit=limit,
            pause=pause,
        )
        return done.result, done.resync


@pytest.fixture(params=["memory", "redis"])
async def group(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Group]:
    if request.param == "memory":
        yield Group("memory")
        return
    server = RedisServer(tmp_path)
    await server.start()
    try:
        async with coredis.Redis.from_url(server.url) as client:
            yield Group("redis", client)
    finally:
        await server.stop()


def received(receive: trio.MemoryReceiveChannel[str | bytes]) -> list[int]:
    out: list[int] = []
    while True:
        try:
            message = receive.receive_nowait()
        except trio.WouldBlock:
            return out
        assert isinstance(message, str)
        out.append(int(message[1:]))


@pytest.mark.parametrize(
    ("point", "count"),
    list(itertools.product(PAUSE_POINTS, [0, 1, 7, LIMIT - 1, LIMIT, LIMIT + 1, 120])),
)
async def test_publishes_at_each_pause_point_arrive_once_in_order(
    group: Group, point: PausePoint, count: int
) -> None:
    await group.publish(20)
    since = (await group.read(None)).position
    since = Position(since.epoch, 12)  # the member saw 1..12
    send, receive = trio.open_memory_channel[str | bytes](1000)

    async def pause(at: PausePoint) -> None:
        if at == point:
            await group.publish(count)

    result, resync = await group.join(since, send, pause)
    await group.publish(3)  # live, after the hand-over
    total = 20 + count + 3
    assert received(receive) == list(range(13, total + 1))
    assert result.recovered and not resync
    assert result.position is not None and result.position.epoch == since.epoch
    # The position returned is the last message sent before going live.
    assert result.position.offset == (20 if point == "drained" else 20 + count)


async def test_publishes_spread_over_every_pause_point(group: Group) -> None:
    # Every split of 0 or 60 publishes at each of the four points (over the buffer's limit).
    for split in itertools.product((0, 60), repeat=len(PAUSE_POINTS)):
        fresh = Group(group.store, group.client)
        fresh.redis = RedisHistory(f"test{sum(split)}-{split}")
        await fresh.publish(5)
        start = (await fresh.read(None)).position
        send, receive = trio.open_memory_channel[str | bytes](1000)
        counts = dict(zip(PAUSE_POINTS, split, strict=True))

        async def pause(
            at: PausePoint, counts: dict[PausePoint, int] = counts, fresh: Group = fresh
        ) -> None:
            await fresh.publish(counts[at])

        result, resync = await fresh.join(Position(start.epoch, 2), send, pause)
        assert received(receive) == list(range(3, 5 + sum(split) + 1)), split
        assert result.recovered and not resync


async def test_another_epoch_is_not_recovered_and_only_later_messages_follow(
    group: Group,
) -> None:
    await group.publish(5)
    send, receive = trio.open_memory_channel[str | bytes](100)

    async def pause(at: PausePoint) -> None:
        if at in ("subscribed", "sent"):
            await group.publish(2)

    result, resync = await group.join(Position("lost-epoch", 3), send, pause)
    assert not result.recovered and not resync
    # The position when it went live; published before the read: the app's resync covers
    # them (7 is the position at the read); after it: sent.
    assert result.position is not None and result.position.offset == 9
    assert received(receive) == [8, 9]


async def test_no_since_is_not_recovered(group: Group) -> None:
    await group.publish(4)
    send, receive = trio.open_memory_channel[str | bytes](100)

    async def pause(at: PausePoint) -> None:
        return None

    result, _ = await group.join(None, send, pause)
    assert not result.recovered
    assert result.position is not None and result.position.offset == 4
    await group.publish(1)
    assert received(receive) == [5]


async def test_history_trimmed_past_the_member_during_the_hand_over_asks_for_a_resync(
    group: Group,
) -> None:
    await group.publish(10)
    epoch = (await group.read(None)).position.epoch
    send, receive = trio.open_memory_channel[str | bytes](1000)

    async def pause(at: PausePoint) -> None:
        if at == "read":
            # More than the history and the buffer hold: offsets 11.. are trimmed away.
            await group.publish(POLICY.size + 30)

    result, resync = await group.join(Position(epoch, 5), send, pause, limit=10)
    assert result.recovered and resync
    # What the history had at the read, then nothing until live: the app resyncs (its
    # on_resync), and the position returned is where that resync starts.
    assert received(receive) == [6, 7, 8, 9, 10]
    assert result.position == Position(epoch, 10 + POLICY.size + 30)
    await group.publish(1)
    assert received(receive) == [10 + POLICY.size + 31]


async def test_a_small_buffer_that_overflows_is_filled_from_the_history(group: Group) -> None:
    await group.publish(3)
    epoch = (await group.read(None)).position.epoch
    send, receive = trio.open_memory_channel[str | bytes](1000)

    async def pause(at: PausePoint) -> None:
        if at == "sent":
            await group.publish(25)  # the buffer holds 4

    result, resync = await group.join(Position(epoch, 0), send, pause, limit=4)
    assert result.recovered and not resync
    assert received(receive) == list(range(1, 29))


async def test_the_live_buffer_is_bounded() -> None:
    buffer = LiveBuffer(3)
    for offset in range(1, 10):
        buffer.append("e", Entry(offset, "x"))
        assert len(buffer) <= 3
    entries, overflowed = buffer.take()
    assert overflowed and entries == []
    assert buffer.take() == ([], False)
