"""``SignalHandler``: the signals endpoint at ``WEBSOCKET_SIGNALS_PATH`` (``/ws/signals/``).

One connection per browser window (``trio_djws/static/trio_djws/signals.js``). At the
handshake ``DjangoMiddlewareMixin`` resolves the user, session and language; the ``?token=``
made by ``{% websocket_script %}`` is verified (a forged, altered or expired one refuses the
handshake with HTTP 403) and the connection joins its topics: the window's own ``WINDOW``
topic, ``BROADCAST``, the topics its view granted, and (through the mixin)
``trio_djws.user_group(user)``. Then every call frame from the page runs the Python functions
of its signal; see ``trio_djws.signals.wire`` for the frames and the error events.

Groups with history (``WEBSOCKET_GROUP_HISTORY``): a page that reconnects with
``?since={"<group>": "<epoch>:<offset>"}`` gets the calls each group missed before the hello
frame (which carries the position of each history group), and a ``resync`` frame for a
group that could not be recovered, or that lost messages while connected (``on_resync``).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ClassVar

import trio
from django.core import signing

from trio_djws.conf import get_settings
from trio_djws.exceptions import ConnectionClosed, Reject
from trio_djws.handler import BaseWSClass
from trio_djws.history import Position
from trio_djws.mixins import DjangoMiddlewareMixin
from trio_djws.signals.registry import SignalFunction, registry
from trio_djws.signals.topics import BROADCAST_GROUP, read_token, topic_group, window_group
from trio_djws.signals.trigger import enqueue
from trio_djws.signals.window import WindowInfo
from trio_djws.signals.wire import (
    WireError,
    error_frame,
    hello_frame,
    parse_call,
    parse_since,
    resync_frame,
)
from trio_djws.threads import to_thread
from trio_djws.typing import Message
from trio_djws.websocket import WebSocket

__all__ = ["SignalHandler"]

logger = logging.getLogger(__name__)

_Job = Callable[[], Awaitable[None]]


class SignalHandler(DjangoMiddlewareMixin, BaseWSClass):
    """Runs the Python signal functions a page calls, and carries the JavaScript calls that
    ``trigger()`` sends to its window's topics.

    Calls from one window run in order, on the connection's task (``async def``) or in a
    worker thread under the DB limiter (plain ``def``); queued functions
    (``@signal(queue=...)``) run in the background, at most ``max_pending`` at a time per
    window. Nothing a page sends closes the connection: every refusal is an error event.

    Attributes:
        window_info: the window, set in ``on_connect``; also ``websocket.window_info``, where
            ``trigger()`` finds it when the connection is its source.
    """

    max_pending: ClassVar[int] = 16  # background (queued) calls per window

    def __init__(self) -> None:
        self.window_info: WindowInfo | None = None
        self._pending = 0

    async def on_connect(self, websocket: WebSocket, path: str) -> None:
        """Verify the topics token and join the window's topics.

        Raises:
            Reject: HTTP 403, the ``token`` query parameter is forged, altered or expired.
        """
        token = websocket.query.get("token")
        key: str | None = None
        topics: tuple[str, ...] = ()
        if token:
            try:
                verified = read_token(token)
            except signing.BadSignature as exc:
                logger.warning("refused a signals handshake with 403: bad topics token (%s)", exc)
                raise Reject(403, f"bad topics token: {exc}") from None
            key, topics = verified.window_key, verified.topics
        try:
            raw = websocket.query.get("since")
            since = parse_since(raw) if raw else {}
        except WireError as exc:
            logger.warning("ignored the positions of a signals handshake: %s", exc)
            since = {}
        info = WindowInfo.from_websocket(websocket, key, topics)
        assert info.window_key is not None
        outbox_send, outbox = trio.open_memory_channel[_Job](get_settings().send_queue_size)
        info.set_trigger_queue(outbox_send)
        self.window_info = info
        # Per-connection state a handler may set (WebSocket keeps a __dict__ for it).
        websocket.window_info = info  # type: ignore[attr-defined]
        groups = [window_group(info.window_key), BROADCAST_GROUP]
        groups += [topic_group(topic) for topic in topics]
        positions: dict[str, Position] = {}
        lost: list[str] = []
        for group in groups:
            result = await websocket.join(group, since=since.get(group))
            if result.position is not None:
                positions[group] = result.position
                if group in since and not result.recovered:
                    lost.append(group)
        websocket.start_soon(self._run_outbox, outbox)
        await websocket.send(hello_frame(info.window_key, positions))
        for group in lost:
            await websocket.send(resync_frame(group))

    async def on_resync(self, websocket: WebSocket, group: str) -> None:
        """Calls of ``group`` were lost for this window (the broker lost Redis and the
        group's history could not fill the gap): tell the page (a ``resync`` frame)."""
        await websocket.send(resync_frame(group))

    async def on_close(self, websocket: WebSocket) -> None:
        if self.window_info is not None:
            self.window_info.close_trigger_queue()

    async def _run_outbox(self, outbox: trio.MemoryReceiveChannel[_Job]) -> None:
        # trigger() calls made on the trio thread with this window as source, in order.
        async with outbox:
            async for job in outbox:
                try:
                    await job()
                except ConnectionClosed:
                    raise
                except Exception:
                    logger.exception("trigger() from window %s failed", self._key)

    @property
    def _key(self) -> str | None:
        return self.window_info.window_key if self.window_info is not None else None

    async def on_message(self, websocket: WebSocket, message: Message) -> None:
        try:
            call = parse_call(message)
        except WireError as exc:
            logger.warning("window %s sent a bad signals frame: %s", self._key, exc)
            await websocket.send(error_frame(None, "bad_message", str(exc)))
            return
        entries = registry.get(call.signal)
        if not entries:
            logger.warning("window %s called the unknown signal %r", self._key, call.signal)
            await websocket.send(error_frame(call.signal, "unknown_signal", call.signal))
            return
        for entry in entries:
            await self._dispatch(websocket, entry, call.kwargs)

    async def _dispatch(
        self, websocket: WebSocket, entry: SignalFunction, raw: Mapping[str, Any]
    ) -> None:
        info = self.window_info
        assert info is not None
        name = entry.function.__qualname__
        try:
            allowed = bool(entry.is_allowed_to(info, **raw))
        except Exception:
            logger.exception("is_allowed_to of signal %r raised; denied", entry.path)
            allowed = False
        if not allowed:
            logger.warning(
                "signal %r (%s) denied to window %s of user %r by %s",
                entry.path,
                name,
                info.window_key,
                info.username or "anonymous",
                getattr(entry.is_allowed_to, "__qualname__", entry.is_allowed_to),
            )
            await websocket.send(error_frame(entry.path, "forbidden"))
            return
        try:
            kwargs = entry.bind(info, raw)
        except TypeError as exc:
            logger.warning("signal %r (%s): bad arguments from the page: %s", entry.path, name, exc)
            await websocket.send(error_frame(entry.path, "bad_kwargs", str(exc)))
            return
        if entry.queue is not None:
            if self._pending >= self.max_pending:
                logger.warning("window %s: too many pending background calls", info.window_key)
                await websocket.send(error_frame(entry.path, "busy"))
                return
            self._pending += 1
            websocket.start_soon(self._background, websocket, entry, raw)
            return
        try:
            if entry.is_async:
                await entry.function(info, **kwargs)
            else:
                await to_thread(functools.partial(entry.function, info, **kwargs))
        except ConnectionClosed:
            raise
        except Exception:
            logger.exception("signal %r (%s) failed", entry.path, name)
            await websocket.send(error_frame(entry.path, "failed"))

    async def _background(
        self, websocket: WebSocket, entry: SignalFunction, raw: Mapping[str, Any]
    ) -> None:
        assert self.window_info is not None
        try:
            await enqueue(entry, self.window_info, raw)
        except ConnectionClosed:
            raise
        except Exception:
            logger.exception("queued signal %r failed", entry.path)
            await websocket.send(error_frame(entry.path, "failed"))
        finally:
            self._pending -= 1
