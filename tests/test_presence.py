"""Presence (trio_djws/presence.py): in memory, and across processes through Redis with
heartbeats and expiry (a killed worker's members vanish within a bounded time)."""

from __future__ import annotations

import json
import signal
from types import SimpleNamespace
from typing import Final

import pytest
import redis
import trio
import trio.testing
from django.contrib.auth.models import AnonymousUser, User
from trio_websocket import WebSocketConnection, open_websocket_url

import tests.redis_handlers  # noqa: F401  (registers /redis/presence/... in this process)
from tests.redis_server import RedisServer
from tests.test_brokers_redis import in_process_server, server_url, servers
from trio_djws import presence
from trio_djws.asgi import get_asgi_application
from trio_djws.brokers.envelope import KIND_PRESENCE, decode_envelope
from trio_djws.testing import WebSocketTestClient

TIMEOUT: Final = 45.0  # seconds per test
TTL: Final = 1.0  # seconds: WEBSOCKET_PRESENCE_TTL of the Redis servers here


def test_identity_is_the_username_then_the_name_then_the_connection_id() -> None:
    logged_in = SimpleNamespace(id="c1", user=User(username="carol"))
    anonymous = SimpleNamespace(id="c2", user=AnonymousUser())
    no_user = SimpleNamespace(id="c3")
    assert presence.identity(logged_in, "nick") == "carol"  # type: ignore[arg-type]
    assert presence.identity(anonymous, "nick") == "nick"  # type: ignore[arg-type]
    assert presence.identity(no_user, "") == "c3"  # type: ignore[arg-type]


async def next_users(client: WebSocketTestClient) -> list[str]:
    data = await client.receive_json()
    assert isinstance(data, dict) and data["type"] == "presence"
    return list(data["users"])


async def test_in_memory_presence_is_announced_on_every_change_and_counts_connections() -> None:
    app = get_asgi_application()
    path = "/redis/presence/room/"
    async with WebSocketTestClient(app, path, query_string="name=alice") as alice:
        assert await next_users(alice) == ["alice"]
        async with WebSocketTestClient(app, path, query_string="name=bob") as bob:
            assert await next_users(alice) == ["alice", "bob"]
            assert await next_users(bob) == ["alice", "bob"]
            async with WebSocketTestClient(app, path, query_string="name=bob") as bob2:
                assert await next_users(bob2) == ["alice", "bob"]
                assert await next_users(alice) == ["alice", "bob"]  # bob's count changed
                await alice.send("members")
                assert await alice.receive_json() == {"alice": 1, "bob": 2}
        assert await next_users(alice) == ["alice", "bob"]  # bob2 left: bob still has one
        assert await next_users(alice) == ["alice"]


async def wait_for_users(ws: WebSocketConnection, users: list[str]) -> None:
    """Read presence frames until one lists exactly ``users``."""
    while True:
        data = json.loads(await ws.get_message())
        if data.get("type") == "presence" and data["users"] == users:
            return


async def test_presence_across_processes_expires_a_killed_workers_members(
    redis_server: RedisServer,
) -> None:
    with trio.fail_after(TIMEOUT):
        async with servers(2, redis_server.url, WEBSOCKET_PRESENCE_TTL=TTL) as (one, two):
            url_one, url_two = await server_url(one), await server_url(two)
            async with open_websocket_url(f"{url_one}/redis/presence/p/?name=alice") as alice:
                await wait_for_users(alice, ["alice"])
                async with open_websocket_url(f"{url_two}/redis/presence/p/?name=bob") as bob:
                    await wait_for_users(alice, ["alice", "bob"])
                    await wait_for_users(bob, ["alice", "bob"])
                    await bob.send_message("members")
                    while (data := json.loads(await bob.get_message())) and "type" in data:
                        pass
                    assert data == {"alice": 1, "bob": 1}
                # A user who leaves: gone within 3 x TTL (at once, in fact: no expiry needed).
                with trio.fail_after(3 * TTL):
                    await wait_for_users(alice, ["alice"])
                bob2_url = f"{url_two}/redis/presence/p/?name=bob2"
                async with open_websocket_url(bob2_url, disconnect_timeout=1) as bob2:
                    await wait_for_users(alice, ["alice", "bob2"])
                    await wait_for_users(bob2, ["alice", "bob2"])
                    two.process.send_signal(signal.SIGKILL)  # no goodbye: only expiry helps
                    with trio.fail_after(3 * TTL):
                        await wait_for_users(alice, ["alice"])
            assert one.process.poll() is None


async def test_a_server_that_stops_normally_removes_its_presence_at_once(
    redis_server: RedisServer,
) -> None:
    # A TTL far beyond the deadline: only the shutdown's own cleanup can pass this test.
    with trio.fail_after(TIMEOUT):
        async with servers(2, redis_server.url, WEBSOCKET_PRESENCE_TTL=300) as (one, two):
            url_one, url_two = await server_url(one), await server_url(two)
            async with open_websocket_url(f"{url_one}/redis/presence/q/?name=alice") as alice:
                async with open_websocket_url(f"{url_two}/redis/presence/q/?name=bob") as bob:
                    await wait_for_users(alice, ["alice", "bob"])
                    await wait_for_users(bob, ["alice", "bob"])
                    two.process.send_signal(signal.SIGTERM)
                    with trio.fail_after(10):
                        await wait_for_users(alice, ["alice"])
                    assert await two.wait_exit() == 0


async def test_presence_is_removed_when_the_server_stops_mid_write(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    # A member's leave starts a presence write; the server stops while that write waits for
    # Redis (SIGSTOPped here to hold it there, as a busy machine does for a moment), so the
    # shutdown cancels it. The shutdown's cleanup must still remove the presence and tell
    # the other processes, on a connection of its own (the TTL is far beyond the test).
    client = redis.Redis.from_url(redis_server.url)
    others = client.pubsub()  # hears what another process would
    assert redis_server.process is not None
    process = redis_server.process

    async def resume_redis_once_all_wait() -> None:
        await trio.testing.wait_all_tasks_blocked()  # the cleanup is waiting for Redis
        process.send_signal(signal.SIGCONT)

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            async with in_process_server(redis_server.url, WEBSOCKET_PRESENCE_TTL=300) as app:
                async with WebSocketTestClient(
                    app, "/redis/presence/z/", query_string="name=zoe"
                ) as zoe:
                    assert await next_users(zoe) == ["zoe"]  # written to Redis, then announced
                    await trio.to_thread.run_sync(others.subscribe, "test:group:z")
                    confirmation = await trio.to_thread.run_sync(others.get_message, False, 10.0)
                    assert confirmation is not None and confirmation["type"] == "subscribe"
                    process.send_signal(signal.SIGSTOP)
                # zoe has left: the presence task's write is sent, and waits for Redis.
                await trio.testing.wait_all_tasks_blocked()
                nursery.start_soon(resume_redis_once_all_wait)
        message = await trio.to_thread.run_sync(others.get_message, False, 10.0)
        assert message is not None, "the other processes were never told to look again"
        assert decode_envelope(message["data"]).kind == KIND_PRESENCE
        assert await trio.to_thread.run_sync(client.keys, "test:presence*") == []
    assert not [r for r in caplog.records if "presence left in Redis" in r.getMessage()]
    others.close()
    client.close()
