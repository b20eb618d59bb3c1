"""The chatroom's presence frames and its ``on_resync`` (history sent again), against a live
Hypercorn trio server (the in-memory broker; the Redis paths are covered by the library's
tests/test_presence.py and tests/test_brokers_redis.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio
from chat.models import Room
from trio_websocket import WebSocketConnection, open_websocket_url

from trio_djws.state import current_server

pytestmark = pytest.mark.django_db(transaction=True)  # the handler's ORM runs in threads


@pytest.fixture(autouse=True)
def rooms(transactional_db: None) -> None:
    Room.objects.get_or_create(slug="lobby", defaults={"name": "Lobby"})


async def next_of_type(ws: WebSocketConnection, kind: str) -> Any:
    """The next frame of type ``kind``, decoded (others are skipped)."""
    while True:
        data = json.loads(await ws.get_message())
        if data["type"] == kind:
            return data


async def test_presence_lists_who_is_in_the_room_on_every_change(ws_url: str) -> None:
    with trio.fail_after(20):
        async with open_websocket_url(f"{ws_url}/ws/chat/lobby/?nick=ann") as ann:
            assert (await next_of_type(ann, "presence"))["users"] == ["ann"]
            async with open_websocket_url(f"{ws_url}/ws/chat/lobby/?nick=ben") as ben:
                assert (await next_of_type(ben, "presence"))["users"] == ["ann", "ben"]
                assert (await next_of_type(ann, "presence"))["users"] == ["ann", "ben"]
            assert (await next_of_type(ann, "presence"))["users"] == ["ann"]


async def test_presence_counts_anonymous_connections(ws_url: str) -> None:
    # Anonymous tabs share one identity: the frame lists it once and counts its connections.
    with trio.fail_after(20):
        async with open_websocket_url(f"{ws_url}/ws/chat/lobby/") as first:
            frame = await next_of_type(first, "presence")
            assert (frame["users"], frame["anonymous"]) == (["anonymous"], 1)
            async with open_websocket_url(f"{ws_url}/ws/chat/lobby/") as second:
                frame = await next_of_type(second, "presence")
                assert (frame["users"], frame["anonymous"]) == (["anonymous"], 2)
                assert (await next_of_type(first, "presence"))["anonymous"] == 2
            frame = await next_of_type(first, "presence")
            assert frame["anonymous"] == 1


async def test_on_resync_sends_the_history_again(ws_url: str) -> None:
    with trio.fail_after(20):
        async with open_websocket_url(f"{ws_url}/ws/chat/lobby/?nick=ann") as ann:
            assert (await next_of_type(ann, "history"))["messages"] == []
            await ann.send_message(json.dumps({"type": "message", "text": "kept"}))
            saved = await next_of_type(ann, "message")
            # What the RedisBroker does after a reconnect, for this process's members.
            server = current_server()
            assert server.groups.resync("chat.lobby") == 1
            history = await next_of_type(ann, "history")
            assert [m["id"] for m in history["messages"]] == [saved["id"]]
