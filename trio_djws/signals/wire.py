"""Internal: the signals wire format (its versions: the wire formats page).

The signals wire format, versions 1 and 2: JSON objects in text frames
(``DjangoJSONEncoder``).

Page → server::

    {"v": 1, "type": "call", "signal": "myapp.first_signal", "kwargs": {...}}

Server → page::

    {"v": 1, "type": "hello", "window": "<window key>"}          once, after the handshake
    {"v": 1, "type": "call", "signal": "<name>", "kwargs": {...}}  run the JS functions
    {"v": 1, "type": "error", "signal": "<name>" | null, "error": "<code>", "detail": "..."}

Version 2 adds group history (``WEBSOCKET_GROUP_HISTORY``), for the groups of a window's
topics that keep it; everything else stays version 1::

    {"v": 2, "type": "call", "signal": ..., "kwargs": {...}, "group": "<group>",
     "position": {"epoch": str, "offset": int}}                 a call through a history group
    {"v": 2, "type": "hello", "window": "<key>", "positions": {"<group>": {...}, ...}}
                                        when the window is in history groups: where each stands
    {"v": 2, "type": "resync", "group": "<group>"}   calls of that group were missed and could
                                                     not be recovered

The page remembers the last position per group and reconnects with
``?since={"<group>": "<epoch>:<offset>", ...}`` (JSON); the server then sends the calls each
group missed before the hello frame, and a ``resync`` frame for a group it could not recover.
Pages send version-1 calls only.

Error codes: ``bad_message`` (not a version-1 call object), ``unknown_signal``,
``forbidden`` (``is_allowed_to`` said no; no detail), ``bad_kwargs`` (unknown or missing
keyword, bad form data: the detail says which), ``failed`` (the function raised; logged with
its traceback on the server, no detail), ``busy`` (too many background calls pending for
this window). None of them closes the connection.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from django.core.serializers.json import DjangoJSONEncoder

from ..history import Position

__all__: list[str] = []

WIRE_VERSION: Final = 1
WIRE_VERSION_HISTORY: Final = 2  # frames that carry or concern group history
MAX_SINCE_GROUPS: Final = 64  # positions a page may send at once


class WireError(ValueError):
    """A frame from the page is not a version-1 call; the message says why."""


@dataclass(frozen=True)
class Call:
    """One call from the page."""

    signal: str
    """The signal name."""
    kwargs: dict[str, Any]
    """Its keyword arguments (decoded JSON)."""


def _dumps(data: Mapping[str, Any]) -> str:
    return json.dumps(data, cls=DjangoJSONEncoder, separators=(",", ":"))


def call_frame(signal: str, kwargs: Mapping[str, Any]) -> str:
    """The frame that runs the JavaScript functions of ``signal`` with ``kwargs``.

    Raises:
        TypeError: a value ``DjangoJSONEncoder`` cannot encode.
    """
    return _dumps({"v": WIRE_VERSION, "type": "call", "signal": signal, "kwargs": kwargs})


def history_call_frame(signal: str, kwargs: Mapping[str, Any], group: str) -> str:
    """The version-2 call frame for a history ``group`` (the broker merges ``"position"``).

    Raises:
        TypeError: a value ``DjangoJSONEncoder`` cannot encode.
    """
    return _dumps(
        {
            "v": WIRE_VERSION_HISTORY,
            "type": "call",
            "signal": signal,
            "kwargs": kwargs,
            "group": group,
        }
    )


def hello_frame(window_key: str, positions: Mapping[str, Position] | None = None) -> str:
    """The first frame of a connection: the window key, and (version 2) the position of
    each history group the window is in."""
    if not positions:
        return _dumps({"v": WIRE_VERSION, "type": "hello", "window": window_key})
    return _dumps(
        {
            "v": WIRE_VERSION_HISTORY,
            "type": "hello",
            "window": window_key,
            "positions": {group: p.as_json() for group, p in positions.items()},
        }
    )


def resync_frame(group: str) -> str:
    """Version 2: the window missed calls of ``group`` that could not be recovered."""
    return _dumps({"v": WIRE_VERSION_HISTORY, "type": "resync", "group": group})


def parse_since(text: str) -> dict[str, Position]:
    """The positions a reconnecting page sends: ``{"<group>": "<epoch>:<offset>"}`` (JSON).

    Raises:
        WireError: not a JSON object of at most MAX_SINCE_GROUPS group names mapped to
            positions.
    """
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise WireError(f"expected JSON positions, got invalid JSON ({exc})") from None
    if not isinstance(data, dict) or len(data) > MAX_SINCE_GROUPS:
        raise WireError(f"expected an object of at most {MAX_SINCE_GROUPS} group positions")
    try:
        return {str(group): Position.parse(str(value)) for group, value in data.items()}
    except ValueError as exc:
        raise WireError(str(exc)) from None


def error_frame(signal: str | None, error: str, detail: str = "") -> str:
    """An error event for the page (see the module docstring for the codes)."""
    return _dumps(
        {"v": WIRE_VERSION, "type": "error", "signal": signal, "error": error, "detail": detail}
    )


def parse_call(message: str | bytes) -> Call:
    """Decode a call from the page.

    Raises:
        WireError: binary frame, invalid JSON, another version or type, a missing or
            non-string ``signal``, ``kwargs`` not an object.
    """
    if isinstance(message, bytes):
        raise WireError("expected a text frame, got a binary frame")
    try:
        data = json.loads(message)
    except ValueError as exc:
        raise WireError(f"expected JSON, got invalid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise WireError(f"expected a JSON object, got {type(data).__name__}")
    if data.get("v") != WIRE_VERSION:
        raise WireError(f'expected "v": {WIRE_VERSION}, got {data.get("v")!r}')
    if data.get("type") != "call":
        raise WireError(f'expected "type": "call", got {data.get("type")!r}')
    name = data.get("signal")
    if not isinstance(name, str) or not name:
        raise WireError(f'expected "signal" to be a non-empty string, got {name!r}')
    kwargs = data.get("kwargs", {})
    if not isinstance(kwargs, dict):
        raise WireError(f'expected "kwargs" to be an object, got {type(kwargs).__name__}')
    return Call(name, kwargs)
