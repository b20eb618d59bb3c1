"""The chat's WebSocket handler at ``/ws/chat/<slug:room>/`` and its JSON wire protocol.

``trio_djws`` imports this module at startup (every installed app's ``websockets`` module).
Every frame is a JSON object in a text frame:

- client → server: ``{"type": "message", "text": "..."}`` with 1 to 2000 characters of text
  (not only whitespace, no NUL character; stored as sent). Anything else (invalid JSON,
  another shape or type, empty or too long text, text with NUL, a binary frame) is answered with
  ``{"type": "error", "error": "<reason>"}`` and the connection stays open. Frames over
  ``WEBSOCKET_MAX_MESSAGE_SIZE`` (64 KiB here) are closed with 1009 instead.
- server → client: on connect ``{"type": "history", "messages": [M, ...], "position": P}``
  (the room's last 50 messages, oldest first, and the room's position ``P =
  {"epoch": str, "offset": int}`` when they were read), then ``{"type": "message", **M,
  "position": P}`` for every new message, where ``M = {"id": int, "author": str, "text":
  str, "created": ISO 8601 str}``;
  ``{"type": "presence", "users": [str, ...], "anonymous": int}`` (who is in the room on every
  server process, sorted; ``anonymous`` counts the connections without a name, which ``users``
  lists once as ``"anonymous"``) right after joining and on every change
  (``trio_djws.presence``); and the history
  again after the server lost Redis for a while (``on_resync``: messages broadcast meanwhile
  did not reach this process; clients merge by ``id``).

Recovery: a client that lost its socket reconnects with ``?since=<epoch>:<offset>`` (the
last position it saw). The server then sends ``{"type": "recovery", "recovered": true}``
followed by exactly the messages it missed, oldest first, as ``message`` frames, instead of
the history frame; or, when the room's history cannot cover the gap (another epoch: the
server or Redis lost it; or more than ``WEBSOCKET_GROUP_HISTORY`` keeps),
``{"type": "recovery", "recovered": false}`` followed by the usual history frame. The rooms'
groups (``chat.*``) keep history through the project's settings.

The author is the logged-in user's username (the session cookie on the handshake, read by
``DjangoMiddlewareMixin``; log in at ``/accounts/login/``), else the ``?nick=`` query parameter
(1 to 32 characters after stripping), else ``"anonymous"``. An unknown room slug refuses the
handshake with HTTP 404.

Ordering: a connection joins the room's group *before* it reads the history, so no message is
lost in between; a message broadcast while the history is being read can therefore arrive
just before the history frame and also be in it. Clients de-duplicate by ``id`` (ids grow
with every message). Recovered messages arrive once each, in order.

The ORM only ever runs in worker threads (``database_sync_to_thread``); a query on the trio
thread would block every connection, and trio_djws's guard raises SynchronousOnlyOperation.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Final

import trio
from django.http import QueryDict

from trio_djws import (
    BaseWSClass,
    JoinResult,
    Namespace,
    Position,
    Reject,
    WebSocket,
    database_sync_to_thread,
    presence,
    send_group_json,
)
from trio_djws.mixins import DjangoMiddlewareMixin
from trio_djws.typing import Message as Frame  # one WebSocket message; Message is the model

from .models import Message, MessagePayload, Room

__all__ = [
    "ChatHandler",
    "ProtocolError",
    "author_of",
    "group_name",
    "nickname",
    "parse_text",
    "presence_frame",
]

logger = logging.getLogger(__name__)

MAX_TEXT_LENGTH: Final = 2000  # characters (code points)
MAX_NICK_LENGTH: Final = 32  # characters, as Message.author
HISTORY_LENGTH: Final = 50  # messages sent on connect
ANONYMOUS: Final = "anonymous"
# A saved message is broadcast even if its sender disconnects meanwhile; this bounds the
# shielded save + broadcast when the server is shutting down.
_SAVE_AND_BROADCAST_TIMEOUT: Final = 10.0  # seconds

_JSON_TYPE_NAMES: Final = {
    dict: "an object",
    list: "an array",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "a boolean",
    type(None): "null",
}


class ProtocolError(ValueError):
    """A client frame that breaks the protocol; ``str(exc)`` is the reason sent back."""


def _json_type(value: object) -> str:
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def parse_text(frame: Frame) -> str:
    """Validate one client frame and return the text of the chat message it carries.

    Raises:
        ProtocolError: the frame is not ``{"type": "message", "text": "<1..2000 chars>"}``;
            the message says what was expected and what arrived.
    """
    if isinstance(frame, bytes):
        raise ProtocolError("expected a JSON text frame, got a binary frame")
    try:
        data = json.loads(frame)
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"expected JSON, got invalid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ProtocolError(f"expected a JSON object, got {_json_type(data)}")
    if "type" not in data:
        raise ProtocolError('expected "type": "message", got no "type" field')
    if data["type"] != "message":
        raise ProtocolError(f'expected "type": "message", got {json.dumps(data["type"])}')
    if "text" not in data:
        raise ProtocolError('expected a "text" string, got no "text" field')
    text = data["text"]
    if not isinstance(text, str):
        raise ProtocolError(f'expected "text" to be a string, got {_json_type(text)}')
    if not text.strip():
        raise ProtocolError(
            f'expected "text" to have 1 to {MAX_TEXT_LENGTH} characters, '
            + ("got an empty string" if not text else "got only whitespace")
        )
    if len(text) > MAX_TEXT_LENGTH:
        raise ProtocolError(
            f'expected "text" to have 1 to {MAX_TEXT_LENGTH} characters, got {len(text)}'
        )
    if "\x00" in text:
        # PostgreSQL cannot store NUL in a text column (DataError), SQLite would: refused on
        # every database alike.
        raise ProtocolError('expected "text" without NUL characters (U+0000), got one')
    return text


def nickname(query: QueryDict) -> str:
    """The author name for a connection: ``?nick=`` stripped if 1 to 32 characters long
    without a NUL character (which PostgreSQL cannot store), else ``"anonymous"``."""
    nick = query.get("nick", "").strip()
    return nick if 1 <= len(nick) <= MAX_NICK_LENGTH and "\x00" not in nick else ANONYMOUS


def author_of(websocket: WebSocket) -> str:
    """The author name of a connection: the logged-in user's username (cut to 32 characters,
    the model's limit), else ``nickname(websocket.query)``."""
    user = websocket.user
    if user is not None and user.is_authenticated:
        return user.get_username()[:MAX_NICK_LENGTH]
    return nickname(websocket.query)


