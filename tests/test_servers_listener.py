"""``manage.py serve``'s listener (trio_djws/servers/listener.py) in process: WebSocket
upgrades on the websockets engine, everything else on Hypercorn with the bytes already read
replayed, and the decided edges (keep-alive upgrade, HTTP/2, a foreign ASGI application,
slow or oversized heads)."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import Any, Final

import h2.config
import h2.connection
import h2.events
import h11
import pytest
import trio
from hypercorn.config import Config
from trio_websocket import open_websocket_url
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Request, TextMessage

from tests import server_handlers
from tests.conftest import start_serve
from tests.test_servers_standalone import masked_frame
from trio_djws.servers.hypercorn import check_hypercorn
from trio_djws.servers.listener import ReplayStream, read_request_head

WAIT: Final = 20.0  # seconds; real time: the peers are sockets
KEEP_ALIVE_TIMEOUT: Final = 0.5  # seconds, for the slow-head test


@pytest.fixture(autouse=True)
def _record() -> server_handlers.Record:
    server_handlers.RECORD = server_handlers.Record()
    return server_handlers.RECORD


@pytest.fixture
async def serve_address(nursery: trio.Nursery) -> str:
    return (await start_serve(nursery))[0]


async def connect(address: str) -> trio.SocketStream:
    host, port = address.rsplit(":", 1)
    return await trio.open_tcp_stream(host, int(port))


async def http_get(
    stream: trio.SocketStream, client: h11.Connection, target: str, host: str
) -> tuple[int, bytes]:
    """One GET on a keep-alive connection: ``(status, body)``; the client is ready for the
    next request afterwards."""
    await stream.send_all(
        client.send(h11.Request(method="GET", target=target, headers=[("Host", host)]))
    )
    await stream.send_all(client.send(h11.EndOfMessage()))
    status = 0
    body = b""
    while True:
        event = client.next_event()
        if event is h11.NEED_DATA:
            client.receive_data(await stream.receive_some(65536))
        elif isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            client.start_next_cycle()
            return status, body
        else:
            raise AssertionError(f"unexpected {event!r}")


async def websocket_over(stream: trio.SocketStream, host: str, path: str) -> WSConnection:
    """Upgrade ``stream`` to a WebSocket (wsproto client); returns the open connection."""
    ws = WSConnection(ConnectionType.CLIENT)
    await stream.send_all(ws.send(Request(host=host, target=path)))
    while True:
        ws.receive_data(await stream.receive_some(65536))
        if any(isinstance(event, AcceptConnection) for event in ws.events()):
            return ws


async def test_http_keeps_alive_through_hypercorn(serve_address: str) -> None:
    client = h11.Connection(h11.CLIENT)
    with trio.fail_after(WAIT):
        async with await connect(serve_address) as stream:
            for word in ("one", "two", "three"):
                status, body = await http_get(stream, client, f"/meta/{word}/", serve_address)
                assert status == 200
                assert b'"PATH_INFO": "/meta/' + word.encode() in body


async def test_upgrade_with_an_early_frame_in_the_same_packet_is_served_by_the_engine(
    serve_address: str,
) -> None:
    ws = WSConnection(ConnectionType.CLIENT)
    request = ws.send(Request(host=serve_address, target="/server/echo/"))
    with trio.fail_after(WAIT):
        async with await connect(serve_address) as stream:
            await stream.send_all(request + masked_frame(0x1, b"early"))
            data = b""
            while b"early" not in data:
                chunk = await stream.receive_some(65536)
                assert chunk, data
                data += chunk
    assert data.startswith(b"HTTP/1.1 101 ")


async def test_client_close_code_reaches_on_close_only_on_the_engine(serve_address: str) -> None:
    # On the engine the client's own code arrives; an upgrade that comes after an HTTP request
    # on the same keep-alive connection stays with Hypercorn, which reports every client
    # close as 1006 (Hypercorn issue 127): that is how the test tells the two paths apart.
    async with open_websocket_url(f"ws://{serve_address}/server/echo/") as ws:
        await ws.aclose(code=4001, reason="bye")
    with trio.fail_after(WAIT):
        await server_handlers.RECORD.closed.wait()
    assert server_handlers.RECORD.close == (4001, "bye")

    server_handlers.RECORD = server_handlers.Record()
    client = h11.Connection(h11.CLIENT)
    with trio.fail_after(WAIT):
        async with await connect(serve_address) as stream:
            status, _ = await http_get(stream, client, "/meta/first/", serve_address)
            assert status == 200
            ws = await websocket_over(stream, serve_address, "/server/echo/")
            await stream.send_all(ws.send(TextMessage("on hypercorn")))
            await stream.send_all(ws.send(CloseConnection(code=4001, reason="bye")))
            while data := await stream.receive_some(65536):
                ws.receive_data(data)
        await server_handlers.RECORD.closed.wait()
    assert server_handlers.RECORD.close is not None
    assert server_handlers.RECORD.close[0] == 1006


async def test_head_not_finished_within_keep_alive_timeout_is_dropped(
    nursery: trio.Nursery,
) -> None:
    address, _ = await start_serve(nursery, keep_alive_timeout=KEEP_ALIVE_TIMEOUT)
    with trio.fail_after(WAIT):
        async with await connect(address) as stream:
            await stream.send_all(b"GET /server/echo/ HTTP/1.1\r\nHost: x\r\n")  # no end
            assert await stream.receive_some(65536) == b""  # closed, nothing answered


async def test_head_over_h11_max_incomplete_size_gets_hypercorns_answer(
    serve_address: str,
) -> None:
    size = Config().h11_max_incomplete_size
    with trio.fail_after(WAIT):
        async with await connect(serve_address) as stream:
            await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * size)
            response = b""
            while chunk := await stream.receive_some(65536):
                response += chunk
    assert response.startswith(b"HTTP/1.1 431 "), response[:80]


async def test_http2_with_prior_knowledge_stays_on_hypercorn(serve_address: str) -> None:
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    client.send_headers(
        1,
        [
            (":method", "GET"),
            (":path", "/meta/h2/"),
            (":scheme", "http"),
            (":authority", serve_address),
        ],
        end_stream=True,
    )
    status = ""
    body = b""
    with trio.fail_after(WAIT):
        async with await connect(serve_address) as stream:
            await stream.send_all(client.data_to_send())
            ended = False
            while not ended:
                for event in client.receive_data(await stream.receive_some(65536)):
                    if isinstance(event, h2.events.ResponseReceived):
                        status = dict(event.headers)[b":status"].decode()
                    elif isinstance(event, h2.events.DataReceived):
                        body += event.data
                        client.acknowledge_received_data(event.flow_controlled_length, 1)
                    elif isinstance(event, h2.events.StreamEnded):
                        ended = True
                await stream.send_all(client.data_to_send())
    assert status == "200"
    assert b'"SERVER_PROTOCOL": "HTTP/2"' in body


async def test_websocket_over_http2_stays_on_hypercorn(serve_address: str) -> None:
    # RFC 8441: an extended CONNECT on an HTTP/2 connection; Hypercorn, which always offers it,
    # accepts it with 200 and serves the WebSocket as a stream.
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    status = ""
    with trio.fail_after(WAIT):
        async with await connect(serve_address) as stream:
            await stream.send_all(client.data_to_send())
            sent = False
            while not status:
                for event in client.receive_data(await stream.receive_some(65536)):
                    if isinstance(event, h2.events.RemoteSettingsChanged) and not sent:
                        client.send_headers(
                            1,
                            [
                                (":method", "CONNECT"),
                                (":protocol", "websocket"),
                                (":scheme", "http"),
                                (":path", "/server/echo/"),
                                (":authority", serve_address),
                                ("sec-websocket-version", "13"),
                            ],
                        )
                        sent = True
                    elif isinstance(event, h2.events.ResponseReceived):
                        status = dict(event.headers)[b":status"].decode()
                await stream.send_all(client.data_to_send())
    assert status == "200"


async def test_tls_is_not_served(serve_address: str) -> None:
    # TLS is terminated at the proxy: a TLS client fails at once (Hypercorn answers its
    # ClientHello as a malformed HTTP request), it does not hang.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with trio.fail_after(WAIT):
        tls = trio.SSLStream(await connect(serve_address), context, server_hostname="localhost")
        with pytest.raises(trio.BrokenResourceError):
            await tls.do_handshake()
        await trio.aclose_forcefully(tls)


async def foreign_app(
    scope: dict[str, Any],
    receive: Callable[[], Awaitable[dict[str, Any]]],
    send: Callable[[dict[str, Any]], Awaitable[None]],
) -> None:
    """A project's own ASGI application: accepts any WebSocket and says where it is."""
    if scope["type"] == "lifespan":
        while True:
            event = await receive()
            kind = event["type"].replace("lifespan.", "")
            await send({"type": f"lifespan.{kind}.complete"})
            if kind == "shutdown":
                return
    elif scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": "foreign app"})
        await receive()


