"""RedisBroker (trio_djws/brokers/redis/) with real server processes and a private Redis.

Each test starts its own ``redis-server`` on an ephemeral port (tests/redis_server.py) and
one or two ``manage.py serve`` subprocesses (tests/processes.py's ``run_serve``) using
the RedisBroker; clients connect to tests/redis_handlers.py's handlers. Tests count messages
up to a final sentinel and wait on what the servers print or send, never on sleeps.
"""

from __future__ import annotations

import inspect
import signal
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Final

import pytest
import redis
import trio
from django.core import checks
from django.test import override_settings
from hypercorn.typing import ASGIFramework
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

import tests.redis_handlers  # noqa: F401  (registers /redis/... for in-process servers)
from tests.conftest import open_hypercorn
from tests.processes import ServerProcess, run_serve
from tests.redis_server import RedisServer, free_port
from trio_djws.asgi import get_asgi_application
from trio_djws.brokers import Broker, InMemoryBroker, RedisBroker
from trio_djws.brokers.envelope import decode_envelope
from trio_djws.exceptions import ConfigurationError
from trio_djws.exceptions import ConnectionClosed as TrioConnectionClosed
from trio_djws.groups import Groups
from trio_djws.state import current_server
from trio_djws.testing import WebSocketTestClient

TIMEOUT: Final = 45.0  # seconds per test; the autouse watchdog in conftest allows 60
BURST: Final = 1000  # messages
HANDLERS: Final = ["tests.handlers", "tests.launcher_handlers", "tests.redis_handlers"]


def redis_settings(url: str, **extra: object) -> dict[str, object]:
    """LAUNCHER_TEST_SETTINGS for a server process on the RedisBroker at ``url``."""
    return {
        "WEBSOCKET_BROKER": {
            "BACKEND": "trio_djws.brokers.RedisBroker",
            "CONFIG": {"url": url, "prefix": "test"},
        },
        "WEBSOCKET_HANDLERS": HANDLERS,
        # A burst of 1,000 is queued without waiting for the client to read.
        "WEBSOCKET_SEND_QUEUE_SIZE": 2 * BURST,
        # No server ping while a test runs: trio-websocket's client can crash in aclose() on a
        # ping queued behind its close frame (trio-websocket issue 184), a flake of the client.
        "WEBSOCKET_PING_INTERVAL": 60,
        **extra,
    }


@asynccontextmanager
async def servers(count: int, url: str, **extra: object) -> AsyncIterator[list[ServerProcess]]:
    """``count`` single-process servers on the RedisBroker at ``url``."""
    async with AsyncExitStack() as stack:
        started = [
            await stack.enter_async_context(run_serve(settings=redis_settings(url, **extra)))
            for _ in range(count)
        ]
        yield started


@asynccontextmanager
async def in_process_server(url: str, **overrides: object) -> AsyncIterator[ASGIFramework]:
    """The ASGI app on Hypercorn in this trio run (so tests can reach ``current_server()``
    and use ``WebSocketTestClient``), on the RedisBroker at ``url``, with ``overrides``."""
    broker = redis_settings(url)["WEBSOCKET_BROKER"]
    with override_settings(WEBSOCKET_BROKER=broker, **overrides):
        app = get_asgi_application()
        async with open_hypercorn(app):
            yield app


async def server_url(server: ServerProcess) -> str:
    return (await server.urls())[0]


@asynccontextmanager
async def group_members(*on: ServerProcess) -> AsyncIterator[list[WebSocketConnection]]:
    """One client of group ``g`` (``/redis/group/g/``) per server in ``on`` (a server may
    repeat), each past its "ready" message (joined)."""
    async with AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                open_websocket_url(f"{await server_url(server)}/redis/group/g/")
            )
            for server in on
        ]
        for ws in clients:
            assert await ws.get_message() == "ready"
        yield clients


async def receive_until(ws: WebSocketConnection, sentinel: str) -> list[str]:
    """Every message up to and without ``sentinel``."""
    received: list[str] = []
    while (message := str(await ws.get_message())) != sentinel:
        received.append(message)
    return received


