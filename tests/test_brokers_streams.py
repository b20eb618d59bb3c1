"""trio_djws.brokers.streams: the history Lua scripts against a private real Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Final

import coredis
import pytest
import redis
import trio

from tests.redis_server import RedisServer
from trio_djws.brokers.streams import RedisHistory, meta_key, stream_key
from trio_djws.history import HistoryPolicy, Position

POLICY: Final = HistoryPolicy(size=5, ttl=60)
HEAD: Final = b"\x02t\x03abc"  # an envelope head: version, kind, origin length, origin
CHANNEL: Final = "test:group:g"


def render(position: Position, kind: bytes, payload: bytes) -> str:
    return f"{position}|{kind.decode()}|{payload.decode()}"


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[coredis.Redis[bytes]]:
    async with coredis.Redis.from_url(redis_server.url) as client:
        yield client


async def append(client: coredis.Redis[bytes], text: str, group: str = "g") -> Position:
    return await RedisHistory("test").append(
        client, group, POLICY, kind=b"t", payload=text.encode(), channel=CHANNEL, head=HEAD
    )


async def test_offsets_grow_by_one_and_a_read_returns_what_came_after(
    client: coredis.Redis[bytes],
) -> None:
    history = RedisHistory("test")
    start = await history.read(client, "g", POLICY, None, render)
    assert start.position.offset == 0 and start.first == 1 and start.entries == []
    positions = [await append(client, f"m{i}") for i in range(1, 4)]
    assert [p.offset for p in positions] == [1, 2, 3]
    assert {p.epoch for p in positions} == {start.position.epoch}
    read = await history.read(client, "g", POLICY, Position(start.position.epoch, 1), render)
    assert read.position == positions[-1]
    assert read.covers(Position(start.position.epoch, 1))
    epoch = start.position.epoch
    assert [(e.offset, e.message) for e in read.entries] == [
        (2, f"{epoch}:2|t|m2"),
        (3, f"{epoch}:3|t|m3"),
    ]
    # The stream IDs are the offsets: XRANGE from (0-<since> is what was missed.
    ids = [entry.identifier for entry in await client.xrange(stream_key("test", "g"))]
    assert ids == [b"0-1", b"0-2", b"0-3"]


async def test_the_envelope_is_published_with_its_position(
    client: coredis.Redis[bytes],
) -> None:
    async with client.pubsub(channels=[CHANNEL]) as pubsub:
        position = await append(client, "hello")
        with trio.fail_after(5):
            while True:
                message = await pubsub.get_message()
                if message is not None and message["type"] == "message":
                    break
    text = str(position).encode()
    assert message["data"] == HEAD + bytes((len(text),)) + text + b"hello"


async def test_maxlen_trims_and_the_first_kept_entry_decides_coverage(
    client: coredis.Redis[bytes],
) -> None:
    history = RedisHistory("test")
    for i in range(1, 9):
        last = await append(client, f"m{i}")
    assert await client.xlen(stream_key("test", "g")) == POLICY.size
    read = await history.read(client, "g", POLICY, Position(last.epoch, 3), render)
    assert read.first == 4 and read.covers(Position(last.epoch, 3))
    assert [e.offset for e in read.entries] == [4, 5, 6, 7, 8]
    short = await history.read(client, "g", POLICY, Position(last.epoch, 2), render)
    assert not short.covers(Position(last.epoch, 2)) and short.entries == []
    # The real first entry counts, not the configured size: delete one by hand.
    await client.xdel(stream_key("test", "g"), ["0-4"])
    gone = await history.read(client, "g", POLICY, Position(last.epoch, 3), render)
    assert gone.first == 5 and not gone.covers(Position(last.epoch, 3))
    # A position ahead of the history, or of another epoch, is not covered either.
    ahead = await history.read(client, "g", POLICY, Position(last.epoch, 9), render)
    assert not ahead.covers(Position(last.epoch, 9)) and ahead.entries == []
    other = await history.read(client, "g", POLICY, Position("other", 7), render)
    assert not other.covers(Position("other", 7))


@pytest.mark.parametrize("loss", ["both", "stream", "meta", "flushall", "expire"])
async def test_losing_the_history_makes_a_new_epoch(
    client: coredis.Redis[bytes], loss: str
) -> None:
    first = await append(client, "m1")
    await append(client, "m2")
    stream, meta = stream_key("test", "g"), meta_key("test", "g")
    if loss == "both":
        await client.delete([stream, meta])
    elif loss == "stream":
        await client.delete([stream])
    elif loss == "meta":
        await client.delete([meta])
    elif loss == "flushall":
        await client.flushall()
    else:
        # An expiry time in the past: Redis expires the keys at once (no clock to wait on).
        await client.pexpireat(stream, 1)
        await client.pexpireat(meta, 1)
        assert await client.exists([stream, meta]) == 0
    read = await RedisHistory("test").read(client, "g", POLICY, Position(first.epoch, 1), render)
    assert read.position.epoch != first.epoch
    assert read.position.offset == 0 and not read.covers(Position(first.epoch, 1))
    after = await append(client, "m3")
    assert after == Position(read.position.epoch, 1)


async def test_both_keys_get_the_ttl(client: coredis.Redis[bytes]) -> None:
    await append(client, "m1")
    for key in (stream_key("test", "g"), meta_key("test", "g")):
        assert 0 < await client.ttl(key) <= POLICY.ttl


async def test_redis_py_runs_the_same_script(
    client: coredis.Redis[bytes], redis_server: RedisServer
) -> None:
    first = await append(client, "from trio")
    sync = redis.Redis.from_url(redis_server.url)
    try:
        second = await trio.to_thread.run_sync(
            lambda: RedisHistory("test").append_sync(
                sync, "g", POLICY, kind=b"t", payload=b"from sync", channel=CHANNEL, head=HEAD
            )
        )
    finally:
        sync.close()
    assert second == Position(first.epoch, 2)
    read = await RedisHistory("test").read(client, "g", POLICY, first, render)
    assert [e.message for e in read.entries] == [f"{first.epoch}:2|t|from sync"]


async def test_groups_do_not_share_offsets(client: coredis.Redis[bytes]) -> None:
    a = await append(client, "x", group="a")
    b = await append(client, "y", group="b")
    assert a.offset == b.offset == 1 and a.epoch != b.epoch
