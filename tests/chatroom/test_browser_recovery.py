"""End to end: a room page whose socket is cut recovers exactly what it missed (Chromium).

The page reaches the chatroom server (a ``manage.py serve`` subprocess) through a TCP proxy in
this trio run, so the test can cut the page's connections without touching the server (a
restarted in-memory broker would start a new epoch) and keep the page out while another client
posts 20 messages straight to the server. Then the page is let back in: it reconnects with
``?since=<epoch>:<offset>`` and the frames of its new socket must be ``recovery: true`` and
exactly those 20 messages, no history frame. The same across a server restart on Redis: the
room's history lives in Redis and survives the server.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import trio
from playwright.sync_api import Browser, WebSocket, expect
from websockets.sync.client import connect

from tests.browser import chromium
from tests.redis_server import RedisServer

from .test_browser import ChatroomServer, open_room_page

MISSED: Final = 20  # messages posted while the page is away
BUFFER: Final = 65536  # bytes per proxy read


class Proxy:
    """A TCP proxy on 127.0.0.1 to ``target`` whose connections the test can cut."""

    def __init__(self) -> None:
        self.target = ("127.0.0.1", 0)
        self.refusing = False
        self._scopes: set[trio.CancelScope] = set()

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        task_status.started(listeners[0].socket.getsockname()[1])
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, client: trio.SocketStream) -> None:
        async with client:
            if self.refusing:
                return  # the page's socket opens and closes at once: as if offline
            try:
                server = await trio.open_tcp_stream(*self.target)
            except OSError:
                return  # the server is down (restarting)
            async with server:
                with trio.CancelScope() as scope:
                    self._scopes.add(scope)
                    try:
                        async with trio.open_nursery() as nursery:
                            nursery.start_soon(self._pipe, client, server, nursery.cancel_scope)
                            nursery.start_soon(self._pipe, server, client, nursery.cancel_scope)
                    finally:
                        self._scopes.discard(scope)

    @staticmethod
    async def _pipe(
        source: trio.SocketStream, sink: trio.SocketStream, pair: trio.CancelScope
    ) -> None:
        try:
            while chunk := await source.receive_some(BUFFER):
                await sink.send_all(chunk)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        pair.cancel()  # either side closed: close both

    def cut(self) -> None:
        """Close every proxied connection and refuse new ones until ``resume``."""
        self.refusing = True
        for scope in list(self._scopes):
            scope.cancel()

    def resume(self) -> None:
        self.refusing = False


def post(server_url: str, count: int) -> None:
    """Post ``count`` messages as "dave", straight to the server; each is broadcast back."""
    url = server_url.replace("http://", "ws://") + "/ws/chat/lobby/?nick=dave"
    with connect(url, open_timeout=20, close_timeout=5) as ws:
        texts = [f"missed {i}" for i in range(count)]
        for text in texts:
            ws.send(json.dumps({"type": "message", "text": text}))
        got: list[str] = []
        while len(got) < count:
            frame = json.loads(ws.recv(timeout=20))
            if frame.get("type") == "message" and frame["author"] == "dave":
                got.append(frame["text"])
        assert got == texts


Frames = list[dict[str, object]]


def frames_of(sockets: list[tuple[WebSocket, Frames]]) -> Callable[[WebSocket], None]:
    """A ``page.on("websocket")`` listener that records each socket's received frames."""

    def on_websocket(ws: WebSocket) -> None:
        frames: Frames = []
        sockets.append((ws, frames))
        ws.on("framereceived", lambda payload: frames.append(json.loads(payload)))

    return on_websocket


@dataclass(frozen=True)
class Steps:
    """What the browser scenario (a worker thread) asks of the trio side."""

    server_url: Callable[[], str]
    cut: Callable[[], None]
    resume: Callable[[], None]
    while_away: Callable[[], None]


def recover_in_browser(page_url: str, steps: Steps) -> None:
    """The browser scenario: cut, post 20 elsewhere, let the page back in."""
    with chromium() as browser:
        check_recovery(browser, page_url, steps)


def check_recovery(browser: Browser, page_url: str, steps: Steps) -> None:
    sockets: list[tuple[WebSocket, Frames]] = []
    page = open_room_page(browser, page_url, "carol")
    page.on("websocket", frames_of(sockets))
    messages = page.locator("#messages .message")
    post(steps.server_url(), 2)  # seen live by the page: it has a position
    expect(messages).to_have_count(2)
    before = len(sockets)

    steps.cut()
    expect(page.locator("#status")).to_have_text("reconnecting")
    steps.while_away()
    post(steps.server_url(), MISSED)
    steps.resume()
    expect(page.locator("#status")).to_have_text("online")
    expect(messages).to_have_count(2 + MISSED)
    expect(page.locator("#room")).to_have_attribute("data-recovered", "true")

    # The socket that got back in: recovery, then exactly the missed messages, no history.
    opened = [frames for ws, frames in sockets[before:] if "/ws/chat/" in ws.url and frames]
    assert len(opened) == 1, opened
    frames = [f for f in opened[0] if f["type"] != "presence"]
    assert frames[0] == {"type": "recovery", "recovered": True}
    texts = [f["text"] for f in frames[1:] if f["type"] == "message"]
    assert texts == [f"missed {i}" for i in range(MISSED)], frames
    assert not [f for f in frames if f["type"] == "history"]
    expect(messages.locator(".text")).to_have_text(
        ["missed 0", "missed 1", *[f"missed {i}" for i in range(MISSED)]]
    )


async def run(env: dict[str, str], restart_server: bool) -> None:
    # 20 messages in a row from one client: the chat's rate limit is not what is tested here.
    env = {**env, "CHAT_RATE_LIMIT": "off"}
    proxy = Proxy()
    async with trio.open_nursery() as nursery:
        server = ChatroomServer(nursery, env)
        url = await server.start()
        bind = url.removeprefix("http://")
        proxy.target = ("127.0.0.1", int(bind.rsplit(":", 1)[1]))
        port = await nursery.start(proxy.serve)

        def while_away() -> None:
            if restart_server:
                assert trio.from_thread.run(server.stop) == 0
                trio.from_thread.run(server.start, bind)

        try:
            await trio.to_thread.run_sync(
                recover_in_browser,
                f"http://127.0.0.1:{port}/rooms/lobby/",
                Steps(
                    server_url=lambda: server.url,
                    cut=lambda: trio.from_thread.run_sync(proxy.cut),
                    resume=lambda: trio.from_thread.run_sync(proxy.resume),
                    while_away=while_away,
                ),
                limiter=trio.CapacityLimiter(1),
            )
            assert await server.stop() == 0
        except BaseException:
            print(server.output())  # shown by pytest for a failed test
            raise
        nursery.cancel_scope.cancel()


async def test_a_cut_page_recovers_exactly_what_it_missed(chatroom_env: dict[str, str]) -> None:
    await run(chatroom_env, restart_server=False)


async def test_a_page_recovers_across_a_server_restart_on_redis(
    chatroom_env: dict[str, str], tmp_path: Path
) -> None:
    redis = RedisServer(tmp_path)
    await redis.start()
    try:
        await run({**chatroom_env, "REDIS_URL": redis.url}, restart_server=True)
    finally:
        await redis.stop()