async def test_foreign_asgi_application_gets_every_request_with_a_warning(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="trio_djws")
    address, _ = await start_serve(nursery, app=foreign_app)
    async with open_websocket_url(f"ws://{address}/server/echo/") as ws:
        with trio.fail_after(WAIT):
            assert await ws.get_message() == "foreign app"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("not trio-djws's own application" in w for w in warnings), warnings


async def test_read_request_head_tells_upgrades_from_the_rest() -> None:
    cases = {
        b"GET /x HTTP/1.1\r\nHost: h\r\nUpgrade: WebSocket\r\nConnection: keep-alive, Upgrade"
        b"\r\n\r\n": True,
        b"GET /x HTTP/1.1\r\nHost: h\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n": False,
        b"POST /x HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Content-Length: 0\r\n\r\n": False,
        b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n": False,
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n": False,
        b"NOT HTTP\r\n\r\n": False,
    }
    for head, upgrade in cases.items():
        a, b = await _socket_pair()
        async with a, b:
            await a.send_all(head)
            received, found = await read_request_head(b, 16384)
        assert (received, found) == (head, upgrade), head


async def _socket_pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    async with listener:
        port = listener.socket.getsockname()[1]
        client = await trio.open_tcp_stream("127.0.0.1", port)
        server = await listener.accept()
    assert isinstance(server, trio.SocketStream)
    return client, server


async def test_replay_stream_returns_the_bytes_read_then_the_sockets() -> None:
    a, b = await _socket_pair()
    async with a, b:
        replay = ReplayStream(b, b"head")
        assert replay.socket is b.socket
        await a.send_all(b"rest")
        assert await replay.receive_some(2) == b"he"
        assert await replay.receive_some() == b"ad"
        assert await replay.receive_some() == b"rest"


def test_replay_stream_has_what_tcpserver_uses_of_a_plain_stream() -> None:
    # TCPServer takes a stream without do_handshake for plain TCP; check_hypercorn() pins
    # the attributes it uses.
    check_hypercorn()
    assert not hasattr(ReplayStream, "do_handshake")
    for name in ("socket", "receive_some", "send_all", "send_eof", "aclose"):
        assert hasattr(ReplayStream, name), name
