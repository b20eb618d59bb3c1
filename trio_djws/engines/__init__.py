"""Internal: the engines of the standalone server (chosen by ``WEBSOCKET_ENGINE``).

Protocol engines of the standalone server (``trio_djws.servers.standalone``).

An engine owns the WebSocket protocol on accepted TCP streams: it parses the handshake
(answering a malformed one with HTTP 400 itself), builds the ASGI-shaped ``websocket`` scope,
wraps the connection in a ``Transport`` (``trio_djws.typing``) and hands both to
``trio_djws.connection.serve_websocket``, the same entry point the ASGI path uses. Handlers,
mixins, origin checks, limits and groups therefore run identically on every transport; an
engine adds only protocol I/O:

- ``"websockets"`` (the default), module ``websockets``: ``websockets.server.ServerProtocol``
  (sans-I/O, C-accelerated framing) on trio streams from ``trio.serve_listeners``.
- ``"trio_websocket"``, module ``trio_websocket``: ``trio_websocket.WebSocketServer`` (the class
  behind ``trio_websocket.serve_websocket``; wsproto inside).

Both engines: send every queued message with a write deadline of ``WEBSOCKET_SEND_TIMEOUT``
seconds (per 256 KiB piece on ``websockets``, per message on ``trio_websocket``), after which
the client is a slow consumer: the connection closes with 1008, the frame cut short finished
and the close frame sent within ``WEBSOCKET_CLOSE_TIMEOUT`` or the socket closed (a client
that stops reading blocks neither other connections nor shutdown); ping every
``WEBSOCKET_PING_INTERVAL`` seconds (a peer that stops acknowledging is then aborted by the
kernel at ``WEBSOCKET_TCP_USER_TIMEOUT``); report the
client's own close code and reason to the application; close with 1007 on a text message that
is not UTF-8 and with 1009 on a message over ``WEBSOCKET_MAX_MESSAGE_SIZE`` bytes, each logged
with its cause.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from http import HTTPStatus
from typing import Protocol
from urllib.parse import unquote

import trio

from ..conf import ENGINES
from ..exceptions import ConnectionClosed
from ..log import quiet_accept_errors
from ..typing import WebSocketScope
from .pins import check_engine

__all__: list[str] = []

logger = logging.getLogger(__name__)


class Engine(Protocol):
    """The accept loop of one engine: serves WebSocket connections on listeners."""

    name: str

    async def serve(
        self,
        listeners: Sequence[trio.SocketListener],
        *,
        handler_nursery: trio.Nursery,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept connections on ``listeners`` until cancelled; each connection runs in
        ``handler_nursery`` (owned by the server, so that accepting can stop while
        connections drain). Reports ``started()`` once accepting. Never raises for one
        connection's failure: that is logged and only that connection ends."""


@dataclass
class StreamEngine:
    """An ``Engine`` whose accept loop is ``trio.serve_listeners``: each accepted TCP stream
    runs ``serve_stream`` (handshake to close) in the handler nursery. Both engines are one.

    A connection's failure is contained here, so one bad connection never ends the server:
    ``ConnectionClosed`` (the peer left, or a write timed out and was logged) ends it
    quietly, any other ``Exception`` is logged with its traceback; either way the stream is
    then closed forcefully (shielded, so it is closed even when cancelled).
    """

    name: str
    """The ``WEBSOCKET_ENGINE`` value that selects this engine."""
    serve_stream: Callable[[trio.SocketStream], Awaitable[None]]
    """Serves one accepted stream: handshake, scope, ``serve_websocket``."""

    async def serve(
        self,
        listeners: Sequence[trio.SocketListener],
        *,
        handler_nursery: trio.Nursery,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """See ``Engine.serve``."""
        quiet_accept_errors()  # EMFILE: one line a minute, not a traceback per retry
        async with trio.open_nursery() as nursery:
            await nursery.start(
                partial(
                    trio.serve_listeners,
                    self._serve_contained,
                    list(listeners),
                    handler_nursery=handler_nursery,
                )
            )
            task_status.started()

    async def _serve_contained(self, stream: trio.SocketStream) -> None:
        try:
            await self.serve_stream(stream)
        except ConnectionClosed:
            pass  # the peer left, or a write timed out (logged) outside the connection model
        except Exception:
            logger.exception("connection from %s failed; closing it", peer(stream))
        finally:
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(stream)


def get_engine(name: str) -> Engine:
    """The engine called ``name`` (a ``WEBSOCKET_ENGINE`` value).

    Checks once per process that the libraries the engine drives are releases it is tested on
    (``trio_djws.engines.pins``).

    Raises:
        ValueError: ``name`` is not one of ``trio_djws.conf.ENGINES``.
        RuntimeError: an untested release of the engine's library; the message names it.
    """
    if name not in ENGINES:
        raise ValueError(f"WEBSOCKET_ENGINE must be one of {', '.join(ENGINES)}, got {name!r}")
    check_engine(name)
    module = importlib.import_module(f"{__name__}.{name}")  # one module per value
    engine: Engine = module.ENGINE
    return engine


def make_scope(
    target: str,
    headers: Iterable[tuple[str, str]],
    subprotocols: Sequence[str],
    stream: trio.SocketStream,
) -> WebSocketScope:
    """The ASGI ``websocket`` scope (ASGI spec 2.3) of a handshake, as Hypercorn builds it:
    ``path`` percent-decoded, header names lower-cased bytes, ``client``/``server`` from the
    socket."""
    raw_path, _, query = target.partition("?")
    return {
        "type": "websocket",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "scheme": "ws",
        "path": unquote(raw_path),
        "raw_path": raw_path.encode("latin-1"),
        "query_string": query.encode("latin-1"),
        "root_path": "",
        "headers": [
            (name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers
        ],
        "client": _address(stream, peer=True),
        "server": _address(stream, peer=False),
        "subprotocols": list(subprotocols),
    }


def _address(stream: trio.SocketStream, *, peer: bool) -> tuple[str, int] | None:
    try:
        address = stream.socket.getpeername() if peer else stream.socket.getsockname()
    except OSError:
        return None
    return str(address[0]), int(address[1])


def peer(stream: trio.abc.Stream) -> str:
    """``HOST:PORT`` of the peer of a socket stream, for log lines."""
    if isinstance(stream, trio.SocketStream):
        address = _address(stream, peer=True)
        if address is not None:
            return f"{address[0]}:{address[1]}"
    return "an unknown peer"


def reason_phrase(status: int) -> str:
    """The HTTP reason phrase of ``status`` (RFC 9110), or ``""`` for an unregistered one."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""
