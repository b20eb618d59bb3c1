"""The in-memory WebSocketTestClient, and the timing rules it proves with MockClock."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import pytest
import trio
import trio.testing
from django.test import override_settings
from trio_websocket import ConnectionClosed as ClientClosed
from trio_websocket import ConnectionRejected, open_websocket_url

from tests import handlers
from trio_djws import ConnectionClosed
from trio_djws.asgi import get_asgi_application
from trio_djws.testing import HandshakeRejected, WebSocketTestClient


class _Live:
    """The same small API over a real trio-websocket connection."""

    def __init__(self, ws: object) -> None:
        self.ws = ws

    async def send(self, message: str | bytes) -> None:
        await self.ws.send_message(message)  # type: ignore[attr-defined]

    async def receive(self) -> str | bytes:
        try:
            return await self.ws.get_message()  # type: ignore[attr-defined, no-any-return]
        except ClientClosed as exc:
            raise ConnectionClosed(exc.reason.code, exc.reason.reason or "") from None


Opener = Callable[[str], AbstractAsyncContextManager[object]]


@pytest.fixture(params=["memory", "hypercorn"])
def open_client(request: pytest.FixtureRequest, ws_url: str) -> Opener:
    """Open a client on a path, either in memory or against a live Hypercorn server."""
    if request.param == "memory":
        app = get_asgi_application()

        @asynccontextmanager
        async def memory(path: str) -> AsyncIterator[object]:
            target, _, query = path.partition("?")
            try:
                async with WebSocketTestClient(app, target, query_string=query) as client:
                    yield client
            except HandshakeRejected as exc:
                raise _Rejected(exc.status) from None

        return memory

    @asynccontextmanager
    async def live(path: str) -> AsyncIterator[object]:
        try:
            async with open_websocket_url(f"{ws_url}{path}") as ws:
                yield _Live(ws)
        except ConnectionRejected as exc:
            raise _Rejected(exc.status_code) from None

    return live


class _Rejected(Exception):
    def __init__(self, status: int) -> None:
        self.status = status


async def test_both_clients_agree_on_echo(open_client: Opener) -> None:
    async with open_client("/echo/") as client:
        for message in ["text", b"\xff", "", b""]:
            await client.send(message)  # type: ignore[attr-defined]
            assert await client.receive() == message  # type: ignore[attr-defined]


async def test_both_clients_agree_on_rejection_status(open_client: Opener) -> None:
    with pytest.raises(_Rejected) as info:
        async with open_client("/reject/?status=401"):
            pass
    assert info.value.status == 401
    with pytest.raises(_Rejected) as info:
        async with open_client("/no/such/path/"):
            pass
    assert info.value.status == 403


async def test_both_clients_agree_on_flush_then_close_code(open_client: Opener) -> None:
    async with open_client("/greet-then-close/") as client:
        for i in range(5):
            assert await client.receive() == f"hello {i}"  # type: ignore[attr-defined]
        await client.send("20")  # type: ignore[attr-defined]
        for i in range(20):
            assert await client.receive() == f"queued {i}"  # type: ignore[attr-defined]
        with pytest.raises(ConnectionClosed) as info:
            await client.receive()  # type: ignore[attr-defined]
        assert info.value.code == 4000


async def test_nothing_is_sent_without_a_message() -> None:
    async with WebSocketTestClient(get_asgi_application(), "/echo/") as client:
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.WouldBlock):
            client.receive_nowait()


@override_settings(WEBSOCKET_SEND_QUEUE_SIZE=4, WEBSOCKET_SEND_TIMEOUT=10)
async def test_slow_consumer_is_closed_with_1008(autojump_clock: trio.testing.MockClock) -> None:
    handlers.FLOOD_STOPPED = trio.Event()
    async with WebSocketTestClient(get_asgi_application(), "/flood/", receive_buffer=2) as client:
        start = trio.current_time()
        await handlers.FLOOD_STOPPED.wait()
        # 2 in the client's buffer + 1 in the writer's hands + 4 queued, then send() waited.
        assert handlers.FLOOD_RESULT == {"sent": 7, "code": 1008}
        assert trio.current_time() - start == pytest.approx(10)
        received = []
        with pytest.raises(ConnectionClosed) as info:
            while True:
                received.append(await client.receive())
        assert info.value.code == 1008
        assert info.value.reason == "slow consumer"
        assert received == ["0", "1"]  # an abort does not flush the queue


@override_settings(WEBSOCKET_SEND_QUEUE_SIZE=8)
async def test_slow_group_member_is_closed_with_1008_without_delaying_others() -> None:
    app = get_asgi_application()
    async with (
        WebSocketTestClient(app, "/room/slow/", receive_buffer=1) as slow,
        WebSocketTestClient(app, "/room/slow/", receive_buffer=100) as fast,
    ):
        for i in range(30):
            await fast.send(f"m{i}")
            assert await fast.receive() == f"m{i}"  # the sender is never held up
        with pytest.raises(ConnectionClosed) as info:
            while True:
                await slow.receive()
        assert info.value.code == 1008


async def test_client_close_code_reaches_on_close_in_memory() -> None:
    handlers.EVENTS.clear()
    handlers.GUARD_EXITED = trio.Event()
    async with WebSocketTestClient(get_asgi_application(), "/mixins/") as client:
        await client.close(4321)
    await handlers.GUARD_EXITED.wait()
    assert "handler.close:4321" in handlers.EVENTS


@override_settings(WEBSOCKET_CLOSE_TIMEOUT=5)
async def test_leaving_the_block_answers_the_apps_close_frame_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A client answers the close frame (RFC 6455 §5.5.1): the app's connection ends when the
    # block is left, not after WEBSOCKET_CLOSE_TIMEOUT seconds of waiting for the answer.
    start = trio.current_time()
    async with WebSocketTestClient(get_asgi_application(), "/greet-then-close/") as client:
        await client.send("0")
        with pytest.raises(ConnectionClosed) as info:
            while True:
                await client.receive()
        assert info.value.code == 4000
    assert trio.current_time() - start < 5