def test_both_brokers_satisfy_the_broker_protocol() -> None:
    groups = Groups()
    for broker in (InMemoryBroker(Groups()), RedisBroker(groups, {"url": "redis://x:1/0"})):
        assert isinstance(broker, Broker)
        for name in ("publish", "members", "serve"):
            expected = inspect.signature(getattr(Broker, name))
            assert inspect.signature(getattr(type(broker), name)) == expected, name
    assert RedisBroker.cross_process is True
    assert InMemoryBroker.cross_process is False


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"url": "http://127.0.0.1/"}, "must be a redis:// URL"),
        ({"prefix": ""}, "'prefix'.* must be a non-empty str"),
        ({"urls": "redis://127.0.0.1/"}, r"unknown keys \['urls'\]"),
    ],
)
def test_bad_config_raises_configuration_error(config: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        RedisBroker(Groups(), config)


def test_channel_names_carry_the_prefix() -> None:
    broker = RedisBroker(Groups(), {"prefix": "projA"})
    assert broker.channel("lobby") == "projA:group:lobby"
    assert RedisBroker(Groups()).channel("lobby") == "trio_djws:group:lobby"


async def test_message_reaches_members_on_two_processes_exactly_once_and_in_order(
    redis_server: RedisServer,
) -> None:
    with trio.fail_after(TIMEOUT):
        async with servers(2, redis_server.url) as (one, two):
            async with group_members(one, one, two) as (a, a2, b):
                await a.send_message(f"burst {BURST}")
                expected = [str(i) for i in range(BURST)]
                async with trio.open_nursery() as nursery:
                    results: dict[str, list[str]] = {}

                    async def collect(name: str, ws: WebSocketConnection) -> None:
                        results[name] = await receive_until(ws, "end")

                    for name, ws in (("a", a), ("a2", a2), ("b", b)):
                        nursery.start_soon(collect, name, ws)
                assert results == {"a": expected, "a2": expected, "b": expected}
                # And the other way, then a sentinel: nothing doubled, nothing in between.
                await b.send_message("from two")
                await b.send_message("stop")
                for ws in (a, a2, b):
                    assert await receive_until(ws, "stop") == ["from two"]


async def test_process_without_members_is_not_subscribed(redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url)
    with trio.fail_after(TIMEOUT):
        async with servers(1, redis_server.url) as (one,):
            url = await server_url(one)
            async with open_websocket_url(f"{url}/redis/group/only-here/") as ws:
                assert await ws.get_message() == "ready"
                channels = await trio.to_thread.run_sync(client.pubsub_channels)
                assert channels == [b"test:group:only-here"]
            # The last member left: the process unsubscribes.
            async with open_websocket_url(f"{url}/redis/unsubscribed/only-here/") as control:
                assert await control.get_message() == "unsubscribed"
            assert await trio.to_thread.run_sync(client.pubsub_channels) == []
    client.close()


async def test_server_starts_without_redis_and_catches_up_when_it_comes(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    redis_server = RedisServer(tmp_path_factory.mktemp("redis"), port=free_port())
    with trio.fail_after(TIMEOUT):
        async with servers(2, redis_server.url) as (one, two):
            url_one, url_two = await server_url(one), await server_url(two)  # lifespan started
            await one.stderr.wait_for(f"Redis at {redis_server.url} unreachable")
            async with (
                open_websocket_url(f"{url_one}/redis/group/g/?wait=0") as a,
                open_websocket_url(f"{url_one}/redis/group/g/?wait=0") as a2,
                open_websocket_url(f"{url_two}/redis/group/g/?wait=0") as b,
                open_websocket_url(f"{url_two}/redis/group/g/?wait=0&resync=fail") as failing,
            ):
                for ws in (a, a2, b, failing):
                    assert await ws.get_message() == "ready"
                await a.send_message("local")  # local delivery works without Redis
                assert await a2.get_message() == "local"
                assert await a.get_message() == "local"
                await redis_server.start()
                try:
                    # Subscribed after the gap: every member hears on_resync.
                    for ws in (a, a2, b):
                        assert await ws.get_message() == "resync g"
                    # An on_resync that raises closes its connection with 1011, like a hook.
                    with pytest.raises(ConnectionClosed) as closed:
                        await failing.get_message()
                    assert closed.value.reason.code == 1011
                    await b.send_message("across")
                    for ws in (a, a2, b):
                        assert await ws.get_message() == "across"
                finally:
                    await redis_server.stop()
            for server in (one, two):
                assert server.process.poll() is None


async def test_redis_restart_resubscribes_calls_on_resync_and_closes_nothing(
    redis_server: RedisServer,
) -> None:
    with trio.fail_after(TIMEOUT):
        async with servers(2, redis_server.url) as (one, two):
            async with group_members(one, two) as (a, b):
                await a.send_message("before")
                for ws in (a, b):
                    assert await ws.get_message() == "before"
                await redis_server.stop()
                for server in (one, two):
                    await server.stderr.wait_for(f"Redis at {redis_server.url} unreachable")
                await a.send_message("while down")  # local members only; lost for b
                assert await a.get_message() == "while down"
                await redis_server.start()
                for ws in (a, b):
                    assert await ws.get_message() == "resync g"
                await b.send_message("after")
                await b.send_message("stop")
                for ws in (a, b):
                    assert await receive_until(ws, "stop") == ["after"]
                assert a.closed is None and b.closed is None  # nothing was closed
            for server in (one, two):
                assert server.process.poll() is None
                server.process.send_signal(signal.SIGTERM)
                assert await server.wait_exit() == 0
            assert "Traceback" not in one.stderr.text + two.stderr.text


async def test_two_workers_of_one_server_share_a_group(redis_server: RedisServer) -> None:
    # manage.py serve --workers 2 accepts the RedisBroker (cross_process = True).
    settings = redis_settings(redis_server.url)
    with trio.fail_after(TIMEOUT):
        async with run_serve("--workers", "2", settings=settings) as server:
            url = await server_url(server)
            await server.stderr.wait_for(r"worker \d \(pid \d+\) starting", 2)
            by_pid: dict[str, WebSocketConnection] = {}
            async with AsyncExitStack() as stack:
                for _ in range(200):  # which worker accepts is the kernel's choice
                    if len(by_pid) == 2:
                        break
                    ws = await stack.enter_async_context(
                        open_websocket_url(f"{url}/redis/group/w/?pid")
                    )
                    pid = str(await ws.get_message()).removeprefix("ready ")
                    by_pid.setdefault(pid, ws)
                assert len(by_pid) == 2, "one worker accepted 200 connections in a row"
                members = list(by_pid.values())
                await members[0].send_message("hello")
                await members[0].send_message("stop")
                for ws in members:
                    assert await receive_until(ws, "stop") == ["hello"]
            server.process.send_signal(signal.SIGTERM)
            assert await server.wait_exit() == 0


async def test_slow_member_fed_through_redis_is_closed_with_1008_and_counted(
    redis_server: RedisServer,
) -> None:
    # One in-process server on the RedisBroker; the slow member is an in-memory test client
    # of the same trio run, so its buffer (1 message) is the only thing that fills up.
    client = redis.Redis.from_url(redis_server.url)
    with trio.fail_after(TIMEOUT):
        async with in_process_server(redis_server.url, WEBSOCKET_SEND_QUEUE_SIZE=8) as app:
            broker = current_server().broker
            assert isinstance(broker, RedisBroker)
            async with (
                WebSocketTestClient(app, "/redis/group/s/", receive_buffer=1) as slow,
                WebSocketTestClient(app, "/redis/group/s/", receive_buffer=100) as fast,
            ):
                assert await slow.receive() == "ready"
                assert await fast.receive() == "ready"
                channel = broker.channel("s")
                assert decode_envelope(b"\x01t\x07other-1x").origin == b"other-1"
                for i in range(30):  # from another "process": only Redis carries them
                    data = b"\x01t\x07other-1" + str(i).encode()  # version 1, text, origin
                    await trio.to_thread.run_sync(client.publish, channel, data)
                assert [await fast.receive() for _ in range(30)] == [str(i) for i in range(30)]
                with pytest.raises(TrioConnectionClosed) as info:
                    while True:
                        await slow.receive()
                assert info.value.code == 1008
                assert broker.overflows >= 1
    client.close()


def test_broker_settings_are_system_checks() -> None:
    with override_settings(WEBSOCKET_BROKER={"BACKEND": "no.such.Broker"}):
        errors = checks.run_checks()
        assert [e.id for e in errors if e.id.startswith("trio_djws.E03")] == ["trio_djws.E030"]
        assert "'no.such.Broker' cannot be imported" in str(errors[0].msg)
    redis_backend = "trio_djws.brokers.RedisBroker"
    bad_url = {"BACKEND": redis_backend, "CONFIG": {"url": "localhost:6379"}}
    with override_settings(WEBSOCKET_BROKER=bad_url):
        (error,) = [e for e in checks.run_checks() if e.id == "trio_djws.E031"]
        assert "must be a redis:// URL, got 'localhost:6379'" in error.msg
    with override_settings(WEBSOCKET_BROKER={"BACKEND": redis_backend, "CONFIG": "x"}):
        (error,) = [e for e in checks.run_checks() if e.id == "trio_djws.E001"]
        assert "WEBSOCKET_BROKER must be a dict" in error.msg
    with override_settings(WEBSOCKET_PRESENCE_TTL=0):
        (error,) = [e for e in checks.run_checks() if e.id == "trio_djws.E001"]
        assert "WEBSOCKET_PRESENCE_TTL must be a number > 0 (seconds), got 0" in error.msg
    good = {"BACKEND": redis_backend, "CONFIG": {"url": "redis://127.0.0.1:6379/0"}}
    with override_settings(WEBSOCKET_BROKER=good, WEBSOCKET_PRESENCE_TTL=5):
        assert not [e for e in checks.run_checks() if e.id.startswith("trio_djws.E0")]


async def test_while_redis_is_down_local_delivery_goes_on_and_the_rest_is_counted_lost(
    redis_server: RedisServer,
) -> None:
    with trio.fail_after(TIMEOUT):
        async with in_process_server(redis_server.url) as app:
            broker = current_server().broker
            assert isinstance(broker, RedisBroker)
            async with WebSocketTestClient(app, "/redis/group/d/") as member:
                assert await member.receive() == "ready"
                await redis_server.stop()
                await broker.wait_subscribed("d", subscribed=False)  # the loss is noticed
                for i in range(5):
                    await member.send(f"down {i}")
                    assert await member.receive() == f"down {i}"  # local delivery
                await trio.testing.wait_all_tasks_blocked()
                assert broker.lost == 5 and not broker.connected
                await redis_server.start()
                assert await member.receive() == "resync d"
                assert broker.connected and broker.resyncs == 1
                await member.send("back")
                assert await member.receive() == "back"


async def test_a_hung_redis_never_stalls_publishers_or_local_delivery(
    redis_server: RedisServer,
) -> None:
    # A Redis that stops answering without closing its sockets (SIGSTOP here; a network
    # partition in production) must not block send_to_group for good: the publisher's round
    # trips time out (counted lost), so a burst larger than the publish queue still reaches
    # the local member.
    burst = 1500  # more than PUBLISH_QUEUE_SIZE + PUBLISH_BATCH envelopes
    with trio.fail_after(TIMEOUT):
        async with in_process_server(redis_server.url, WEBSOCKET_SEND_QUEUE_SIZE=2 * burst) as app:
            broker = current_server().broker
            assert isinstance(broker, RedisBroker)
            async with WebSocketTestClient(
                app, "/redis/group/h/", receive_buffer=2 * burst
            ) as member:
                assert await member.receive() == "ready"
                assert redis_server.process is not None
                redis_server.process.send_signal(signal.SIGSTOP)
                try:
                    await member.send(f"burst {burst}")
                    received = [await member.receive() for _ in range(burst + 1)]
                    assert received == [*(str(i) for i in range(burst)), "end"]
                    assert broker.lost >= 1
                finally:
                    redis_server.process.send_signal(signal.SIGCONT)
