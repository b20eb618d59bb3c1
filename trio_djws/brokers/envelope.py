"""The envelope every cross-process group message travels in (version 1), serialised once per
publish, whatever the number of members::

    byte 0      version (1)
    byte 1      kind: b"t" text frame, b"b" binary frame, b"p" presence changed (no payload)
    byte 2      n = length of the origin
    bytes 3..   origin (n ASCII bytes: "<pid>-<random hex>", see ``process_origin``)
    then        the payload: UTF-8 text or the raw bytes

The origin lets the publishing process skip its own copy coming back from Redis (it has
delivered locally already); the random part tells apart processes on different machines that
happen to share a pid. The redis-py path delivers nothing locally, so its envelopes carry
``sync_origin()`` instead, which no subscriber skips: a plain thread of a server process
(``threading.Thread``, a thread pool) reaches that process's members too.

Internal: the library's own plumbing, not a public API; its names may change.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from typing import Final

from ..typing import Message

__all__ = [
    "ENVELOPE_VERSION",
    "KIND_BYTES",
    "KIND_PRESENCE",
    "KIND_TEXT",
    "Envelope",
    "decode_envelope",
    "encode_envelope",
    "process_origin",
    "sync_origin",
]

ENVELOPE_VERSION: Final = 1
KIND_TEXT: Final = b"t"
KIND_BYTES: Final = b"b"
KIND_PRESENCE: Final = b"p"
_KINDS: Final = frozenset({KIND_TEXT, KIND_BYTES, KIND_PRESENCE})

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


def decode_envelope(data: bytes) -> Envelope:
    """Parse an envelope made by ``encode_envelope``.

    Raises:
        ValueError: not a version-1 envelope, or its text is not UTF-8.
    """
    if len(data) < 3 or data[0] != ENVELOPE_VERSION:
        version = data[0] if data else None
        raise ValueError(f"expected an envelope of version {ENVELOPE_VERSION}, got {version!r}")
    kind = data[1:2]
    if kind not in _KINDS:
        raise ValueError(f"expected an envelope kind in b't', b'b', b'p', got {kind!r}")
    end = 3 + data[2]
    origin = data[3:end]
    payload = data[end:]
    message: Message = payload.decode("utf-8") if kind == KIND_TEXT else payload
    return Envelope(kind, origin, "" if kind == KIND_PRESENCE else message)