def presence_frame(members: Mapping[str, int]) -> str:
    """The ``presence`` frame for a room's members (identity → connections): anonymous tabs
    share one identity, so their count is sent too (the page shows "2 anonymous")."""
    return json.dumps(
        {"type": "presence", "users": sorted(members), "anonymous": members.get(ANONYMOUS, 0)}
    )


def since_of(query: QueryDict) -> Position | None:
    """The position a reconnecting client gives with ``?since=<epoch>:<offset>``; None when
    absent or malformed (the client then gets the history, as on a first visit)."""
    try:
        return Position.parse(query.get("since", ""))
    except ValueError:
        return None


def group_name(slug: str) -> str:
    """The trio_djws group of a room's connections."""
    return f"chat.{slug}"


@database_sync_to_thread
def _room_id(slug: str) -> int | None:
    """The room's primary key, None if there is no such room. Runs in a worker thread."""
    room_id: int | None = Room.objects.filter(slug=slug).values_list("pk", flat=True).first()
    return room_id


@database_sync_to_thread
def _history(room_id: int) -> list[MessagePayload]:
    """The room's last HISTORY_LENGTH messages, oldest first. Runs in a worker thread."""
    newest = list(Message.objects.filter(room_id=room_id).order_by("-id")[:HISTORY_LENGTH])
    newest.reverse()
    return [message.payload() for message in newest]


@database_sync_to_thread
def _save_message(room_id: int, author: str, text: str) -> MessagePayload:
    """Save one message and return its payload. Runs in a worker thread."""
    return Message.objects.create(room_id=room_id, author=author, text=text).payload()


@Namespace("/ws/chat/<slug:room>/")
class ChatHandler(DjangoMiddlewareMixin, BaseWSClass):
    """One chat connection: history on connect, then every message of the room.

    ``DjangoMiddlewareMixin`` runs ``WEBSOCKET_MIDDLEWARE`` (sessions and auth) on the
    handshake first, so ``websocket.user`` is the logged-in user or ``AnonymousUser``.
    Handshake: HTTP 404 for an unknown room slug (``Reject(404)``).
    """

    def __init__(self) -> None:
        self.room_id = 0
        self.group = ""
        self.author = ANONYMOUS

    async def on_connect(self, websocket: WebSocket, path: str) -> None:
        """Join the room's group, recovering from ``?since=`` if given; then, unless
        recovered, queue the history (sent right after the accept).

        Raises:
            Reject: HTTP 404, no room has this slug.
        """
        slug: str = websocket.kwargs["room"]
        self.group = group_name(slug)
        self.author = author_of(websocket)
        room_id = await _room_id(slug)
        if room_id is None:
            raise Reject(404, f"no room with slug {slug!r}")
        self.room_id = room_id
        since = since_of(websocket.query)
        asked = "since" in websocket.query  # a malformed position is answered "false"

        async def recovery(result: JoinResult) -> None:
            # Before the missed messages (or the history): which of the two follows.
            if asked:
                await websocket.send_json({"type": "recovery", "recovered": result.recovered})

        # Join first: anything saved after the history read below is broadcast to us too.
        result = await websocket.join(self.group, since=since, before_messages=recovery)
        # Present in the room under the nickname (trio_djws.presence: the username once
        # logged in); the presence frame may come before or after the history.
        await presence.join(websocket, self.group, self.author, announce=presence_frame)
        if not result.recovered:
            await self._send_history(websocket, result.position)

    async def _send_history(self, websocket: WebSocket, position: Position | None) -> None:
        frame: dict[str, object] = {"type": "history", "messages": await _history(self.room_id)}
        if position is not None:
            # The room's position before the read: messages after it are in the history or
            # still to come live, so a page that drops now can recover from here.
            frame["position"] = position.as_json()
        await websocket.send_json(frame)

    async def on_resync(self, websocket: WebSocket, group: str) -> None:
        """Messages broadcast while the server had lost Redis never reached this process (and
        the room's history could not fill the gap): send the history again (clients merge it
        by ``id``)."""
        await self._send_history(websocket, None)

    async def on_message(self, websocket: WebSocket, message: Frame) -> None:
        """Save a valid chat message, then broadcast it to the room; answer anything else
        with an ``error`` frame."""
        try:
            text = parse_text(message)
        except ProtocolError as exc:
            await websocket.send_json({"type": "error", "error": str(exc)})
            return
        # Saved before it is broadcast, so the history holds everything clients were sent;
        # shielded so that a saved message is broadcast even if this connection closes
        # meanwhile (bounded for server shutdown).
        with trio.move_on_after(_SAVE_AND_BROADCAST_TIMEOUT, shield=True) as scope:
            saved = await _save_message(self.room_id, self.author, text)
            await send_group_json(self.group, {"type": "message", **saved})
        if scope.cancelled_caught:
            logger.warning(
                "message from %r in group %s not saved or not broadcast within %s seconds",
                self.author,
                self.group,
                _SAVE_AND_BROADCAST_TIMEOUT,
            )
