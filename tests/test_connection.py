"""The connection model (trio_djws.connection): a peer leaving mid-hook, hook failures and
slow consumers logged once, the send queue at connect (in memory, MockClock, and live)."""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing
from django.test import override_settings
from trio_websocket import open_websocket_url

from tests import connection_handlers, handlers
from trio_djws import ConnectionClosed
from trio_djws.asgi import get_asgi_application
from trio_djws.state import drain_connections
from trio_djws.testing import WebSocketTestClient


@pytest.fixture(autouse=True)
def _record() -> connection_handlers.Record:
    connection_handlers.RECORD = connection_handlers.Record()
    return connection_handlers.RECORD


async def test_peer_leaving_during_a_streaming_on_message_ends_the_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # On Hypercorn (and the test client) a send after the disconnect silently does nothing,
    # so only the receive side can tell a streaming hook that the peer has gone.
    with trio.fail_after(60):
        async with WebSocketTestClient(get_asgi_application(), "/connection/stream/") as client:
            await client.send("stream")
            assert await client.receive() == "tick 0"
            await client.close(4000)  # returns once the app is done with the connection
        await connection_handlers.RECORD.closed.wait()
    assert connection_handlers.RECORD.events == ["send raised 4000"]
    assert connection_handlers.RECORD.on_close_code == 4000


@override_settings(WEBSOCKET_CLOSE_TIMEOUT=5)
async def test_peer_leaving_during_a_stuck_on_message_cancels_it_after_close_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(60):
        async with WebSocketTestClient(get_asgi_application(), "/connection/wait/") as client:
            await client.send("wait")
            await connection_handlers.RECORD.in_hook.wait()
            start = trio.current_time()
            await client.close(4000)
            assert trio.current_time() - start == pytest.approx(5)
    assert connection_handlers.RECORD.on_close_code == 4000


async def test_message_sent_just_before_the_peer_leaves_is_still_handled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with WebSocketTestClient(get_asgi_application(), "/connection/wait/") as client:
        await client.send("first")
        await client.send("second")
        await client.close(1000)
    assert connection_handlers.RECORD.events == ["handled first", "handled second"]
    assert connection_handlers.RECORD.on_close_code == 1000


@pytest.mark.parametrize(("message", "code"), [("boom", 1011), ("reject", 1008)])
async def test_on_close_after_a_failing_on_message_sees_the_close_code(
    message: str, code: int
) -> None:
    async with WebSocketTestClient(get_asgi_application(), "/connection/fail/") as client:
        await client.send(message)
        with pytest.raises(ConnectionClosed) as info:
            await client.receive()
    assert info.value.code == code
    assert connection_handlers.RECORD.on_close_code == code
    assert connection_handlers.RECORD.on_close_closed is True


async def test_hook_failure_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="trio_djws")
    async with WebSocketTestClient(get_asgi_application(), "/fail/") as client:
        await client.send("boom")
        with pytest.raises(ConnectionClosed):
            await client.receive()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert errors[0].exc_info is not None


@override_settings(WEBSOCKET_SEND_QUEUE_SIZE=4, WEBSOCKET_SEND_TIMEOUT=10)
async def test_slow_consumer_is_logged_once_as_a_warning(
    caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    caplog.set_level(logging.INFO, logger="trio_djws")
    handlers.FLOOD_STOPPED = trio.Event()
    async with WebSocketTestClient(get_asgi_application(), "/flood/", receive_buffer=2) as client:
        await handlers.FLOOD_STOPPED.wait()  # the client has read nothing for 10 s
        with pytest.raises(ConnectionClosed) as info:
            while True:
                await client.receive()
    assert info.value.code == 1008
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]


@override_settings(WEBSOCKET_SEND_QUEUE_SIZE=4, WEBSOCKET_SEND_TIMEOUT=10)
async def test_on_connect_may_queue_more_than_the_send_queue_holds(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(60):
        start = trio.current_time()
        async with WebSocketTestClient(
            get_asgi_application(), "/connection/history/", query_string="n=10"
        ) as client:
            assert [await client.receive() for _ in range(10)] == [
                f"history {i}" for i in range(10)
            ]
        assert trio.current_time() - start < 1


async def test_peer_leaving_during_a_streaming_on_message_ends_the_live_connection(
    ws_url: str, transport: str
) -> None:
    # Hypercorn's send after a disconnect returns without error (FINDINGS.md), so without a
    # receive side running during the hook this connection would live until server shutdown.
    # The standalone engines see the client's own close code (1000 from trio-websocket).
    async with open_websocket_url(f"{ws_url}/connection/stream/") as ws:
        await ws.send_message("stream")
        assert await ws.get_message() == "tick 0"
    with trio.fail_after(10):
        await connection_handlers.RECORD.closed.wait()
    code = 1006 if transport == "hypercorn" else 1000  # Hypercorn: always 1006
    assert connection_handlers.RECORD.events == [f"send raised {code}"]
    assert connection_handlers.RECORD.on_close_code == code


async def test_peer_leaving_a_connection_that_never_sent_is_noticed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Until its first message a connection has no reader task: the connection's own task
    # receives, so a departed peer still stops a background task streaming to it.
    with trio.fail_after(60):
        async with WebSocketTestClient(get_asgi_application(), "/connection/ticker/") as client:
            assert [await client.receive() for _ in range(3)] == ["tick 0", "tick 1", "tick 2"]
            start = trio.current_time()
            await client.close(4000)
        await connection_handlers.RECORD.closed.wait()
        assert trio.current_time() - start < 1  # before the ticker's next send
    assert connection_handlers.RECORD.on_close_code == 4000


async def test_idle_connection_closed_by_the_server_still_notices_the_peer_leaving(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A server-side close before any message: the flush and on_close still learn that the
    # peer has gone (a reader that drops messages takes over the receive side).
    with trio.fail_after(60):
        async with WebSocketTestClient(get_asgi_application(), "/connection/wait/") as client:
            await trio.testing.wait_all_tasks_blocked()
            drained = trio.Event()

            async def drain() -> None:
                await drain_connections(4001, "bye")
                drained.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(drain)
                with pytest.raises(ConnectionClosed) as info:
                    await client.receive()
                assert info.value.code == 4001
                await client.close(1000)
            assert drained.is_set()
    assert connection_handlers.RECORD.on_close_code == 4001


class _CloseLines(logging.Handler):
    """Collects trio_djws' "closed ..." lines; ``seen`` is set at the first one (the server
    logs it in this trio run, so a trio.Event is safe to set here)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []
        self.seen = trio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("closed "):
            self.lines.append(message)
            self.seen.set()


async def test_close_line_names_the_id_once_and_an_unknown_code_as_such(
    ws_url: str, transport: str
) -> None:
    lines = _CloseLines()
    logger = logging.getLogger("trio_djws")
    logger.addHandler(lines)
    try:
        async with open_websocket_url(f"{ws_url}/echo/") as ws:
            await ws.send_message("hi")
            assert await ws.get_message() == "hi"
        await lines.seen.wait()
    finally:
        logger.removeHandler(lines)
    [line] = lines.lines
    connection_id, rest = line.removeprefix("closed ").split(" ", 1)
    assert connection_id not in rest
    if transport == "hypercorn":  # Hypercorn reports every client close as 1006
        assert rest == "on '/echo/': client closed (code unknown)"
    else:
        assert rest == "on '/echo/': code 1000 ''"
