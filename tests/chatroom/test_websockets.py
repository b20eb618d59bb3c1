"""The chat handler (``chat.websockets``) against a live Hypercorn trio server, with the ORM
on the database the run was started with (SQLite or PostgreSQL)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import pytest
import trio
from chat.models import Message, Room
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    WebSocketConnection,
    open_websocket_url,
)

from trio_djws import database_sync_to_thread

pytestmark = pytest.mark.django_db(transaction=True)  # the handler's ORM runs in threads

M_KEYS = {"id", "author", "text", "created"}


@pytest.fixture(autouse=True)
def rooms(transactional_db: None) -> None:
    """Rooms lobby and random (the flush after each transactional test removes the seeded
    ones)."""
    for slug, name in [("lobby", "Lobby"), ("random", "Random")]:
        Room.objects.get_or_create(slug=slug, defaults={"name": name})


async def receive_json(ws: WebSocketConnection) -> Any:
    """The next frame other than ``presence``, decoded; the protocol only sends JSON text
    frames (presence frames come on every join and leave: tests/chatroom/test_presence.py)."""
    while True:
        frame = await ws.get_message()
        assert isinstance(frame, str), f"expected a text frame, got {frame!r}"
        data = json.loads(frame)
        if not (isinstance(data, dict) and data.get("type") == "presence"):
            return data


def chat_url(ws_url: str, room: str = "lobby", query: str = "") -> str:
    """The URL of a room's WebSocket on the live server."""
    return f"{ws_url}/ws/chat/{room}/{query}"


@database_sync_to_thread
def post_messages(slug: str, count: int) -> list[int]:
    """Save ``count`` messages directly through the ORM; returns their ids."""
    room = Room.objects.get(slug=slug)
    return [
        Message.objects.create(room=room, author="seed", text=f"message {i}").pk
        for i in range(count)
    ]


@database_sync_to_thread
def stored(message_id: int) -> Mapping[str, Any] | None:
    """The stored message as a dict, or None."""
    return (
        Message.objects.filter(pk=message_id)
        .values("room__slug", "author", "text", "created")
        .first()
    )


@database_sync_to_thread
def message_count() -> int:
    """How many messages are stored, in every room."""
    return Message.objects.count()


async def test_history_on_connect_is_the_last_50_oldest_first(ws_url: str) -> None:
    ids = await post_messages("lobby", 55)
    async with open_websocket_url(chat_url(ws_url)) as ws:
        history = await receive_json(ws)
    assert history["type"] == "history"
    assert set(history) == {"type", "messages", "position"}
    messages = history["messages"]
    assert [m["id"] for m in messages] == ids[-50:]
    assert [m["text"] for m in messages] == [f"message {i}" for i in range(5, 55)]
    for m in messages:
        assert set(m) == M_KEYS
        assert isinstance(m["id"], int)
        assert isinstance(datetime.fromisoformat(m["created"]), datetime)


async def test_history_of_an_empty_room_is_an_empty_list(ws_url: str) -> None:
    async with open_websocket_url(chat_url(ws_url, "random")) as ws:
        history = await receive_json(ws)
    assert history["messages"] == [] and history["position"]["offset"] == 0


async def test_message_is_saved_then_broadcast_to_every_client(ws_url: str) -> None:
    async with (
        open_websocket_url(chat_url(ws_url, query="?nick=alice")) as alice,
        open_websocket_url(chat_url(ws_url, query="?nick=bob")) as bob,
    ):
        assert (await receive_json(alice))["type"] == "history"
        assert (await receive_json(bob))["type"] == "history"
        await alice.send_message(json.dumps({"type": "message", "text": "hello <b>bob</b>"}))
        to_bob = await receive_json(bob)
        # Saved before the broadcast: the row exists as soon as any client has the message.
        row = await stored(to_bob["id"])
        to_alice = await receive_json(alice)
    assert to_bob == to_alice
    assert set(to_bob) == {"type", "position"} | M_KEYS
    assert to_bob["type"] == "message"
    assert (to_bob["author"], to_bob["text"]) == ("alice", "hello <b>bob</b>")
    assert row is not None
    assert (row["room__slug"], row["author"], row["text"]) == ("lobby", "alice", "hello <b>bob</b>")
    assert datetime.fromisoformat(to_bob["created"]) == row["created"].replace(
        microsecond=row["created"].microsecond // 1000 * 1000
    )


