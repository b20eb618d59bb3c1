"""The room's "… is typing" indicator, on trio_djws signals (autodiscovered: ``chat.signals``).

The room page's view grants its window the room's topic (``set_websocket_topics``); while
someone types, ``chat/typing.js`` calls ``chat.typing`` at most every 1.5 s, and this function
calls the JavaScript ``chat.typing`` in every window granted that room (on every server
process the broker reaches). A page may only announce typing in a room its view granted.
"""

from __future__ import annotations

from typing import Any

from trio_djws.signals import WindowInfo, serialize_topic, signal, trigger

from .models import Room
from .websockets import ANONYMOUS, MAX_NICK_LENGTH

__all__ = ["room_topic", "typing"]


def room_topic(pk: int) -> str:
    """The topic of room ``pk`` (``"chat.room:<pk>"``, as for the instance)."""
    return serialize_topic(Room(pk=pk))


def in_granted_room(window_info: WindowInfo, room: object = None, **kwargs: Any) -> bool:
    """``is_allowed_to``: the window's view granted it room ``room`` (anonymous users too)."""
    return type(room) is int and room_topic(room) in window_info.topics


@signal(path="chat.typing", is_allowed_to=in_granted_room)
async def typing(window_info: WindowInfo, room: int, nick: str = "") -> None:
    """Tell the room's other windows that this window's user is typing."""
    name = window_info.username or nick.strip()[:MAX_NICK_LENGTH] or ANONYMOUS
    trigger(
        window_info, "chat.typing", to=[room_topic(room)], nick=name, window=window_info.window_key
    )
