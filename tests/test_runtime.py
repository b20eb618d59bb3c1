"""The connection runtime (trio_djws._runtime, trio_djws._receive): its State machine, the
close Cause, the writer's fast path and the resync dispatch, driven through serve_connection
over an in-run memory transport (a real Transport: no socket, no thread)."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing
from wsproto.frame_protocol import CloseReason

from tests.scopes import websocket_scope
from trio_djws._runtime import Cause, Runtime, State, truncate_reason
from trio_djws.connection import serve_connection
from trio_djws.exceptions import ConnectionClosed
from trio_djws.handler import BaseWSClass
from trio_djws.state import current_server
from trio_djws.typing import Message
from trio_djws.websocket import WebSocket

GONE = object()  # fed to the transport: the peer vanishes (1006)


class MemoryTransport:
    """A Transport whose peer is this test: messages in through ``feed``, frames out in
    ``sent``, handshake and close in ``events``."""

    def __init__(self) -> None:
        self._inbox_send, self._inbox = trio.open_memory_channel[Any](10)
        self.sent: list[Message] = []
        self.events: list[tuple[object, ...]] = []
        self.accept_gate: trio.Event | None = None

    async def feed(self, message: Any) -> None:
        await self._inbox_send.send(message)

    async def accept(self, subprotocol: str | None) -> None:
        if self.accept_gate is not None:
            await self.accept_gate.wait()
        self.events.append(("accept", subprotocol))

    async def reject(self, status: int) -> None:
        await trio.lowlevel.checkpoint()
        self.events.append(("reject", status))

    async def receive(self) -> Message:
        message = await self._inbox.receive()
        if message is GONE:
            raise ConnectionClosed(CloseReason.ABNORMAL_CLOSURE, "")
        assert isinstance(message, str | bytes)
        return message

    async def send(self, message: Message) -> None:
        await trio.lowlevel.checkpoint()
        self.sent.append(message)

    async def close(self, code: int, reason: str) -> None:
        await trio.lowlevel.checkpoint()
        self.events.append(("close", code, reason))


class FastTransport(MemoryTransport):
    """With the optional ``send_nowait`` fast path (as the standalone websockets engine)."""

    def __init__(self) -> None:
        super().__init__()
        self.written_now: list[Message] = []

    def send_nowait(self, message: Message) -> None:
        self.written_now.append(message)
        self.sent.append(message)


class Recorder(BaseWSClass):
    """Records the runtime and its state at each hook; ``script`` runs in on_message."""

    def __init__(self) -> None:
        self.states: list[tuple[str, State]] = []
        self.runtime: Runtime | None = None

    async def on_connect(self, websocket: WebSocket, path: str) -> None:
        self.runtime = current_server().runtime_of(websocket)
        self.states.append(("connect", self.runtime.state))

    async def on_message(self, websocket: WebSocket, message: Message) -> None:
        assert self.runtime is not None
        self.states.append(("message", self.runtime.state))
        if message == "close":
            await websocket.close(4000, "bye")
        elif message == "fail":
            raise ValueError("boom")
        else:
            await websocket.send(message)

    async def on_close(self, websocket: WebSocket) -> None:
        assert self.runtime is not None
        self.states.append(("close", self.runtime.state))


async def serve(handler: type[BaseWSClass], transport: MemoryTransport) -> None:
    await serve_connection(handler, transport, websocket_scope("/runtime/"))


def recording() -> tuple[type[Recorder], list[Recorder]]:
    """A Recorder subclass and the list of its instances (one per connection)."""
    kept: list[Recorder] = []

    class Kept(Recorder):
        def __init__(self) -> None:
            super().__init__()
            kept.append(self)

    return Kept, kept


async def run_recorder(*messages: Message) -> tuple[Recorder, Runtime, MemoryTransport]:
    """Serve one Recorder connection that gets ``messages``, until it has ended."""
    handler, kept = recording()
    transport = MemoryTransport()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve, handler, transport)
        for message in messages:
            await transport.feed(message)
    (recorder,) = kept
    assert recorder.runtime is not None
    return recorder, recorder.runtime, transport


async def test_state_goes_connecting_open_closing_closed_with_cause_close() -> None:
    recorder, runtime, transport = await run_recorder("hi", "close")
    assert recorder.states == [
        ("connect", State.CONNECTING),
        ("message", State.OPEN),
        ("message", State.OPEN),
        ("close", State.CLOSING),
    ]
    assert runtime.state is State.CLOSED
    assert runtime.cause is Cause.CLOSE
    assert transport.sent == ["hi"]  # flushed before the close frame
    assert transport.events == [("accept", None), ("close", 4000, "bye")]


async def test_close_in_on_connect_is_refused_never_accepted() -> None:
    class Refuse(Recorder):
        async def on_connect(self, websocket: WebSocket, path: str) -> None:
            await super().on_connect(websocket, path)
            await websocket.close()
            self.states.append(("closed", current_server().runtime_of(websocket).state))
            kept.append(self)

    kept: list[Recorder] = []
    transport = MemoryTransport()
    await serve(Refuse, transport)
    (recorder,) = kept
    assert recorder.states == [("connect", State.CONNECTING), ("closed", State.REFUSING)]
    assert recorder.runtime is not None
    assert recorder.runtime.state is State.REFUSED
    assert not recorder.runtime.accepted
    assert transport.events == [("reject", 403)]


async def test_peer_gone_sends_no_close_frame_and_later_sends_raise_1006() -> None:
    seen: list[int] = []

    class Streamer(Recorder):
        async def on_close(self, websocket: WebSocket) -> None:
            await super().on_close(websocket)
            with pytest.raises(ConnectionClosed) as raised:
                await websocket.send("too late")
            seen.append(raised.value.code)
            kept.append(self)

    kept: list[Recorder] = []
    transport = MemoryTransport()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve, Streamer, transport)
        await transport.feed(GONE)
    (recorder,) = kept
    assert recorder.states == [("connect", State.CONNECTING), ("close", State.GONE)]
    assert recorder.runtime is not None
    assert recorder.runtime.cause is Cause.PEER
    assert seen == [CloseReason.ABNORMAL_CLOSURE]
    assert transport.events == [("accept", None)]  # no close frame to a vanished peer


async def test_hook_failure_is_cause_failed_1011_after_the_flush() -> None:
    _, runtime, transport = await run_recorder("first", "fail")
    assert runtime.cause is Cause.FAILED
    assert transport.sent == ["first"]
    assert transport.events[-1] == ("close", CloseReason.INTERNAL_ERROR, "internal error")


async def test_abort_wins_over_a_later_failure_and_skips_the_flush() -> None:
    class Aborts(Recorder):
        async def on_message(self, websocket: WebSocket, message: Message) -> None:
            runtime = current_server().runtime_of(websocket)
            await websocket.send("queued")  # the writer has not run yet: never flushed
            websocket.abort(CloseReason.POLICY_VIOLATION, "slow consumer")
            runtime.fail(CloseReason.INTERNAL_ERROR, "internal error")  # ignored
            kept.append(runtime)
            await trio.sleep_forever()  # cancelled by the abort

    kept: list[Runtime] = []
    transport = MemoryTransport()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve, Aborts, transport)
        await transport.feed("go")
    (runtime,) = kept
    assert runtime.cause is Cause.ABORTED
    assert runtime.websocket.close_code == CloseReason.POLICY_VIOLATION
    assert transport.sent == []
    assert transport.events[-1] == ("close", CloseReason.POLICY_VIOLATION, "slow consumer")


async def test_close_while_the_accept_is_under_way_still_counts_as_accepted() -> None:
    class SlowAccept(Recorder):
        async def on_connect(self, websocket: WebSocket, path: str) -> None:
            await super().on_connect(websocket, path)
            kept.append(self)

    kept: list[Recorder] = []
    transport = MemoryTransport()
    transport.accept_gate = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve, SlowAccept, transport)
        await trio.testing.wait_all_tasks_blocked()
        (recorder,) = kept
        runtime = recorder.runtime
        assert runtime is not None
        assert runtime.state is State.ACCEPTING
        runtime.websocket.close_nowait(4001, "changed my mind")
        assert runtime.state is State.REFUSING
        transport.accept_gate.set()
    assert runtime.accepted
    assert runtime.state is State.CLOSED
    assert transport.events == [("accept", None), ("close", 4001, "changed my mind")]


async def test_message_over_the_limit_is_cause_too_big_1009(settings: Any) -> None:
    settings.WEBSOCKET_MAX_MESSAGE_SIZE = 8
    _, runtime, transport = await run_recorder("x" * 9)
    assert runtime.cause is Cause.TOO_BIG
    assert transport.events[-1] == ("close", CloseReason.MESSAGE_TOO_BIG, "message too big")


async def test_idle_writer_lets_queue_nowait_write_at_once_until_closing() -> None:
    class Member(Recorder):
        async def on_connect(self, websocket: WebSocket, path: str) -> None:
            await super().on_connect(websocket, path)
            await websocket.join("runtime")
            kept.append(self)

    kept: list[Recorder] = []
    transport = FastTransport()
    groups = current_server().groups
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve, Member, transport)
        await trio.testing.wait_all_tasks_blocked()  # accepted; the writer parked
        (recorder,) = kept
        runtime = recorder.runtime
        assert runtime is not None
        assert runtime.write_now is not None
        assert groups.deliver("runtime", "fast") == 1
        assert transport.written_now == ["fast"]
        runtime.websocket.close_nowait()
        assert runtime.write_now is None  # closing: through the queue, flushed in order
        assert groups.deliver("runtime", "queued") == 1
    assert transport.written_now == ["fast"]
    assert transport.sent == ["fast", "queued"]
    assert transport.events[-1] == ("close", CloseReason.NORMAL_CLOSURE, "")


async def test_groups_resync_runs_each_members_on_resync() -> None:
    resynced: list[str] = []

    class Resyncing(BaseWSClass):
        async def on_connect(self, websocket: WebSocket, path: str) -> None:
            await websocket.join("runtime-resync")

        async def on_resync(self, websocket: WebSocket, group: str) -> None:
            resynced.append(group)
            await websocket.close()

    transport = MemoryTransport()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve, Resyncing, transport)
        await trio.testing.wait_all_tasks_blocked()
        assert current_server().groups.resync("runtime-resync") == 1
    assert resynced == ["runtime-resync"]
    assert current_server().groups.resync("runtime-resync") == 0  # left at the close


def test_close_reason_is_cut_to_123_bytes_of_utf8() -> None:
    assert truncate_reason("é" * 100) == "é" * 61
    assert truncate_reason("short") == "short"


async def test_abort_after_the_close_frame_was_written_keeps_its_close_code() -> None:
    # A slow-consumer deadline may fire while transport.close(1000) is under way (CLOSED):
    # the abort cancels it, but the close code stays the one the peer was sent.
    closing = trio.Event()
    gate = trio.Event()

    class GatedClose(MemoryTransport):
        async def close(self, code: int, reason: str) -> None:
            self.events.append(("close", code, reason))
            closing.set()
            await gate.wait()

    kept: list[Recorder] = []

    class Closes(Recorder):
        def __init__(self) -> None:
            super().__init__()
            kept.append(self)

        async def on_message(self, websocket: WebSocket, message: Message) -> None:
            await websocket.close()

    transport = GatedClose()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve, Closes, transport)
        await transport.feed("bye")
        await closing.wait()
        runtime = kept[0].runtime
        assert runtime is not None and runtime.state is State.CLOSED
        runtime.abort(CloseReason.POLICY_VIOLATION, "slow consumer")
    assert transport.events[-1] == ("close", 1000, "")
    assert (runtime.websocket.close_code, runtime.cause) == (1000, Cause.ABORTED)
