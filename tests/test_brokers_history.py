"""Group history through both brokers: ``websocket.join(group, since=...)``, positions in
frames, gaps, Redis outages and restarts, bounded memory.

Members and publishers are tests/history_handlers.py's handlers. In-process tests drive the
ASGI app with ``WebSocketTestClient`` (the in-memory broker, or the RedisBroker of an
in-process Hypercorn server on a private ``redis-server``); the multi-process tests run
``manage.py serve`` subprocesses on one Redis.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any, Final

import coredis
import pytest
import redis
import trio
import trio.testing
from django.db import transaction
from django.test import override_settings
from trio_websocket import open_websocket_url

import tests.history_handlers  # noqa: F401  (registers /history/...)
from tests.processes import run_serve
from tests.redis_server import RedisServer
from tests.test_brokers_redis import in_process_server, redis_settings
from trio_djws import BrokerError, publish_on_commit, send_group_json
from trio_djws.asgi import get_asgi_application
from trio_djws.brokers import InMemoryBroker, RedisBroker
from trio_djws.brokers.handover import PAUSE_POINTS, PausePoint
from trio_djws.brokers.streams import RedisHistory, meta_key, stream_key
from trio_djws.history import HistoryPolicy
from trio_djws.state import current_server
from trio_djws.testing import WebSocketTestClient
from trio_djws.threads import to_thread

TIMEOUT: Final = 50.0  # seconds per test; the autouse watchdog in conftest allows 60
SIZE: Final = 1000  # messages of history per group
HISTORY: Final = {
    "h.*": {"SIZE": SIZE, "TTL": 600},
    "small.*": {"SIZE": 10, "TTL": 600},
    "fmt.*": {"SIZE": 10, "TTL": 600, "FORMATTER": "tests.history_handlers.tag_position"},
}
HANDLERS: Final = ["tests.handlers", "tests.redis_handlers", "tests.history_handlers"]
SETTINGS: Final = {"WEBSOCKET_GROUP_HISTORY": HISTORY, "WEBSOCKET_SEND_QUEUE_SIZE": 64}


@asynccontextmanager
async def open_app(kind: str, tmp_path: Path) -> AsyncIterator[Any]:
    """The ASGI app with history on: in-memory broker, or RedisBroker on a private Redis."""
    if kind == "memory":
        with override_settings(**SETTINGS):
            yield get_asgi_application()
        return
    server = RedisServer(tmp_path)
    await server.start()
    try:
        async with in_process_server(server.url, **SETTINGS) as app:
            yield app
    finally:
        await server.stop()


@pytest.fixture(params=["memory", "redis"])
async def app(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    async with open_app(request.param, tmp_path) as app:
        yield app


@asynccontextmanager
async def member(
    app: Any, group: str, since: object = None
) -> AsyncIterator[tuple[WebSocketTestClient, dict[str, Any]]]:
    """A member of ``group`` (joined with ``since``), past its "joined" frame."""
    query = f"since={since}" if since is not None else ""
    async with WebSocketTestClient(app, f"/history/member/{group}/", query_string=query) as ws:
        joined = await ws.receive_json()
        assert joined["type"] == "joined", joined
        yield ws, joined


@asynccontextmanager
async def publisher(app: Any, group: str) -> AsyncIterator[WebSocketTestClient]:
    async with WebSocketTestClient(app, f"/history/publisher/{group}/") as ws:
        yield ws


async def command(pub: WebSocketTestClient, text: str) -> None:
    await pub.send(text)
    assert await pub.receive() == "published"


def position_of(frame: dict[str, Any]) -> str:
    return f"{frame['position']['epoch']}:{frame['position']['offset']}"


async def test_a_member_that_missed_500_gets_exactly_those_in_order_then_live(app: Any) -> None:
    with trio.fail_after(TIMEOUT):
        async with publisher(app, "h.a") as pub:
            async with member(app, "h.a") as (ws, joined):
                assert joined["recovered"] is False
                start = joined["position"]
                await command(pub, "burst 5")
                first = [await ws.receive_json() for _ in range(5)]
            assert [f["n"] for f in first] == list(range(5))
            assert [f["position"]["offset"] for f in first] == [
                start["offset"] + i for i in range(1, 6)
            ]
            await command(pub, "burst 500")  # while the member is away
            async with member(app, "h.a", since=position_of(first[-1])) as (ws, joined):
                assert joined["recovered"] is True
                missed = [await ws.receive_json() for _ in range(500)]
                assert [f["n"] for f in missed] == list(range(500))
                offsets = [f["position"]["offset"] for f in missed]
                assert offsets == list(range(first[-1]["position"]["offset"] + 1, offsets[-1] + 1))
                assert joined["position"]["offset"] == offsets[-1]
                await command(pub, "burst 3")
                live = [await ws.receive_json() for _ in range(3)]
                assert [f["n"] for f in live] == [0, 1, 2]
                assert [f["position"]["offset"] for f in live] == [
                    offsets[-1] + i for i in (1, 2, 3)
                ]
                await trio.testing.wait_all_tasks_blocked()
                with pytest.raises(trio.WouldBlock):
                    ws.receive_nowait()


async def test_a_position_the_history_no_longer_holds_is_not_recovered(app: Any) -> None:
    with trio.fail_after(TIMEOUT):
        async with publisher(app, "small.a") as pub:
            async with member(app, "small.a") as (ws, _):
                await command(pub, "burst 1")
                seen = await ws.receive_json()
            await command(pub, "burst 11")  # the history keeps 10: offset seen+1 is gone
            async with member(app, "small.a", since=position_of(seen)) as (ws, joined):
                assert joined["recovered"] is False
                assert joined["position"]["offset"] == seen["position"]["offset"] + 11
            async with member(app, "small.a", since="other:1") as (ws, joined):
                assert joined["recovered"] is False  # another epoch


@pytest.mark.parametrize("point", PAUSE_POINTS)
async def test_publishes_during_each_step_of_the_hand_over_arrive_once_in_order(
    app: Any, point: PausePoint
) -> None:
    group = f"h.race-{point}"
    with trio.fail_after(TIMEOUT):
        async with publisher(app, group) as pub:
            async with member(app, group) as (ws, _):
                await command(pub, "burst 20")
                seen = [await ws.receive_json() for _ in range(20)]
            since = seen[9]  # the member saw 10 of them
            broker = current_server().broker
            assert isinstance(broker, InMemoryBroker | RedisBroker)

            # More than the send queue (64) holds while handed over; once live (after
            # "drained") fan-out never waits, so a burst that fills the queue would close
            # the member with 1008: stay under it there.
            injected = 30 if point == "drained" else 70

            async def pause(at: PausePoint) -> None:
                if at == point:
                    for n in range(100, 100 + injected):
                        await send_group_json(group, {"n": n})

            broker.hand_over_pause = pause
            try:
                async with member(app, group, since=position_of(since)) as (ws, joined):
                    broker.hand_over_pause = None
                    assert joined["recovered"] is True
                    await command(pub, "text end")
                    frames = []
                    while (frame := await ws.receive()) != "end":
                        frames.append(json.loads(frame))
            finally:
                broker.hand_over_pause = None
    first = since["position"]["offset"] + 1
    assert [f["position"]["offset"] for f in frames] == list(range(first, first + 10 + injected))
    assert [f["n"] for f in frames] == list(range(10, 20)) + list(range(100, 100 + injected))


async def test_json_frames_carry_the_position_and_text_goes_through_the_formatter(
    app: Any,
) -> None:
    with trio.fail_after(TIMEOUT):
        async with publisher(app, "fmt.a") as pub, member(app, "fmt.a") as (ws, joined):
            epoch = joined["position"]["epoch"]
            await command(pub, "burst 1")
            assert await ws.receive_json() == {
                "n": 0,
                "position": {"epoch": epoch, "offset": 1},
            }
            await command(pub, "text hi")
            assert await ws.receive() == f"{epoch}:2 hi"
            await command(pub, "bytes raw")
            assert await ws.receive() == (3).to_bytes(8, "big") + b"raw"
        # Without a formatter, text and bytes arrive unchanged.
        async with publisher(app, "h.plain") as pub, member(app, "h.plain") as (ws, _):
            await command(pub, "text hi")
            assert await ws.receive() == "hi"


async def test_groups_without_history_are_unchanged(app: Any) -> None:
    with trio.fail_after(TIMEOUT):
        async with publisher(app, "plain") as pub, member(app, "plain") as (ws, joined):
            assert joined == {"type": "joined", "recovered": False, "position": None}
            await command(pub, "burst 1")
            assert await ws.receive_json() == {"n": 0}


async def test_memory_stays_within_the_configured_history() -> None:
    with override_settings(**SETTINGS), trio.fail_after(TIMEOUT):
        app = get_asgi_application()
        async with publisher(app, "small.mem") as pub:
            for _ in range(5):
                await command(pub, "burst 40")
        broker = current_server().broker
        assert isinstance(broker, InMemoryBroker)
        assert len(broker.history) == 10


# -- Redis only ------------------------------------------------------------------------------


async def test_concurrent_publisher_and_repeated_rejoins_lose_and_repeat_nothing(
    redis_server: RedisServer,
) -> None:
    total = 600
    with trio.fail_after(TIMEOUT):
        async with in_process_server(redis_server.url, **SETTINGS) as app:
            seen: list[int] = []
            log: list[tuple[int, int, int]] = []
            async with member(app, "h.live") as (ws, joined):
                since = f"{joined['position']['epoch']}:{joined['position']['offset']}"
            done = trio.Event()

            async def publish_all() -> None:
                for n in range(total):
                    await send_group_json("h.live", {"n": n})
                    if n % 7 == 0:
                        await trio.lowlevel.checkpoint()  # let the member's hand-overs interleave
                done.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(publish_all)
                session = 0
                while len(seen) < total:
                    session += 1
                    async with member(app, "h.live", since=since) as (ws, joined):
                        assert joined["recovered"] is True, joined
                        # Read a few (or, once the publisher is done, everything), then drop.
                        left = total - len(seen)
                        want = left if done.is_set() else min(left, 1 + session % 37)
                        for _ in range(want):
                            frame = await ws.receive_json()
                            seen.append(frame["n"])
                            log.append((session, frame["n"], frame["position"]["offset"]))
                            since = position_of(frame)
    assert seen == list(range(total)), log[:20]
    assert session > 3


async def test_a_member_moves_to_another_server_process_and_recovers(
    redis_server: RedisServer,
) -> None:
    settings = redis_settings(redis_server.url, **SETTINGS, WEBSOCKET_HANDLERS=HANDLERS)
    with trio.fail_after(TIMEOUT):
        async with AsyncExitStack() as stack:
            first = await stack.enter_async_context(run_serve(settings=settings))
            second = await stack.enter_async_context(run_serve(settings=settings))
            a_url, b_url = (await first.urls())[0], (await second.urls())[0]
            async with open_websocket_url(f"{a_url}/history/member/h.move/") as ws:
                joined = json.loads(await ws.get_message())
                async with open_websocket_url(f"{b_url}/history/publisher/h.move/") as pub:
                    await pub.send_message("burst 3")
                    assert await pub.get_message() == "published"
                    frames = [json.loads(await ws.get_message()) for _ in range(3)]
            assert joined["recovered"] is False
            async with open_websocket_url(f"{a_url}/history/publisher/h.move/") as pub:
                await pub.send_message("burst 50")
                assert await pub.get_message() == "published"
            since = position_of(frames[-1])
            async with open_websocket_url(f"{b_url}/history/member/h.move/?since={since}") as ws:
                joined = json.loads(await ws.get_message())
                assert joined["recovered"] is True
                missed = [json.loads(await ws.get_message()) for _ in range(50)]
            assert [f["n"] for f in missed] == list(range(50))
            assert [f["position"]["offset"] for f in missed] == list(range(4, 54))


async def test_a_gap_while_connected_is_filled_once_per_process_from_the_history(
    redis_server: RedisServer,
) -> None:
    with trio.fail_after(TIMEOUT):
        async with in_process_server(redis_server.url, **SETTINGS) as app:
            broker = current_server().broker
            assert isinstance(broker, RedisBroker)
            async with (
                publisher(app, "h.gap") as pub,
                member(app, "h.gap") as (a, _),
                member(app, "h.gap") as (b, _),
            ):
                await command(pub, "burst 2")
                for ws in (a, b):
                    assert [(await ws.receive_json())["n"] for _ in range(2)] == [0, 1]
                # Five messages this process never hears of (published on a Redis channel
                # nobody listens to), as if it had lost Redis meanwhile: a gap.
                async with coredis.Redis.from_url(redis_server.url) as client:
                    for n in range(5):
                        await RedisHistory("test").append(
                            client,
                            "h.gap",
                            HistoryPolicy(SIZE, 600),
                            kind=b"j",
                            payload=json.dumps({"n": 100 + n}).encode(),
                            channel="nowhere",
                            head=b"",
                        )
                await command(pub, "burst 1")
                for ws in (a, b):
                    got = [await ws.receive_json() for _ in range(6)]
                    assert [f["n"] for f in got] == [100, 101, 102, 103, 104, 0]
                    assert [f["position"]["offset"] for f in got] == list(range(3, 9))
                assert broker.recovered == 5  # one read for both members, not one each
                assert broker.resyncs == 0


async def test_publishing_to_a_history_group_while_redis_is_down_raises_after_the_timeout(
    redis_server: RedisServer,
) -> None:
    with trio.fail_after(TIMEOUT):
        async with in_process_server(
            redis_server.url, **SETTINGS, WEBSOCKET_HISTORY_PUBLISH_TIMEOUT=1
        ) as app:
            async with member(app, "h.down"):
                await redis_server.stop()
                start = trio.current_time()
                with pytest.raises(BrokerError, match=r"history group 'h.down'.* unreachable"):
                    await send_group_json("h.down", {"n": 1})
                assert 1 <= trio.current_time() - start < 5
            with (
                override_settings(WEBSOCKET_HISTORY_PUBLISH_TIMEOUT=1),
                pytest.raises(BrokerError, match="unreachable"),
            ):
                await to_thread(RedisBroker.publish_sync, {"url": redis_server.url}, "h.down", "x")
            await redis_server.start()


@pytest.mark.parametrize("persistent", [False, True])
async def test_redis_restart_recovers_only_what_it_kept(tmp_path: Path, persistent: bool) -> None:
    server = RedisServer(tmp_path, appendonly=persistent)
    await server.start()
    try:
        with trio.fail_after(TIMEOUT):
            async with in_process_server(server.url, **SETTINGS) as app:
                async with publisher(app, "h.r") as pub, member(app, "h.r") as (stay, _):
                    async with member(app, "h.r") as (away, _):
                        await command(pub, "burst 3")
                        seen = [await away.receive_json() for _ in range(3)]
                        assert [(await stay.receive_json())["n"] for _ in range(3)] == [0, 1, 2]
                    await command(pub, "burst 2")  # the away member misses these
                    assert [(await stay.receive_json())["n"] for _ in range(2)] == [0, 1]
                    client = redis.Redis.from_url(server.url)
                    try:
                        client.shutdown(save=persistent, nosave=not persistent)
                    except redis.exceptions.ConnectionError:
                        pass  # SHUTDOWN closes the connection instead of answering
                    client.close()
                    await server.wait_exit()
                    await server.start()
                    since = position_of(seen[-1])
                    async with member(app, "h.r", since=since) as (back, joined):
                        if persistent:
                            # Nothing lost: the two it missed, then nothing else.
                            assert joined["recovered"] is True
                            got = [await back.receive_json() for _ in range(2)]
                            assert [f["position"]["offset"] for f in got] == [4, 5]
                        else:
                            assert joined["recovered"] is False
                            assert joined["position"]["epoch"] != seen[-1]["position"]["epoch"]
                    await command(pub, "burst 1")
                    frame = await stay.receive_json()
                    if not persistent:
                        # The member that stayed was told to resync: its history is gone.
                        assert frame == {"type": "resync"}
                        frame = await stay.receive_json()
                    assert frame["n"] == 0
                    assert frame["position"]["offset"] == (6 if persistent else 1)
    finally:
        await server.stop()


async def test_redis_memory_stays_within_the_configured_history(
    redis_server: RedisServer,
) -> None:
    with trio.fail_after(TIMEOUT):
        async with in_process_server(redis_server.url, **SETTINGS) as app:
            async with publisher(app, "small.r") as pub:
                await command(pub, "burst 10")
                client = redis.Redis.from_url(redis_server.url)
                full = client.memory_usage(stream_key("test", "small.r"))
                for _ in range(10):
                    await command(pub, "burst 50")
                assert client.xlen(stream_key("test", "small.r")) == 10
                assert client.memory_usage(stream_key("test", "small.r")) <= 2 * full
                assert client.hgetall(meta_key("test", "small.r"))[b"offset"] == b"510"
                client.close()


@pytest.mark.django_db(transaction=True)
async def test_publish_on_commit_publishes_after_the_commit_only() -> None:
    with override_settings(**SETTINGS), trio.fail_after(TIMEOUT):
        app = get_asgi_application()
        async with member(app, "h.commit") as (ws, _):

            def commit_then_roll_back() -> None:
                with transaction.atomic():
                    publish_on_commit("h.commit", {"n": 1})
                    publish_on_commit("h.commit", "text")
                    trio.from_thread.run(trio.testing.wait_all_tasks_blocked)
                    with pytest.raises(trio.WouldBlock):  # not before the commit
                        trio.from_thread.run_sync(ws.receive_nowait)
                try:
                    with transaction.atomic():
                        publish_on_commit("h.commit", {"n": 2})
                        raise RuntimeError("roll back")
                except RuntimeError:
                    pass

            await to_thread(commit_then_roll_back)
            assert (await ws.receive_json())["n"] == 1
            assert await ws.receive() == "text"
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(trio.WouldBlock):
                ws.receive_nowait()
