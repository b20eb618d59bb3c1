"""The envelope of cross-process group messages and the process origin
(trio_djws/brokers/envelope.py)."""

from __future__ import annotations

import os

import pytest

from trio_djws.brokers.envelope import (
    ENVELOPE_VERSION,
    ENVELOPE_VERSION_POSITION,
    KIND_JSON,
    KIND_PRESENCE,
    Envelope,
    decode_envelope,
    encode_envelope,
    envelope_head,
    process_origin,
)
from trio_djws.history import Position


def test_envelope_round_trips_text_and_bytes_with_this_process_as_origin() -> None:
    text = decode_envelope(encode_envelope("héllo"))
    assert (text.kind, text.message, text.origin) == (b"t", "héllo", process_origin())
    binary = decode_envelope(encode_envelope(b"\x00\xff"))
    assert (binary.kind, binary.message) == (b"b", b"\x00\xff")
    presence = decode_envelope(encode_envelope("", kind=KIND_PRESENCE))
    assert (presence.kind, presence.message) == (KIND_PRESENCE, "")
    assert encode_envelope("x")[0] == ENVELOPE_VERSION == 1


def test_a_version_2_envelope_carries_the_position() -> None:
    head = envelope_head(KIND_JSON, b"o-1")
    assert head == b"\x02j\x03o-1"
    # What the Redis append script publishes: head, position length, position, payload.
    envelope = decode_envelope(head + b"\x0aep0123:457" + b'{"a": 1}')
    assert envelope == Envelope(KIND_JSON, b"o-1", '{"a": 1}', Position("ep0123", 457))
    assert ENVELOPE_VERSION_POSITION == 2


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "version 1 or 2, got None"),
        (b"\x03t\x00hi", "version 1 or 2, got 3"),
        (b"\x01x\x00hi", "kind in b'b', b'p', b't', got b'x'"),
        (b"\x01j\x00{}", "kind in b'b', b'p', b't', got b'j'"),  # JSON kind: version 2 only
        (b"\x02p\x00", "kind in b'b', b'j', b't', got b'p'"),
        (b"\x02t\x00", "expected a position in a version-2 envelope"),
        (b"\x02t\x00\x03a:bhi", "expected a position '<epoch>:<offset>'"),
        (b"\x01t\x00\xff", "utf-8"),
    ],
)
def test_bad_envelopes_raise_value_error(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decode_envelope(data)


def test_origin_is_pid_and_random_token_and_changes_in_a_forked_child() -> None:
    origin = process_origin()
    assert origin == process_origin()
    pid, token = origin.decode().split("-")
    assert int(pid) == os.getpid() and len(token) == 16
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the child: report its origin and leave at once
        os.write(write, process_origin())
        os._exit(0)
    os.close(write)
    child_origin = os.read(read, 100)
    os.close(read)
    os.waitpid(child, 0)
    assert child_origin.startswith(f"{child}-".encode()) and child_origin != origin
