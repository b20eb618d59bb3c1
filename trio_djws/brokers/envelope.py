"""Internal: the envelope of cross-process group messages (its format: the wire formats page).

The envelope every cross-process group message travels in (version 1), serialised once per
publish, whatever the number of members::

    byte 0      version (1)
    byte 1      kind: b"t" text frame, b"b" binary frame, b"p" presence changed (no payload)
    byte 2      n = length of the origin
    bytes 3..   origin (n ASCII bytes: "<pid>-<random hex>", see ``process_origin``)
    then        the payload: UTF-8 text or the raw bytes

Version 2 carries a history group's message with its position (``WEBSOCKET_GROUP_HISTORY``);
it is written by the Redis append script (``trio_djws.brokers.streams``), which alone knows
the offset::

    byte 0      version (2)
    byte 1      kind: b"t", b"b", or b"j" the text of a JSON object (members get the
                position merged in as ``"position": {"epoch": ..., "offset": ...}``)
    byte 2      n = length of the origin
    bytes 3..   origin (n ASCII bytes)
    then        m = length of the position (one byte), the position (m ASCII bytes,
                ``"<epoch>:<offset>"``), the payload

New processes read both versions; groups without history still travel as version 1. A
process running a release without group history drops a version-2 envelope with one
warning per message ("expected an envelope of version 1, got 2"), counted in its
``RedisBroker.undecodable``: during a rolling upgrade its members miss history groups'
messages (and recover them once they reconnect to an upgraded process).

The origin lets the publishing process skip its own copy coming back from Redis (it has
delivered locally already; history groups are delivered from Redis to every process, the
publisher's included, so that every member gets them in offset order); the random part tells
apart processes on different machines that happen to share a pid. The redis-py path delivers
nothing locally, so its envelopes carry ``sync_origin()`` instead, which no subscriber skips: a
plain thread of a server process (``threading.Thread``, a thread pool) reaches that process's
members too.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from typing import Final

from ..history import Position
from ..typing import Message

__all__: list[str] = []

ENVELOPE_VERSION: Final = 1
ENVELOPE_VERSION_POSITION: Final = 2  # with a history group's position
KIND_TEXT: Final = b"t"
KIND_BYTES: Final = b"b"
KIND_PRESENCE: Final = b"p"
KIND_JSON: Final = b"j"  # version 2 only: a JSON object's text, position merged on delivery
_KINDS: Final = {
    ENVELOPE_VERSION: frozenset({KIND_TEXT, KIND_BYTES, KIND_PRESENCE}),
    ENVELOPE_VERSION_POSITION: frozenset({KIND_TEXT, KIND_BYTES, KIND_JSON}),
}

_origin: tuple[int, bytes] | None = None


def process_origin() -> bytes:
    """This process's origin id: ``b"<pid>-<16 random hex digits>"``.

    Made again after a fork (the pid changed), so ``--workers`` processes never share one.
    """
    global _origin
    pid = os.getpid()
    if _origin is None or _origin[0] != pid:
        _origin = (pid, f"{pid}-{secrets.token_hex(8)}".encode("ascii"))
    return _origin[1]


def sync_origin() -> bytes:
    """The origin of envelopes published with redis-py's sync client (``publish()`` outside
    the server's trio threads): ``process_origin() + b"+sync"``, never a subscriber's own."""
    return process_origin() + b"+sync"


@dataclass(frozen=True)
class Envelope:
    """One decoded envelope."""

    kind: bytes
    """``b"t"`` (text), ``b"b"`` (bytes) or ``b"p"`` (presence changed)."""
    origin: bytes
    """The publishing process's ``process_origin()``."""
    message: Message
    """The frame to deliver (``""`` for presence)."""
    position: Position | None = None
    """A history group's message position (version 2); None in version 1."""


def encode_envelope(
    message: Message, *, kind: bytes | None = None, origin: bytes | None = None
) -> bytes:
    """Wrap ``message`` (``str`` → text frame, ``bytes`` → binary) in a version-1 envelope
    stamped with ``origin`` (default: this process's origin, which its own subscriber skips
    because it delivered locally already)."""
    if origin is None:
        origin = process_origin()
    if kind is None:
        kind = KIND_TEXT if isinstance(message, str) else KIND_BYTES
    payload = message.encode("utf-8") if isinstance(message, str) else message
    return bytes((ENVELOPE_VERSION,)) + kind + bytes((len(origin),)) + origin + payload


def envelope_head(kind: bytes, origin: bytes | None = None) -> bytes:
    """The start of a version-2 envelope, up to the position (the Redis append script adds
    the position and the payload)."""
    if origin is None:
        origin = process_origin()
    return bytes((ENVELOPE_VERSION_POSITION,)) + kind + bytes((len(origin),)) + origin


def decode_envelope(data: bytes) -> Envelope:
    """Parse an envelope of version 1 (``encode_envelope``) or 2 (with a position).

    Raises:
        ValueError: another version, a kind or position that version does not have, or
            text that is not UTF-8.
    """
    version = data[0] if data else None
    if len(data) < 3 or version not in _KINDS:
        raise ValueError(
            f"expected an envelope of version {ENVELOPE_VERSION} or "
            f"{ENVELOPE_VERSION_POSITION}, got {version!r}"
        )
    kind = data[1:2]
    if kind not in _KINDS[version]:
        expected = ", ".join(repr(k) for k in sorted(_KINDS[version]))
        raise ValueError(f"expected an envelope kind in {expected}, got {kind!r}")
    end = 3 + data[2]
    origin = data[3:end]
    position: Position | None = None
    if version == ENVELOPE_VERSION_POSITION:
        if len(data) <= end:
            raise ValueError("expected a position in a version-2 envelope, got none")
        start, end = end + 1, end + 1 + data[end]
        position = Position.parse(data[start:end].decode("ascii", errors="replace"))
    payload = data[end:]
    message: Message = payload.decode("utf-8") if kind in (KIND_TEXT, KIND_JSON) else payload
    return Envelope(kind, origin, "" if kind == KIND_PRESENCE else message, position)
