"""publish()/publish_json() (trio_djws/publish.py) and the ``websocket_publish`` command: from
a server's worker thread, from a separate process through Redis, and the clear error with the
in-memory broker."""

from __future__ import annotations

import json
import sys
from typing import Final

import pytest
import trio
from django.core.management import CommandError, call_command
from trio_websocket import open_websocket_url

import tests.redis_handlers  # noqa: F401  (registers /redis/... for the in-process server)
from tests.processes import REPO_ROOT, child_env
from tests.redis_server import RedisServer
from tests.test_brokers_redis import (
    group_members,
    in_process_server,
    redis_settings,
    servers,
)
from trio_djws import ConfigurationError, publish, publish_json
from trio_djws.brokers.sync_clients import reset_sync_clients

TIMEOUT: Final = 45.0  # seconds per test


def test_publish_outside_a_server_with_the_in_memory_broker_names_the_setting() -> None:
    with pytest.raises(ConfigurationError, match=r"WEBSOCKET_BROKER\['BACKEND'\] is"):
        publish("g", "hello")
    with pytest.raises(ConfigurationError, match="WEBSOCKET_BROKER"):
        publish_json("g", {"a": 1})
    with pytest.raises(CommandError, match="WEBSOCKET_BROKER"):
        call_command("websocket_publish", "g", "hello")


def test_publish_rejects_other_types() -> None:
    with pytest.raises(TypeError, match="str or bytes, got dict"):
        publish("g", {"a": 1})  # type: ignore[arg-type]


async def test_publish_on_the_trio_thread_points_to_send_to_group() -> None:
    with pytest.raises(RuntimeError, match="send_to_group"):
        publish("g", "x")


async def test_publish_from_a_server_worker_thread_reaches_the_group(ws_url: str) -> None:
    # In-memory broker: the plain def hook runs in a worker thread of this trio run.
    with trio.fail_after(TIMEOUT):
        async with (
            open_websocket_url(f"{ws_url}/redis/sync-publish/t/") as a,
            open_websocket_url(f"{ws_url}/redis/sync-publish/t/") as b,
        ):
            await a.send_message("from a thread")
            assert await a.get_message() == "from a thread"
            assert await b.get_message() == "from a thread"


async def test_publish_from_a_separate_process_reaches_clients(redis_server: RedisServer) -> None:
    env = child_env(
        "tests.launcher_settings",
        LAUNCHER_TEST_SETTINGS=json.dumps(redis_settings(redis_server.url)),
    )
    script = (
        "import django; django.setup()\n"
        "from trio_djws import publish, publish_json\n"
        "publish('g', 'plain')\n"
        "publish('g', b'\\x00bytes')\n"
        "publish_json('g', {'n': 1})\n"
    )
    with trio.fail_after(TIMEOUT):
        async with servers(2, redis_server.url) as (one, two):
            async with group_members(one, two) as (a, b):
                await trio.run_process([sys.executable, "-c", script], env=env, cwd=REPO_ROOT)
                command = [sys.executable, "-m", "django", "websocket_publish", "g", "by command"]
                await trio.run_process(command, env=env, cwd=REPO_ROOT)
                for ws in (a, b):
                    received = [await ws.get_message() for _ in range(4)]
                    assert received == ["plain", b"\x00bytes", '{"n": 1}', "by command"]


async def test_publish_from_a_separate_process_without_redis_raises_broker_error(
    redis_server: RedisServer,
) -> None:
    await redis_server.stop()
    env = child_env(
        "tests.launcher_settings",
        LAUNCHER_TEST_SETTINGS=json.dumps(redis_settings(redis_server.url)),
    )
    command = [sys.executable, "-m", "django", "websocket_publish", "g", "lost"]
    with trio.fail_after(TIMEOUT):
        result = await trio.run_process(
            command, env=env, cwd=REPO_ROOT, check=False, capture_stderr=True
        )
    assert result.returncode != 0
    assert f"could not publish to group 'g' on {redis_server.url}" in result.stderr.decode()


async def test_publish_from_a_plain_thread_of_a_server_process_reaches_its_members(
    redis_server: RedisServer,
) -> None:
    # A thread trio did not start (threading.Thread, a thread pool, a scheduler) in a process
    # that runs a server on the RedisBroker publishes through redis-py. That process has not
    # delivered the message locally, so its own subscriber must not skip it as its own.
    from functools import partial

    from trio_djws.testing import WebSocketTestClient

    with trio.fail_after(TIMEOUT):
        async with in_process_server(redis_server.url) as app:
            async with WebSocketTestClient(app, "/redis/group/p/") as member:
                assert await member.receive() == "ready"
                await trio.to_thread.run_sync(
                    _in_a_plain_thread, partial(publish, "p", "from a plain thread")
                )
                with trio.fail_after(10):
                    assert await member.receive() == "from a plain thread"
    reset_sync_clients()


def _in_a_plain_thread(fn: object) -> None:
    # Run fn in a threading.Thread (not one of trio's worker threads) and wait for it.
    import threading

    errors: list[BaseException] = []

    def run() -> None:
        try:
            fn()  # type: ignore[operator]
        except BaseException as exc:  # noqa: BLE001  (re-raised in the caller below)
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
