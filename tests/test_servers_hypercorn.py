"""``manage.py serve`` (trio_djws/servers/hypercorn.py, trio_djws/servers/serve.py), run as a
subprocess against real clients.

Each server is ``python -m django serve --bind 127.0.0.1:0`` with tests/launcher_settings.py
(shutdown timeout 3 s, TCP_USER_TIMEOUT 2 s, pings every 1 s); tests learn the port from its
``Listening on`` line and synchronise on what it prints or sends, never on sleeps.
"""

from __future__ import annotations

import gc
import importlib.metadata
import inspect
import re
import signal
import socket
from functools import partial
from typing import Final

import h11
import pytest
import trio
import trio.testing
import trio_websocket
import wsproto
import wsproto.events
import wsproto.utilities
from django.core.management import CommandError, call_command
from django.test import override_settings
from hypercorn.config import Config
from hypercorn.trio import serve as hypercorn_serve
from trio_websocket import ConnectionClosed, open_websocket_url
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Event, Ping, Request, TextMessage

from tests import launcher_settings
from tests.launcher_handlers import BURST_COUNT, BURST_SIZE
from tests.processes import run_serve
from trio_djws.asgi import get_asgi_application
from trio_djws.servers import hypercorn, lifecycle, sockets

TIMEOUT: Final = 45.0  # seconds per test; the autouse watchdog in conftest allows 60
SHUTDOWN_TIMEOUT: Final = launcher_settings.WEBSOCKET_SHUTDOWN_TIMEOUT
TCP_USER_TIMEOUT: Final = launcher_settings.WEBSOCKET_TCP_USER_TIMEOUT
SLACK: Final = 3.0  # seconds: process exit, lifespan shutdown, a loaded CI machine
GOING_AWAY: Final = 1001
CROSS_PROCESS_BROKER: Final = {"BACKEND": "tests.launcher_handlers.CrossProcessTestBroker"}


def upgrade_request(path: str, key: str = "dGhlIHNhbXBsZSBub25jZQ==") -> bytes:
    """A WebSocket upgrade request (RFC 6455 §4.1) for ``path`` (already percent-encoded),
    valid unless ``key`` is not a base64-encoded 16-byte value."""
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


