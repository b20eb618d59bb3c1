"""The ``WebSocket`` object handlers talk to: one per connection, any transport.

A facade: request data (scope, headers, query, cookies, the handshake's Django user and
session) and the documented methods (``send``, ``close``, ``join``, ``start_soon``, ``sync``
...). The state machine, the send queue and its writer, the receive loop and its reader live
in the connection's runtime (``trio_djws._runtime``), which ``serve_connection`` drives.

Outgoing messages go through the send queue, a bounded ``trio`` memory channel of
``WEBSOCKET_SEND_QUEUE_SIZE`` messages drained by one writer task in the connection's nursery:
that queue is the backpressure point and the reason queued messages are delivered before a
normal close (queued messages, then the close frame).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from functools import cached_property, partial
from typing import TYPE_CHECKING, Any

import trio
from django.core.serializers.json import DjangoJSONEncoder
from django.http import QueryDict
from django.http.cookie import parse_cookie
from wsproto.frame_protocol import CloseReason

from ._runtime import Runtime, State
from .history import JoinResult, Position, history_policy
from .typing import JSONValue, Message, WebSocketScope

if TYPE_CHECKING:
    from django.contrib.auth.base_user import AbstractBaseUser
    from django.contrib.auth.models import AnonymousUser
    from django.contrib.sessions.backends.base import SessionBase
    from django.http import HttpRequest

__all__ = ["WebSocket"]

_AuthHook = Callable[["WebSocket"], Awaitable[None]]
# Django auth's refresh_user and save_session (features sit above this module): registered by
# trio_djws.auth when it is imported, which trio_djws's own __init__ does.
_auth_hooks: tuple[_AuthHook, _AuthHook] | None = None


def set_auth_hooks(*, refresh_user: _AuthHook, save_session: _AuthHook) -> None:
    """Register what ``WebSocket.refresh_user()`` and ``save_session()`` run (called by
    ``trio_djws.auth`` at import)."""
    global _auth_hooks
    _auth_hooks = (refresh_user, save_session)


def _auth() -> tuple[_AuthHook, _AuthHook]:
    if _auth_hooks is None:  # only if trio_djws.auth was never imported
        raise RuntimeError("refresh_user()/save_session() need trio_djws.auth")
    return _auth_hooks


class WebSocket:
    """One WebSocket connection, as its handler sees it.

    Attributes:
        id: unique per connection (a UUID4 hex string).
        scope: the ASGI ``websocket`` scope (built alike by every transport).
        path: the request path.
        kwargs: the values of the namespace's path converters.
        subprotocol: the subprotocol chosen with ``select_subprotocol``, or None.
        close_code: None while open; then the close code (RFC 6455 §7.4): the one sent, or the
            peer's (on Hypercorn a client close always reads 1006: upstream issue 127).
        close_reason: the close reason text.
        request: Django's ``HttpRequest`` of the handshake after ``WEBSOCKET_MIDDLEWARE`` ran
            (``DjangoMiddlewareMixin``), else None.
        user: the handshake's user, resolved once at connect (``AnonymousUser`` without a
            login), else None; ``refresh_user()`` reloads it.
        session: the handshake's Django session (``save_session()`` persists changes).
        language: the request's language code (``LocaleMiddleware``, else ``LANGUAGE_CODE``).

    Other attributes may be set on it (per-connection state of a handler or mixin).
    """

    # Slots keep each connection's state small (idle memory); ``__dict__`` stays for the
    # cached properties below and for attributes that handlers set.
    __slots__ = (
        "__dict__",
        "__weakref__",
        "_runtime",
        "close_code",
        "close_reason",
        "id",
        "kwargs",
        "language",
        "path",
        "request",
        "scope",
        "session",
        "subprotocol",
        "user",
    )

    def __init__(
        self, runtime: Runtime, scope: WebSocketScope, kwargs: dict[str, Any] | None = None
    ) -> None:
        # Made by serve_connection over the connection's runtime, never by applications.
        self.id = uuid.uuid4().hex
        self.scope = scope
        self.path = scope["path"]
        self.kwargs: dict[str, Any] = kwargs or {}
        self.subprotocol: str | None = None
        self.close_code: int | None = None
        self.close_reason = ""
        # Set by DjangoMiddlewareMixin (trio_djws.auth), in a worker thread at connect.
        self.request: HttpRequest | None = None
        self.user: AbstractBaseUser | AnonymousUser | None = None
        self.session: SessionBase | None = None
        self.language: str | None = None
        self._runtime = runtime
        runtime.websocket = self

    def __repr__(self) -> str:
        return f"<WebSocket {self.id} {self.path!r} {self._runtime.state.name}>"

    # -- request data ----------------------------------------------------------------------

    @cached_property
    def headers(self) -> dict[str, str]:
        """Handshake headers, names lower-cased; repeated headers joined with ``", "``."""
        headers: dict[str, str] = {}
        for raw_name, raw_value in self.scope["headers"]:
            name = raw_name.decode("latin-1").lower()
            value = raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        return headers

    @cached_property
    def query(self) -> QueryDict:
        """The query string as an immutable Django ``QueryDict``."""
        return QueryDict(self.scope["query_string"].decode("latin-1"))

    @cached_property
    def cookies(self) -> dict[str, str]:
        """Cookies from the handshake's ``Cookie`` header (Django's ``parse_cookie``)."""
        return parse_cookie(self.headers.get("cookie", ""))

    @cached_property
    def sync(self) -> SyncWebSocket:
        """Blocking ``send``/``send_json``/``close`` for plain ``def`` hooks (worker threads)."""
        return SyncWebSocket(self)

    @property
    def closed(self) -> bool:
        """True once closing has begun (by either side)."""
        return self._runtime.state >= State.REFUSING

    def select_subprotocol(self, name: str) -> None:
        """Choose the subprotocol to accept with (RFC 6455 §4.2.2, Sec-WebSocket-Protocol).

        Call it in ``on_connect``, before the handshake is accepted.

        Raises:
            ValueError: the client did not offer ``name``.
            RuntimeError: the handshake was already accepted.
        """
        offered = list(self.scope.get("subprotocols", ()))
        if name not in offered:
            raise ValueError(
                f"subprotocol {name!r} was not offered by the client; offered: {offered}"
            )
        if self._runtime.state is not State.CONNECTING:
            raise RuntimeError(
                "select_subprotocol() must be called before the handshake is accepted"
            )
        self.subprotocol = name

    async def refresh_user(self) -> None:
        """Reload ``session`` and ``user`` from the session store (in a worker thread); see
        ``trio_djws.auth.refresh_user``. A checkpoint.

        Raises:
            RuntimeError: the handler has no ``DjangoMiddlewareMixin``.
        """
        refresh_user, _ = _auth()
        await refresh_user(self)

    async def save_session(self) -> None:
        """Persist changes to ``session`` (in a worker thread); see
        ``trio_djws.auth.save_session``. A checkpoint.

        Raises:
            RuntimeError: there is no session (no ``DjangoMiddlewareMixin``).
        """
        _, save_session = _auth()
        await save_session(self)

    # -- sending ---------------------------------------------------------------------------

    def send(self, message: Message) -> Coroutine[Any, Any, None]:
        """Queue one message for this client: ``str`` as a text frame, ``bytes`` as binary.

        Waits while the send queue (WEBSOCKET_SEND_QUEUE_SIZE messages) is full; this is the
        backpressure point. If it stays full for WEBSOCKET_SEND_TIMEOUT seconds the connection
        is aborted with 1008 "slow consumer" (RFC 6455 §7.4.1; see ``abort``). Group messages
        held for this connection over its full queue are queued first: this waits behind them.
        Sent during ``on_connect``, it
        waits in the queue and goes out right after the accept; if ``on_connect`` queues more
        than the queue holds, the handshake is accepted at that point (only the client can
        drain the queue), so a ``Reject`` raised after that closes with 1008. Always a
        checkpoint; if cancelled, nothing was queued.

        Raises:
            TypeError: ``message`` is neither ``str`` nor ``bytes``.
            ConnectionClosed: the connection is closing or closed; ``exc.code`` is the close
                code (1001 on server shutdown, 1006 if the peer vanished, 1008 slow consumer).
        """
        # Not ``async def``: the runtime's coroutine is returned as is, one frame less per send.
        return self._runtime.send(message)

    async def send_json(self, data: JSONValue) -> None:
        """Send ``data`` encoded with Django's ``DjangoJSONEncoder`` as one text frame
        (datetimes as ISO 8601 with their timezone). Same waits and errors as ``send``."""
        await self._runtime.send(json.dumps(data, cls=DjangoJSONEncoder))

    # -- closing ---------------------------------------------------------------------------

    async def close(self, code: int = CloseReason.NORMAL_CLOSURE, reason: str = "") -> None:
        """Close the connection: queued messages are sent first, then the close frame.

        Idempotent: later calls do nothing. Stops the receive loop, so called from
        ``on_message`` it ends that hook at its next checkpoint; ``on_close`` then runs.
        Called in ``on_connect``, the handshake is refused with HTTP 403 instead.

        Args:
            code: the close code (RFC 6455 §7.4.1), 1000 by default.
            reason: at most 123 bytes of UTF-8 (longer is cut).
        """
        self._runtime.close_nowait(code, reason)
        await trio.lowlevel.checkpoint()

    def close_nowait(self, code: int = CloseReason.NORMAL_CLOSURE, reason: str = "") -> None:
        """``close()`` without the checkpoint: safe from sync code in the trio thread."""
        self._runtime.close_nowait(code, reason)

    def abort(self, code: int, reason: str) -> None:
        """Close at once without flushing the send queue (slow consumer, policy violation).

        Cancels every task of the connection; ``on_close`` still runs. What was queued is
        dropped; a message the transport was writing is finished, then the close frame with
        ``code`` and ``reason`` is sent, within WEBSOCKET_CLOSE_TIMEOUT seconds (a client that
        takes nothing by then is dropped: the TCP connection is closed). Logged as a WARNING.
        Sync and idempotent.
        """
        self._runtime.abort(code, reason)

    async def aclose(self) -> None:
        """Leave all groups, flush the send queue (WEBSOCKET_CLOSE_TIMEOUT seconds at most),
        then send the close frame. Idempotent. Used by serve_connection; handlers call
        ``close()``."""
        await self._runtime.aclose()

    # -- groups ----------------------------------------------------------------------------

    async def join(
        self,
        group: str,
        *,
        since: Position | None = None,
        before_messages: Callable[[JoinResult], Awaitable[None]] | None = None,
    ) -> JoinResult:
        """Become a member of ``group``: messages sent to it reach this connection.

        The membership holds its own clone of the send queue's channel. Left automatically
        when the connection ends. A checkpoint.

        For a group with history (``WEBSOCKET_GROUP_HISTORY``), ``since`` is the last
        position the client saw: if the history still holds every message after it (same
        epoch, first entry kept at most ``since.offset + 1``), they are sent first, oldest
        first, each awaited like ``send`` (backpressure; a queue full for
        ``WEBSOCKET_SEND_TIMEOUT`` seconds closes with 1008), then the live messages, with
        none twice and none missing; live messages wait meanwhile (up to the history size,
        then they are read from the history again). On the RedisBroker, the first join of a
        group on this process also waits for the Redis subscription
        (``WEBSOCKET_HISTORY_PUBLISH_TIMEOUT`` seconds at most).

        Args:
            group: the group name.
            since: the client's last position (``Position.parse("<epoch>:<offset>")``), or
                None: nothing to recover.
            before_messages: awaited with the result before the first recovered message
                is sent (e.g. to tell the client whether it was recovered); called for
                every join, with or without history.

        Returns:
            ``JoinResult(recovered, position)``: ``recovered`` is False when nothing was
            recovered (no ``since``, another epoch, the history no longer reaches back, no
            history for the group, already a member, or the broker was unreachable; then
            resync the client). ``position`` is the group's position when this member went
            live (None without history).

        Raises:
            ConnectionClosed: the connection is closing (or closed while catching up).
        """
        await trio.lowlevel.checkpoint()
        policy = history_policy(group)
        if policy is not None:
            return await self._runtime.join_history(group, policy, since, before_messages)
        self._runtime.join(group)
        result = JoinResult(False, None)
        if before_messages is not None:
            await before_messages(result)
        return result

    async def leave(self, group: str) -> None:
        """Stop being a member of ``group``; no error if not a member. A checkpoint."""
        await trio.lowlevel.checkpoint()
        self._runtime.leave(group)

    @property
    def groups(self) -> frozenset[str]:
        """The groups this connection is a member of."""
        return frozenset(self._runtime.groups or ())

    # -- tasks -----------------------------------------------------------------------------

    def start_soon(self, fn: Callable[..., Awaitable[object]], *args: object) -> None:
        """Run ``fn(*args)`` as a background task owned by this connection's nursery.

        The task is cancelled when the connection ends. An exception from it closes the
        connection with 1011 and is logged with its traceback, like a hook's.

        Raises:
            RuntimeError: the connection's nursery is not running (it has ended).
        """
        self._runtime.start_soon(fn, *args)


class SyncWebSocket:
    """Blocking access to a ``WebSocket`` from a worker thread started by trio (plain ``def``
    hooks, ``to_thread`` functions), through ``trio.from_thread.run``.

    Raises:
        ConnectionClosed: as the async methods do.
        RuntimeError: called from a thread trio did not start.
    """

    def __init__(self, websocket: WebSocket) -> None:
        self._websocket = websocket

    def send(self, message: Message) -> None:
        """Blocking ``WebSocket.send``."""
        trio.from_thread.run(self._websocket.send, message)

    def send_json(self, data: JSONValue) -> None:
        """Blocking ``WebSocket.send_json``."""
        trio.from_thread.run(self._websocket.send_json, data)

    def close(self, code: int = CloseReason.NORMAL_CLOSURE, reason: str = "") -> None:
        """Start closing (see ``WebSocket.close``); returns at once."""
        trio.from_thread.run_sync(self._websocket.close_nowait, code, reason)

    def join(self, group: str, *, since: Position | None = None) -> JoinResult:
        """Blocking ``WebSocket.join``."""
        return trio.from_thread.run(partial(self._websocket.join, group, since=since))

    def leave(self, group: str) -> None:
        """Blocking ``WebSocket.leave``."""
        trio.from_thread.run(self._websocket.leave, group)
