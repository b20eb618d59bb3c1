"""Group history: positions, the ``WEBSOCKET_GROUP_HISTORY`` setting and how a position
reaches the client.

A group with history keeps its last messages (``SIZE``, for ``TTL`` seconds after the last
one) in the broker, each at an **offset** that grows by exactly one per message. The
**epoch** is a random token made with the history and made again whenever the history is
lost (the in-memory broker restarted, the Redis keys expired, were deleted or flushed). A
**position** ``(epoch, offset)`` therefore names one message for good: a client that
remembers the last position it saw can rejoin with ``websocket.join(group, since=position)``
and get exactly what it missed, or learn that it cannot (``recovered`` is False).

The setting maps group-name patterns (``fnmatch``: ``*``, ``?``, ``[...]``; the first
pattern that matches wins, in the order written) to a policy::

    WEBSOCKET_GROUP_HISTORY = {
        "chat.*": {"SIZE": 1000, "TTL": 3600},        # messages, seconds
        "news": {"SIZE": 100, "TTL": 600, "FORMATTER": "myapp.ws.news_position"},
    }

Off by default (``{}``): groups that match no pattern keep no history and behave as before.
"""

from __future__ import annotations

import fnmatch
import functools
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from django.utils.module_loading import import_string

from .conf import get_settings
from .exceptions import ConfigurationError
from .typing import Message

__all__ = ["HistoryPolicy", "JoinResult", "Position", "history_policy", "json_with_position"]

_EPOCH: Final = re.compile(r"[0-9A-Za-z_-]{1,64}")

Formatter = Callable[[Message, "Position"], Message]
"""A group's formatter: ``(message, position) -> message`` for ``str`` and ``bytes``
messages sent to a history group (``send_group_json`` merges the position itself).

Called once per message per server process, never per member, on the trio thread: it must
not block. The default leaves the message unchanged (the client sees no position)."""


@dataclass(frozen=True)
class Position:
    """Where a message sits in a group's history."""

    epoch: str
    """Random token of the group's history; a new one means the history was lost."""
    offset: int
    """1 for the first message of an epoch, then one more per message; 0 before any."""

    def __str__(self) -> str:
        return f"{self.epoch}:{self.offset}"

    @classmethod
    def parse(cls, text: str) -> Position:
        """Parse ``"<epoch>:<offset>"`` (what ``str(position)`` gives, e.g. from a query
        string).

        Raises:
            ValueError: not an epoch (1 to 64 of ``[0-9A-Za-z_-]``), a colon and an
                offset (an int >= 0).
        """
        epoch, sep, offset = text.rpartition(":")
        if not sep or not _EPOCH.fullmatch(epoch) or not offset.isdigit() or len(offset) > 18:
            raise ValueError(f"expected a position '<epoch>:<offset>', got {text[:100]!r}")
        return cls(epoch, int(offset))

    def as_json(self) -> dict[str, str | int]:
        """``{"epoch": str, "offset": int}``: the shape frames carry."""
        return {"epoch": self.epoch, "offset": self.offset}


@dataclass(frozen=True)
class JoinResult:
    """What ``websocket.join(group, since=...)`` did."""

    recovered: bool
    """Whether every message after ``since`` was sent to this member, oldest first, before
    any live one. If not, nothing was recovered (no ``since``, another epoch, the history no
    longer reaches back, the group keeps no history or the broker was unreachable): the app
    resyncs its client (e.g. sends its state again)."""
    position: Position | None
    """The group's position when the member went live: the last message it was sent (or
    the last before it joined); None for a group without history or a broker that could
    not be read."""


@dataclass(frozen=True)
class HistoryPolicy:
    """How much history one group keeps."""

    size: int
    """Messages kept (the newest); a rejoin may recover at most this many."""
    ttl: float
    """Seconds the history survives after its last message (Redis ``EXPIRE``)."""
    formatter: Formatter | None = None
    """How a position reaches the client for ``str``/``bytes`` messages (None: unchanged)."""

    def format(self, message: Message, position: Position) -> Message:
        """The message as members receive it: through the formatter, if any."""
        if self.formatter is None:
            return message
        return self.formatter(message, position)