async def test_history_holds_what_was_broadcast(ws_url: str) -> None:
    async with open_websocket_url(chat_url(ws_url, query="?nick=alice")) as alice:
        await receive_json(alice)
        await alice.send_message(json.dumps({"type": "message", "text": "remember me"}))
        broadcast = await receive_json(alice)
    async with open_websocket_url(chat_url(ws_url)) as late:
        history = await receive_json(late)
    broadcast.pop("type")
    assert broadcast.pop("position") == history["position"]  # nothing newer since
    assert history["messages"] == [broadcast]


async def test_messages_stay_in_their_room(ws_url: str) -> None:
    async with (
        open_websocket_url(chat_url(ws_url)) as lobby,
        open_websocket_url(chat_url(ws_url, "random")) as random,
    ):
        await receive_json(lobby)
        await receive_json(random)
        await lobby.send_message(json.dumps({"type": "message", "text": "lobby only"}))
        assert (await receive_json(lobby))["text"] == "lobby only"
        # Had the lobby message reached random, it would be queued before this one.
        await random.send_message(json.dumps({"type": "message", "text": "random only"}))
        assert (await receive_json(random))["text"] == "random only"


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ("hello", "expected JSON, got invalid JSON"),
        ('["message"]', "expected a JSON object, got an array"),
        ('"message"', "expected a JSON object, got a string"),
        ('{"text": "hi"}', 'expected "type": "message", got no "type" field'),
        ('{"type": "typing", "text": "hi"}', 'expected "type": "message", got "typing"'),
        ('{"type": "message"}', 'expected a "text" string, got no "text" field'),
        ('{"type": "message", "text": 42}', 'expected "text" to be a string, got a number'),
        ('{"type": "message", "text": ""}', "got an empty string"),
        ('{"type": "message", "text": " \\n\\t "}', "got only whitespace"),
        (json.dumps({"type": "message", "text": "x" * 2001}), "1 to 2000 characters, got 2001"),
        (b'{"type": "message", "text": "hi"}', "expected a JSON text frame, got a binary frame"),
        ('{"type": "message", "text": "a\\u0000b"}', 'expected "text" without NUL characters'),
    ],
    ids=[
        "bad-json",
        "array",
        "string",
        "no-type",
        "wrong-type",
        "no-text",
        "text-not-string",
        "empty-text",
        "blank-text",
        "text-too-long",
        "binary-frame",
        "nul-character",  # PostgreSQL refuses NUL in text (DataError): was 1011 + a traceback
    ],
)
async def test_invalid_frame_gets_an_error_and_the_connection_stays_open(
    ws_url: str, frame: str | bytes, reason: str
) -> None:
    async with open_websocket_url(chat_url(ws_url)) as ws:
        await receive_json(ws)
        await ws.send_message(frame)
        error = await receive_json(ws)
        assert set(error) == {"type", "error"}
        assert error["type"] == "error"
        assert reason in error["error"]
        await ws.send_message(json.dumps({"type": "message", "text": "still here"}))
        assert (await receive_json(ws))["text"] == "still here"
    assert await message_count() == 1


async def test_text_limit_counts_characters_not_bytes(ws_url: str) -> None:
    text = "\N{SLIGHTLY SMILING FACE}" * 2000  # 2000 characters, 8000 bytes of UTF-8
    async with open_websocket_url(chat_url(ws_url)) as ws:
        await receive_json(ws)
        await ws.send_message(json.dumps({"type": "message", "text": text}))
        message = await receive_json(ws)
    assert message["type"] == "message"
    assert message["text"] == text


@pytest.mark.parametrize(
    ("query", "author"),
    [
        ("?nick=alice", "alice"),
        ("?nick=%20%20Zo%C3%AB%20", "Zoë"),
        ("?nick=" + "n" * 32, "n" * 32),
        ("?nick=" + "n" * 33, "anonymous"),
        ("?nick=%20%20", "anonymous"),
        ("?nick=", "anonymous"),
        ("", "anonymous"),
        ("?nick=a%00b", "anonymous"),
    ],
    ids=["plain", "stripped-unicode", "32-chars", "33-chars", "blank", "empty", "absent", "nul"],
)
async def test_author_is_the_nick_query_else_anonymous(
    ws_url: str, query: str, author: str
) -> None:
    async with open_websocket_url(chat_url(ws_url, query=query)) as ws:
        await receive_json(ws)
        await ws.send_message(json.dumps({"type": "message", "text": "who am I?"}))
        assert (await receive_json(ws))["author"] == author


