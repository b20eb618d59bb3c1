"""The signals wire format, version 1: JSON objects in text frames (``DjangoJSONEncoder``).

Page → server::

    {"v": 1, "type": "call", "signal": "myapp.first_signal", "kwargs": {...}}

Server → page::

    {"v": 1, "type": "hello", "window": "<window key>"}          once, after the handshake
    {"v": 1, "type": "call", "signal": "<name>", "kwargs": {...}}  run the JS functions
    {"v": 1, "type": "error", "signal": "<name>" | null, "error": "<code>", "detail": "..."}

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

__all__ = [
    "WIRE_VERSION",
    "Call",
    "WireError",
    "call_frame",
    "error_frame",
    "hello_frame",
    "parse_call",
]

WIRE_VERSION: Final = 1


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


def hello_frame(window_key: str) -> str:
    """The first frame of a connection: the window key."""
    return _dumps({"v": WIRE_VERSION, "type": "hello", "window": window_key})


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