async def read_head(stream: trio.SocketStream) -> bytes:
    """Read until the end of the HTTP response head (or EOF); returns what was read."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some(4096)
        if not chunk:
            break
        data += chunk
    return data


async def read_until(stream: trio.SocketStream, marker: bytes) -> bytes:
    """Read until ``marker`` has arrived (or EOF); returns what was read."""
    data = b""
    while marker not in data:
        chunk = await stream.receive_some(4096)
        if not chunk:
            break
        data += chunk
    return data


async def test_shutdown_flushes_queued_messages_then_closes_with_1001() -> None:
    with trio.fail_after(TIMEOUT):
        async with run_serve() as server:
            url = (await server.urls())[0]
            async with (
                open_websocket_url(f"{url}/launcher/control/") as control,
                open_websocket_url(f"{url}/launcher/burst/") as burst,
            ):
                await burst.send_message("go")
                assert await control.get_message() == "burst queued"  # 100 sends issued
                server.process.send_signal(signal.SIGTERM)
                received = [await burst.get_message() for _ in range(BURST_COUNT)]
                with pytest.raises(ConnectionClosed) as burst_closed:
                    await burst.get_message()
                with pytest.raises(ConnectionClosed) as control_closed:
                    await control.get_message()
            assert [str(m)[:5] for m in received] == [f"{i:05d}" for i in range(BURST_COUNT)]
            assert all(len(m) == BURST_SIZE for m in received)
            assert burst_closed.value.reason.code == GOING_AWAY
            assert control_closed.value.reason.code == GOING_AWAY
            assert await server.wait_exit() == 0


async def test_shutdown_does_not_wait_for_hypercorns_ping_loop() -> None:
    # Hypercorn keeps a closed WebSocket's task until its ping loop wakes; without the
    # launcher's cut, exit would come at graceful_timeout (shutdown timeout + 1 = 11 s here).
    settings = {"WEBSOCKET_PING_INTERVAL": 30, "WEBSOCKET_SHUTDOWN_TIMEOUT": 10}
    with trio.fail_after(TIMEOUT):
        async with run_serve(settings=settings) as server:
            url = (await server.urls())[0]
            async with open_websocket_url(f"{url}/echo/") as ws:
                await ws.send_message("hi")
                assert await ws.get_message() == "hi"
                signalled = trio.current_time()
                server.process.send_signal(signal.SIGTERM)
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.get_message()
                assert closed.value.reason.code == GOING_AWAY
            with trio.fail_after(SLACK):
                assert await server.wait_exit() == 0
            print(f"one WebSocket: exited {trio.current_time() - signalled:.2f} s after SIGTERM")


async def test_first_ping_comes_one_interval_after_the_accept() -> None:
    # Hypercorn pings at the accept, then every interval; the launcher's pinger pings a
    # WebSocket first one interval after its accept (a ping at the accept detects nothing and
    # costs a write and a pong per handshake).
    interval = launcher_settings.WEBSOCKET_PING_INTERVAL
    with trio.fail_after(TIMEOUT):
        async with run_serve() as server:
            host, port = await server.address()
            stream = await trio.open_tcp_stream(host, port)
            async with stream:
                client = WSConnection(ConnectionType.CLIENT)
                await stream.send_all(client.send(Request(host=f"{host}:{port}", target="/echo/")))
                seen: list[Event] = []

                async def read_until(kind: type[Event]) -> None:
                    while not any(isinstance(event, kind) for event in seen):
                        client.receive_data(await stream.receive_some(65536) or None)
                        seen.extend(client.events())

                await read_until(AcceptConnection)
                accepted = trio.current_time()
                await stream.send_all(client.send(TextMessage("hi")))
                await read_until(TextMessage)  # a round trip: an early ping would be here
                assert not any(isinstance(event, Ping) for event in seen), seen
                await read_until(Ping)
                assert trio.current_time() - accepted >= 0.9 * interval
            server.process.send_signal(signal.SIGTERM)
            assert await server.wait_exit() == 0


async def open_stalled_flood(host: str, port: int) -> trio.SocketStream:
    """Open a WebSocket to /launcher/flood/ with a 4 KiB receive buffer, complete the
    handshake and return the stream, which the caller never reads: the server's writes to it
    stall once the buffers are full."""
    sock = trio.socket.socket()
    # Set before connect so the window is small from the start (buffers autotune).
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await sock.connect((host, port))
    stalled = trio.SocketStream(sock)
    await stalled.send_all(upgrade_request("/launcher/flood/"))
    assert (await read_head(stalled)).startswith(b"HTTP/1.1 101")
    return stalled


async def test_stalled_client_does_not_hold_shutdown_past_the_tcp_user_timeout() -> None:
    with trio.fail_after(TIMEOUT):
        async with run_serve() as server:
            host, port = await server.address()
            async with open_websocket_url(f"ws://{host}:{port}/launcher/control/") as control:
                stalled = await open_stalled_flood(host, port)
                # 16 MiB sent or queued for a client that reads nothing more: the writer stalls.
                assert await control.get_message() == "flooding"
                signalled = trio.current_time()
                server.process.send_signal(signal.SIGTERM)
                bound = SHUTDOWN_TIMEOUT + TCP_USER_TIMEOUT + SLACK
                with trio.fail_after(bound):
                    status = await server.wait_exit()
                took = trio.current_time() - signalled
                print(f"stalled client: server exited {took:.2f} s after SIGTERM")
                assert status == 0
                await stalled.aclose()


async def pings_received(stream: trio.SocketStream, count: int) -> None:
    """Complete a WebSocket handshake on ``stream`` (path /echo/), then read until ``count``
    pings have arrived (wsproto answers none: the test only counts them)."""
    ws = WSConnection(ConnectionType.CLIENT)
    await stream.send_all(ws.send(Request(host="127.0.0.1", target="/echo/")))
    pings = 0
    while pings < count:
        data = await stream.receive_some(65536)
        assert data, "the server closed the connection"
        ws.receive_data(data)
        pings += sum(isinstance(event, Ping) for event in ws.events())


async def test_idle_websockets_are_pinged_while_another_client_stalls() -> None:
    # One launcher task pings every WebSocket (not Hypercorn's task per WebSocket): it must
    # skip a connection whose write is stuck instead of waiting on it. TCP_USER_TIMEOUT is
    # raised past the test's deadline so that the stalled connection stays stuck throughout.
    settings = {"WEBSOCKET_TCP_USER_TIMEOUT": 2 * TIMEOUT}
    with trio.fail_after(TIMEOUT):
        async with run_serve(settings=settings) as server:
            host, port = await server.address()
            async with open_websocket_url(f"ws://{host}:{port}/launcher/control/") as control:
                stalled = await open_stalled_flood(host, port)
                assert await control.get_message() == "flooding"
                idle = [await trio.open_tcp_stream(host, port) for _ in range(2)]
                async with trio.open_nursery() as nursery:
                    for stream in idle:
                        nursery.start_soon(pings_received, stream, 2)  # pings every 1 s
                for stream in idle:
                    await stream.aclose()
                await stalled.aclose()


async def test_stray_byte_after_upgrade_request_does_not_stop_the_server() -> None:
    # On a fresh connection the packet goes to the websockets engine: 101, the byte is the
    # start of a frame. On a keep-alive connection Hypercorn already serves, it reaches
    # Hypercorn (issue 225): 400, then its LocalProtocolError, contained to that connection.
    with trio.fail_after(TIMEOUT):
        async with run_serve() as server:
            host, port = await server.address()
            async with await trio.open_tcp_stream(host, port) as fresh:
                await fresh.send_all(upgrade_request("/echo/") + b"x")
                assert (await read_head(fresh)).startswith(b"HTTP/1.1 101")
            stream = await trio.open_tcp_stream(host, port)
            client = "{}:{}".format(*stream.socket.getsockname()[:2])
            await stream.send_all(b"GET /meta/first/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert (await read_head(stream)).startswith(b"HTTP/1.1 200")
            await stream.send_all(upgrade_request("/echo/") + b"x")  # one packet (issue 225)
            assert b"HTTP/1.1 400" in await read_until(stream, b"HTTP/1.1 400")
            await stream.aclose()
            await server.stderr.wait_for(f"connection from {re.escape(client)} failed")
            async with open_websocket_url(f"ws://{host}:{port}/echo/") as ws:  # 101
                await ws.send_message("still serving")
                assert await ws.get_message() == "still serving"
            server.process.send_signal(signal.SIGTERM)
            assert await server.wait_exit() == 0
    assert "LocalProtocolError" in server.stderr.text


async def test_plain_hypercorn_trio_serve_still_dies_on_the_stray_byte_packet() -> None:
    # Upstream issue 225, the reason for the launcher's own accept loop. When this fails,
    # Hypercorn has fixed it: re-check FINDINGS.md and the launcher's containment.
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    with trio.fail_after(TIMEOUT), pytest.raises(BaseExceptionGroup) as crashed:
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(partial(hypercorn_serve, get_asgi_application(), config))
            host, port = binds[0].removeprefix("http://").rsplit(":", 1)
            stream = await trio.open_tcp_stream(host, int(port))
            await stream.send_all(upgrade_request("/echo/") + b"x")
            await read_head(stream)
            await stream.aclose()
            await trio.sleep_forever()  # until the server's crash cancels this nursery
    assert crashed.group_contains(h11.LocalProtocolError, depth=None)


async def test_orm_query_on_the_trio_thread_raises_synchronous_only_operation() -> None:
    with trio.fail_after(TIMEOUT):
        async with run_serve() as server:
            url = (await server.urls())[0]
            async with open_websocket_url(f"{url}/orm-on-trio-thread/") as ws:  # tests.handlers
                await ws.send_message("go")
                assert await ws.get_message() == "SynchronousOnlyOperation"


async def test_workers_with_the_in_memory_broker_are_refused() -> None:
    with trio.fail_after(TIMEOUT):
        async with run_serve("--workers", "2") as server:
            assert await server.wait_exit() != 0
            await server.stderr.wait_for("CommandError: .*WEBSOCKET_BROKER")
            assert server.stdout.text == ""


async def test_two_workers_serve_and_both_drain_on_sigterm() -> None:
    with trio.fail_after(TIMEOUT):
        async with run_serve(
            "--workers", "2", settings={"WEBSOCKET_BROKER": CROSS_PROCESS_BROKER}
        ) as server:
            url = (await server.urls())[0]
            await server.stderr.wait_for(r"worker \d \(pid \d+\) starting", 2)
            by_pid: dict[str, trio_websocket.WebSocketConnection] = {}
            opened: list[trio_websocket.WebSocketConnection] = []
            async with trio.open_nursery() as nursery:
                # Which process accepts is the kernel's choice: connect until both have. Every
                # connection stays open until the drain closes it: a trio-websocket client's
                # own aclose() can crash on Hypercorn's first ping (see the test below).
                for _ in range(200):
                    if len(by_pid) == 2:
                        break
                    ws = await trio_websocket.connect_websocket_url(nursery, f"{url}/launcher/pid/")
                    opened.append(ws)
                    by_pid.setdefault(str(await ws.get_message()), ws)
                assert len(by_pid) == 2, "one worker accepted 200 connections in a row"
                assert str(server.process.pid) not in by_pid
                server.process.send_signal(signal.SIGTERM)
                for ws in opened:
                    with pytest.raises(ConnectionClosed) as closed:
                        await ws.get_message()
                    assert closed.value.reason.code == GOING_AWAY
            assert await server.wait_exit() == 0
            exits = await server.stderr.wait_for(
                r"worker (\d) \(pid (\d+)\) exited with status 0", 2
            )
            assert {match[2] for match in exits} == set(by_pid)


async def test_trio_websocket_client_crashes_on_a_ping_during_its_own_close() -> None:
    # Upstream (trio-websocket issue 184, PR 198 open; 0.12.2 here): a client that has sent its
    # close frame answers a ping with a pong, which wsproto refuses in LOCAL_CLOSING, and the
    # LocalProtocolError escapes the client's reader task into its nursery. Hypercorn pings
    # at the accept, concurrently with the first message a handler queued in on_connect, then
    # every WEBSOCKET_PING_INTERVAL (1 s in these tests), so a client that reads that message
    # and calls aclose() can get the ping behind its close: the two-worker test above failed
    # that way (8 times in 12 when the writer sent the first message one checkpoint sooner).
    # When this fails, upstream has fixed it and clients may close first again.
    client_stream, server_stream = trio.testing.memory_stream_pair()
    server = wsproto.WSConnection(wsproto.ConnectionType.SERVER)

    async def next_event() -> wsproto.events.Event:
        while True:
            for event in server.events():
                return event
            server.receive_data(await server_stream.receive_some())

    async def serve_one() -> None:
        assert isinstance(await next_event(), wsproto.events.Request)
        await server_stream.send_all(server.send(wsproto.events.AcceptConnection()))
        ping = server.send(wsproto.events.Ping())  # framed now: wsproto pings only when OPEN
        await server_stream.send_all(server.send(wsproto.events.TextMessage("first")))
        close = await next_event()  # the client's close frame
        assert isinstance(close, wsproto.events.CloseConnection)
        await server_stream.send_all(ping)  # the ping that was in flight behind the message
        await server_stream.send_all(server.send(close.response()))

    with trio.fail_after(TIMEOUT), pytest.raises(BaseExceptionGroup) as crashed:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_one)
            ws = await trio_websocket.wrap_client_stream(nursery, client_stream, "test", "/")
            assert await ws.get_message() == "first"
            await ws.aclose()
    assert crashed.group_contains(wsproto.utilities.LocalProtocolError, depth=None)


async def test_asgi_application_setting_is_served_on_every_bind() -> None:
    settings = {"ASGI_APPLICATION": "tests.launcher_handlers.application"}
    with trio.fail_after(TIMEOUT):
        async with run_serve("--bind", "127.0.0.1:0", settings=settings) as server:
            urls = await server.urls(2)
            assert len(set(urls)) == 2
            for url in urls:
                host, port = url.removeprefix("ws://").rsplit(":", 1)
                stream = await trio.open_tcp_stream(host, int(port))
                await stream.send_all(b"GET /launcher/app/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                response = await read_head(stream)
                while not response.endswith(b"custom app"):
                    chunk = await stream.receive_some(4096)
                    assert chunk, response
                    response += chunk
                assert response.startswith(b"HTTP/1.1 200")
                await stream.aclose()
            server.process.send_signal(signal.SIGINT)
            assert await server.wait_exit() == 0
            assert server.stdout.text.count("Listening on") == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bind", "nonsense"], "--bind expects HOST:PORT"),
        (["--bind", "127.0.0.1:99999"], "--bind expects HOST:PORT"),
        (["--workers", "0"], "--workers expects an int >= 1"),
    ],
)
async def test_bad_options_raise_command_error(args: list[str], message: str) -> None:
    # Refused before any socket or trio run exists, so in-process is safe.
    with pytest.raises(CommandError, match=message):
        call_command("serve", *args)


async def test_config_carries_the_websocket_settings() -> None:
    with override_settings(
        WEBSOCKET_PING_INTERVAL=7, WEBSOCKET_MAX_MESSAGE_SIZE=4096, WEBSOCKET_SHUTDOWN_TIMEOUT=5
    ):
        config = hypercorn.make_config()
    assert config.websocket_ping_interval == 7
    assert config.websocket_max_message_size == 4096
    assert config.graceful_timeout == 5 + hypercorn.GRACE_AFTER_DRAIN
    with override_settings(WEBSOCKET_PING_INTERVAL=None):
        assert hypercorn.make_config().websocket_ping_interval is None


async def test_accepted_sockets_inherit_tcp_user_timeout() -> None:
    with override_settings(WEBSOCKET_TCP_USER_TIMEOUT=2.5):
        (listening,) = sockets.open_sockets([("127.0.0.1", 0)])
    with trio.socket.from_stdlib_socket(listening) as listener, trio.socket.socket() as client:
        await client.connect(listener.getsockname())
        accepted, _ = await listener.accept()
        with accepted:
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 2500


def test_tune_gc_raises_the_default_threshold_and_keeps_a_projects_own() -> None:
    saved = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)  # CPython's defaults
        lifecycle.tune_gc()
        assert gc.get_threshold() == (lifecycle.GC_THRESHOLD, 10, 10)
        gc.set_threshold(1234, 5, 6)  # the project's own: kept
        lifecycle.tune_gc()
        assert gc.get_threshold() == (1234, 5, 6)
    finally:
        gc.set_threshold(*saved)


def test_hypercorn_private_api_is_the_one_the_launcher_drives() -> None:
    # The launcher calls these private parts of Hypercorn 0.18; a new release may change
    # them silently. Fail here, loudly, first.
    from hypercorn.trio.lifespan import Lifespan
    from hypercorn.trio.tcp_server import TCPServer
    from hypercorn.trio.worker_context import WorkerContext

    assert importlib.metadata.version("hypercorn").startswith("0.18.")
    assert list(inspect.signature(TCPServer.__init__).parameters) == [
        "self",
        "app",
        "config",
        "context",
        "state",
        "stream",
    ]
    assert list(inspect.signature(Lifespan.__init__).parameters) == [
        "self",
        "app",
        "config",
        "state",
    ]
    for name in ("handle_lifespan", "wait_for_startup", "wait_for_shutdown"):
        assert inspect.iscoroutinefunction(getattr(Lifespan, name)), name
    context = WorkerContext(None)
    assert hasattr(context, "terminated") and hasattr(context.terminated, "set")
    assert {"backlog", "graceful_timeout", "shutdown_timeout"} <= set(dir(Config))
    hypercorn.check_hypercorn()