async def test_unknown_room_is_rejected_with_404(ws_url: str) -> None:
    with pytest.raises(ConnectionRejected) as info:
        async with open_websocket_url(chat_url(ws_url, "no-such-room")):
            pass  # pragma: no cover
    assert info.value.status_code == 404


async def test_concurrent_senders_reach_every_client_once_in_one_order(ws_url: str) -> None:
    clients = 8
    joined = 0
    all_joined = trio.Event()
    received: dict[int, list[str]] = {}

    async def client(n: int) -> None:
        nonlocal joined
        async with open_websocket_url(chat_url(ws_url, query=f"?nick=c{n}")) as ws:
            await receive_json(ws)  # the history comes after the join: now a member
            joined += 1
            if joined == clients:
                all_joined.set()
            await all_joined.wait()
            await ws.send_message(json.dumps({"type": "message", "text": f"from {n}"}))
            received[n] = [(await receive_json(ws))["text"] for _ in range(clients)]

    async with trio.open_nursery() as nursery:
        for n in range(clients):
            nursery.start_soon(client, n)
    assert await message_count() == clients
    orders = {tuple(texts) for texts in received.values()}
    assert len(orders) == 1  # one fan-out per message: every member sees the same order
    assert sorted(orders.pop()) == sorted(f"from {n}" for n in range(clients))


async def test_flooding_client_is_closed_with_1008(ws_url: str) -> None:
    # WEBSOCKET_RATE_LIMIT 10/s after a burst of 20 (chatroom.settings); was: no limit (one
    # client wrote 7,869 rows in 60 s).
    flood = 100
    async with open_websocket_url(chat_url(ws_url)) as ws:
        await receive_json(ws)
        for i in range(flood):
            await ws.send_message(json.dumps({"type": "message", "text": f"flood {i}"}))
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await ws.get_message()
    assert (closed.value.reason.code, closed.value.reason.reason) == (1008, "rate limit")
    assert 20 <= await message_count() < flood


MISSED = 15  # messages a reconnecting client missed


def since(frame: Mapping[str, Any]) -> str:
    """``since=<epoch>:<offset>`` for the position a frame carries."""
    return f"since={frame['position']['epoch']}:{frame['position']['offset']}"


async def send_text(ws: WebSocketConnection, text: str) -> None:
    await ws.send_message(json.dumps({"type": "message", "text": text}))


async def test_a_reconnect_with_since_gets_exactly_the_missed_messages(ws_url: str) -> None:
    async with open_websocket_url(chat_url(ws_url, query="?nick=bob")) as bob:
        assert (await receive_json(bob))["type"] == "history"
        async with open_websocket_url(chat_url(ws_url, query="?nick=alice")) as alice:
            assert (await receive_json(alice))["type"] == "history"
            await send_text(alice, "seen")
            last = await receive_json(alice)
            assert (await receive_json(bob))["text"] == "seen"
        for i in range(MISSED):  # alice is away (fewer than WEBSOCKET_RATE_BURST)
            await send_text(bob, f"missed {i}")
            assert (await receive_json(bob))["text"] == f"missed {i}"
        query = f"?nick=alice&{since(last)}"
        async with open_websocket_url(chat_url(ws_url, query=query)) as alice:
            assert await receive_json(alice) == {"type": "recovery", "recovered": True}
            missed = [await receive_json(alice) for _ in range(MISSED)]
            assert [m["text"] for m in missed] == [f"missed {i}" for i in range(MISSED)]
            assert {m["type"] for m in missed} == {"message"}
            offset = last["position"]["offset"]
            assert [m["position"]["offset"] for m in missed] == list(
                range(offset + 1, offset + MISSED + 1)
            )
            # Then live, and no history frame.
            await send_text(bob, "live")
            assert (await receive_json(alice))["text"] == "live"


@pytest.mark.parametrize("position", ["0123456789abcdef:1", "not-a-position"])
async def test_a_since_that_cannot_be_recovered_gets_false_then_the_history(
    ws_url: str, position: str
) -> None:
    await post_messages("lobby", 3)
    async with open_websocket_url(chat_url(ws_url, query=f"?since={position}")) as ws:
        assert await receive_json(ws) == {"type": "recovery", "recovered": False}
        history = await receive_json(ws)
    assert history["type"] == "history" and len(history["messages"]) == 3
