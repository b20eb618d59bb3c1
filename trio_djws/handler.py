"""Handlers and mixins: the classes users write.

A handler subclasses ``BaseWSClass`` and is registered with ``@Namespace``; one instance serves
one connection. Mixins (``BaseMixin`` subclasses listed before the base class) run their hooks
before the handler's, right to left as in djwebsockets: for
``class Chat(AuthMixin, LogMixin, BaseWSClass)`` every event goes LogMixin → AuthMixin → Chat.
Hooks may be ``async def`` (run on the connection's task) or plain ``def`` (run in a worker
thread under the DB limiter, talking to the client through ``websocket.sync``).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import (
    AbstractAsyncContextManager,
    AsyncExitStack,
    asynccontextmanager,
    nullcontext,
)
from typing import TYPE_CHECKING, ClassVar, Literal, Protocol, cast

from wsproto.frame_protocol import CloseReason

from .exceptions import Block, Reject
from .log import peer_warning
from .ratelimit import RateLimit  # at run time: the API docs resolve the annotation
from .threads import to_thread
from .typing import Message

if TYPE_CHECKING:
    from .websocket import WebSocket

__all__ = ["BaseMixin", "BaseWSClass"]

logger = logging.getLogger(__name__)

_HOOKS = ("on_connect", "on_message", "on_close", "on_resync")
_NO_CONNECTIONS: AbstractAsyncContextManager[None] = nullcontext()


class _Descriptor(Protocol):
    # A hook as found in a class __dict__: a function, classmethod or staticmethod.
    def __get__(self, instance: object, owner: type | None = None) -> Callable[..., object]: ...


# One resolved hook: the descriptor (bound per instance with __get__) and whether it is a
# plain ``def`` that must run in a worker thread.
_Hook = tuple[_Descriptor, bool]


def _is_async(attribute: object) -> bool:
    function = getattr(attribute, "__func__", attribute)
    return inspect.iscoroutinefunction(function)


class BaseMixin:
    """Per-handler middleware: list subclasses before ``BaseWSClass`` in a handler's bases.

    Define any of these (async or plain ``def``); each runs before the handler's own:

    - ``on_connect(self, websocket, path)``: raise ``Reject(status)`` or ``Block`` (HTTP 403)
      to refuse the handshake.
    - ``on_message(self, websocket, message)``: return a replacement message, ``None`` to keep
      it, or raise ``Block`` to drop it.
    - ``on_close(self, websocket)``.
    - ``on_resync(self, websocket, group)``.
    - ``connection(self, websocket)``: an async context manager wrapping the whole connection
      (entered before ``on_connect``, exited after ``on_close``).
    """


class BaseWSClass:
    """Base class of namespace handlers; one instance per connection.

    Override the hooks you need; the defaults do nothing. Hook exceptions close the
    connection with 1011 (before the handshake: HTTP 500) and are logged with the traceback.
    """

    namespace: ClassVar[str | None] = None
    #: Messages per second this handler's connections may send (``trio_djws.ratelimit``):
    #: ``"settings"`` (``WEBSOCKET_RATE_LIMIT``/``WEBSOCKET_RATE_BURST``), a ``RateLimit``, or
    #: None for no limit. Over it, ``on_rate_limit`` runs instead of ``on_message``.
    rate_limit: ClassVar[RateLimit | Literal["settings"] | None] = "settings"
    _mixin_hooks: ClassVar[dict[str, tuple[_Hook, ...]]] = {}
    _own_hooks: ClassVar[dict[str, _Hook]] = {}
    _connection_factories: ClassVar[tuple[_Descriptor, ...]] = ()
    # No mixin on_message and an async own on_message: run_on_message calls it directly
    # (no per-message hook-chain walk, bound-method lookup through _call or extra coroutine).
    _direct_on_message: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        mro = cls.__mro__

        def is_mixin(klass: type) -> bool:
            # A handler class that inherits a mixin is a handler, not a mixin: its hooks are
            # the handler's own, overridden by its subclasses rather than run as well.
            return (
                issubclass(klass, BaseMixin)
                and not issubclass(klass, BaseWSClass)
                and klass is not BaseMixin
            )

        # Right to left: the mixin nearest BaseWSClass in the bases runs first.
        mixins = [klass for klass in reversed(mro) if is_mixin(klass)]
        cls._mixin_hooks = {
            name: tuple(
                (klass.__dict__[name], not _is_async(klass.__dict__[name]))
                for klass in mixins
                if name in klass.__dict__
            )
            for name in _HOOKS
        }
        own: dict[str, _Hook] = {}
        for name in _HOOKS:
            for klass in mro:
                if not is_mixin(klass) and name in klass.__dict__:
                    own[name] = (klass.__dict__[name], not _is_async(klass.__dict__[name]))
                    break
        cls._own_hooks = own
        cls._direct_on_message = (
            not cls._mixin_hooks["on_message"]
            and not own["on_message"][1]
            and cls.run_on_message is BaseWSClass.run_on_message  # not overridden
        )
        cls._connection_factories = tuple(
            klass.__dict__["connection"] for klass in mixins if "connection" in klass.__dict__
        )

    async def on_connect(self, websocket: WebSocket, path: str) -> None:
        """Called before the handshake is accepted; raise ``Reject`` to refuse it.

        Messages sent here wait in the send queue and go out right after the accept.
        Call ``websocket.select_subprotocol(name)`` to pick one the client offered.
        """

    async def on_message(self, websocket: WebSocket, message: Message) -> None:
        """Called for each message, in order: ``str`` for text frames, ``bytes`` for binary."""

    async def on_rate_limit(self, websocket: WebSocket, message: Message) -> None:
        """Called instead of ``on_message`` for a message over the connection's rate limit
        (``rate_limit``; the message is dropped). By default closes with 1008 "rate limit"
        (RFC 6455 §7.4.1, policy violation), logged as one rate-limited WARNING line.
        Override it to keep the connection and answer with an error frame instead, e.g.
        ``await websocket.send_json({"type": "error", "error": "rate limit"})``. Async only.
        """
        peer_warning(
            logger,
            "connection %s on %r exceeded its message rate limit; closing with 1008",
            websocket.id,
            websocket.path,
        )
        await websocket.close(CloseReason.POLICY_VIOLATION, "rate limit")

    async def on_close(self, websocket: WebSocket) -> None:
        """Called once when an accepted connection ends, within WEBSOCKET_CLOSE_TIMEOUT
        seconds; ``websocket.close_code`` says why."""

    async def on_resync(self, websocket: WebSocket, group: str) -> None:
        """Called after the broker reconnected to Redis and resubscribed ``group`` (a group
        this connection is in): messages published meanwhile were lost, so reload state here.
        Runs as a ``websocket.start_soon`` task: an exception closes with 1011."""

    # -- the hook chain, called by serve_connection -----------------------------------------

    async def _call(self, hook: _Hook, *args: object) -> object:
        function = hook[0].__get__(self, type(self))
        if hook[1]:
            return await to_thread(function, *args)
        return await cast("Awaitable[object]", function(*args))

    async def run_on_connect(self, websocket: WebSocket, path: str) -> None:
        """Run the mixins' then the handler's ``on_connect``.

        Raises:
            Reject: the handshake must be refused (``Block`` from a mixin becomes 403).
        """
        try:
            for hook in self._mixin_hooks["on_connect"]:
                await self._call(hook, websocket, path)
        except Block as exc:
            raise Reject(403, f"blocked by a mixin: {exc}") from exc
        await self._call(self._own_hooks["on_connect"], websocket, path)

    def message_hook(self) -> Callable[[WebSocket, Message], Awaitable[None]]:
        """What serve_connection calls per message: ``on_message`` itself when no mixin
        hooks it and it is ``async def`` (one coroutine per message, not two), else
        ``run_on_message``."""
        return self.on_message if self._direct_on_message else self.run_on_message

    async def run_on_message(self, websocket: WebSocket, message: Message) -> None:
        """Run the mixins' ``on_message`` (each may replace the message or ``Block`` it),
        then the handler's."""
        if self._direct_on_message:  # the per-message hot path: precomputed per class
            await self.on_message(websocket, message)
            return
        for hook in self._mixin_hooks["on_message"]:
            try:
                replacement = await self._call(hook, websocket, message)
            except Block:
                return
            if replacement is not None:
                if not isinstance(replacement, str | bytes):
                    raise TypeError(
                        "a mixin's on_message must return str, bytes or None, "
                        f"got {type(replacement).__name__}"
                    )
                message = replacement
        await self._call(self._own_hooks["on_message"], websocket, message)

    async def run_on_close(self, websocket: WebSocket) -> None:
        """Run the mixins' then the handler's ``on_close``."""
        for hook in self._mixin_hooks["on_close"]:
            try:
                await self._call(hook, websocket)
            except Block:
                return
        await self._call(self._own_hooks["on_close"], websocket)

    async def run_on_resync(self, websocket: WebSocket, group: str) -> None:
        """Run the mixins' then the handler's ``on_resync`` (``Block`` from a mixin stops it)."""
        for hook in self._mixin_hooks["on_resync"]:
            try:
                await self._call(hook, websocket, group)
            except Block:
                return
        await self._call(self._own_hooks["on_resync"], websocket, group)

    def mixin_connections(self, websocket: WebSocket) -> AbstractAsyncContextManager[None]:
        """Enter every mixin's ``connection(websocket)`` context, right to left."""
        if not self._connection_factories:
            return _NO_CONNECTIONS  # stateless and reusable: nothing allocated per connection
        return self._enter_connections(websocket)

    @asynccontextmanager
    async def _enter_connections(self, websocket: WebSocket) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            for factory in self._connection_factories:
                context = cast(
                    "AbstractAsyncContextManager[object]",
                    factory.__get__(self, type(self))(websocket),
                )
                await stack.enter_async_context(context)
            yield


BaseWSClass.__init_subclass__()
