"""The envelope of cross-process group messages and the process origin
(trio_djws/brokers/envelope.py)."""

from __future__ import annotations

import os

import pytest

from trio_djws.brokers.envelope import (
    ENVELOPE_VERSION,
    KIND_PRESENCE,
    decode_envelope,
    encode_envelope,
    process_origin,
)


def test_envelope_round_trips_text_and_bytes_with_this_process_as_origin() -> None:
    text = decode_envelope(encode_envelope("héllo"))
    assert (text.kind, text.message, text.origin) == (b"t", "héllo", process_origin())
    binary = decode_envelope(encode_envelope(b"\x00\xff"))
    assert (binary.kind, binary.message) == (b"b", b"\x00\xff")
    presence = decode_envelope(encode_envelope("", kind=KIND_PRESENCE))
    assert (presence.kind, presence.message) == (KIND_PRESENCE, "")
    assert encode_envelope("x")[0] == ENVELOPE_VERSION == 1


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "version 1, got None"),
        (b"\x02t\x00hi", "version 1, got 2"),
        (b"\x01x\x00hi", "kind in b't', b'b', b'p', got b'x'"),
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
