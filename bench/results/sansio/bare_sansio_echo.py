"""A bare echo server on the standalone ``websockets`` engine's pieces, for its ceiling: trio,
``websockets.server.ServerProtocol``, one task per connection, the engine's read and write
calls (wait for readability, ``os.read``, ``Frame.serialize``, ``os.write``) and nothing else:
no connection model, no send queue, no handler.

``python bare_sansio_echo.py 127.0.0.1:PORT``; drive it with ``bench.loadgen echo``.
Not part of the suite: a measuring aid for README's Benchmarks section.
"""

from __future__ import annotations

import os
import sys
from functools import partial

import trio
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.server import ServerProtocol


async def _handshake(stream: trio.SocketStream, protocol: ServerProtocol) -> bool:
    while data := await stream.receive_some(65536):
        protocol.receive_data(data)
        events = protocol.events_received()
        if events and isinstance(events[0], Request):
            protocol.send_response(protocol.accept(events[0]))
            await stream.send_all(b"".join(protocol.data_to_send()))
            return True
    return False


async def _echo(stream: trio.SocketStream) -> None:
    protocol = ServerProtocol(max_size=2**20)
    if not await _handshake(stream, protocol):
        return
    sock = stream.socket
    fd = sock.fileno()
    while protocol.close_rcvd is None:
        await trio.lowlevel.wait_readable(sock)
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            continue
        if not data:
            return
        protocol.receive_data(data)
        for frame in protocol.events_received():
            if isinstance(frame, Frame) and frame.opcode is Opcode.TEXT:
                os.write(fd, Frame(Opcode.TEXT, frame.data).serialize(mask=False))
        if out := protocol.data_to_send():
            await stream.send_all(b"".join(out))


def main() -> None:
    host, port = sys.argv[1].rsplit(":", 1)
    trio.run(partial(trio.serve_tcp, _echo, int(port), host=host))


if __name__ == "__main__":
    main()