def _policy(pattern: str, value: object) -> HistoryPolicy:
    name = f"WEBSOCKET_GROUP_HISTORY[{pattern!r}]"
    if not isinstance(value, Mapping):
        raise ConfigurationError(
            f"{name} must be a dict with 'SIZE' (messages) and 'TTL' (seconds), got {value!r}"
        )
    unknown = set(value) - {"SIZE", "TTL", "FORMATTER"}
    if unknown:
        raise ConfigurationError(
            f"{name} has unknown keys {sorted(map(str, unknown))}; "
            "expected 'SIZE', 'TTL' and optionally 'FORMATTER'"
        )
    size = value.get("SIZE")
    if type(size) is not int or size < 1:
        raise ConfigurationError(f"{name}['SIZE'] must be an int >= 1 (messages), got {size!r}")
    ttl = value.get("TTL")
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or ttl < 1:
        raise ConfigurationError(f"{name}['TTL'] must be a number >= 1 (seconds), got {ttl!r}")
    path = value.get("FORMATTER")
    formatter: Formatter | None = None
    if path is not None:
        if not isinstance(path, str):
            raise ConfigurationError(f"{name}['FORMATTER'] must be a dotted path, got {path!r}")
        try:
            formatter = import_string(path)
        except ImportError as exc:
            raise ConfigurationError(
                f"{name}['FORMATTER'] must be an importable dotted path, got {path!r}: {exc}"
            ) from exc
        if not callable(formatter):
            raise ConfigurationError(f"{name}['FORMATTER'] {path!r} is not callable")
    return HistoryPolicy(size, float(ttl), formatter)


@functools.cache
def _compiled(setting: tuple[tuple[str, object], ...]) -> tuple[tuple[str, HistoryPolicy], ...]:
    return tuple((pattern, _policy(pattern, value)) for pattern, value in setting)


def history_policies() -> tuple[tuple[str, HistoryPolicy], ...]:
    """Every ``(pattern, policy)`` of ``WEBSOCKET_GROUP_HISTORY``, in the order written.

    Raises:
        ConfigurationError: the setting is not a dict of pattern → policy, or a policy is
            wrong; the message names the pattern and the value.
    """
    setting = get_settings().group_history
    for pattern in setting:
        if not isinstance(pattern, str) or not pattern:
            raise ConfigurationError(
                f"WEBSOCKET_GROUP_HISTORY keys must be group-name patterns (non-empty str), "
                f"got {pattern!r}"
            )
    try:
        return _compiled(tuple(setting.items()))
    except TypeError:  # an unhashable policy value: compile without the cache
        return tuple((p, _policy(p, v)) for p, v in setting.items())


def history_policy(group: str) -> HistoryPolicy | None:
    """The policy of ``group``: the first pattern of ``WEBSOCKET_GROUP_HISTORY`` that
    matches it (``fnmatch.fnmatchcase``), or None (the group keeps no history).

    Raises:
        ConfigurationError: the setting is wrong (see ``history_policies``).
    """
    for pattern, policy in history_policies():
        if fnmatch.fnmatchcase(group, pattern):
            return policy
    return None


def position_json(position: Position) -> str:
    """``"position": {...}`` as JSON text, to be merged into a JSON object."""
    return '"position": ' + json.dumps(position.as_json())


def json_with_position(text: str, position: Position) -> str:
    """Merge ``"position": {"epoch": str, "offset": int}`` into ``text``, the JSON encoding
    of an object, as its last member (a ``"position"`` already there is overridden: JSON
    parsers keep the last of a repeated name, RFC 8259 §4 leaves it to them, and both
    ``JSON.parse`` and Python's ``json`` do). One string operation, no re-encoding.

    Raises:
        ValueError: ``text`` is not the encoding of an object (does not end with ``}``).
    """
    body = text.rstrip()
    if not body.endswith("}") or not body.lstrip().startswith("{"):
        raise ValueError(f"expected the JSON text of an object, got {text[:40]!r}")
    inner = body[:-1].rstrip()
    separator = "" if inner.endswith("{") else ", "
    return f"{inner}{separator}{position_json(position)}}}"
