"""Internal: serving one connection, the only place a hook's exception becomes a close code.

``serve_websocket`` checks the handshake (draining server → 503, ``Origin`` → 403, routing →
403) and ``serve_connection`` runs the handler in the connection's own nursery:

=============================  =========================================================
hook outcome                   what the client gets
=============================  =========================================================
``on_connect`` returns         HTTP 101, then the messages queued during ``on_connect``
``Reject(status)`` / ``Block`` HTTP ``status`` (403 for Block); no close frame
any other exception before     HTTP 500, traceback logged
  the accept
exception after the accept     queued messages, then close 1011, traceback logged
handler ``close(code)``        queued messages, then close ``code``
=============================  =========================================================
"""

from __future__ import annotations

import binascii
import logging
from base64 import b64decode
from collections.abc import Awaitable, Callable
from typing import Any, Final

import trio
from wsproto.frame_protocol import CloseReason

from . import instrument
from ._receive import receive_loop
from ._runtime import Cause, Runtime
from .conf import get_settings
from .exceptions import ConnectionClosed, Reject
from .handler import BaseWSClass
from .limits import current_limits
from .log import ConnectionContext, connection_context, escape, peer_warning
from .origins import origin_allowed
from .ratelimit import TokenBucket, rate_limit_of
from .routing import Refusal, iter_namespaces, registry
from .state import current_server
from .typing import Message, Transport, WebSocketScope
from .websocket import WebSocket

__all__: list[str] = []

logger = logging.getLogger(__name__)


def _client(scope: WebSocketScope) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "-"


def _header(scope: WebSocketScope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def valid_handshake_key(scope: WebSocketScope) -> bool:
    """Whether the ``Sec-WebSocket-Key`` of an HTTP/1.1 handshake is one base64 encoding of
    16 bytes (RFC 6455 §4.2.1, item 5). True without the header (the servers refuse a missing
    key themselves; the in-memory test client sends none) and for other HTTP versions (RFC
    8441 WebSockets have no key). wsproto (Hypercorn, trio-websocket) accepts any key that is
    present; the servers answer a False with HTTP 400."""
    if scope.get("http_version") != "1.1":
        return True
    keys = [value for name, value in scope["headers"] if name.lower() == b"sec-websocket-key"]
    if not keys:
        return True
    if len(keys) != 1:
        return False
    try:
        return len(b64decode(keys[0].strip(), validate=True)) == 16
    except (binascii.Error, ValueError):
        return False


def _registered_paths(shown: int = 5) -> str:
    # For the 403 line: what the path was matched against, so that a handler whose app is
    # missing from INSTALLED_APPS shows up as a missing path rather than a mystery 403.
    paths = [path for path, _ in iter_namespaces()]
    if not paths:
        return "no @Namespace is registered"
    listed = ", ".join(repr(path) for path in paths[:shown])
    more = f" and {len(paths) - shown} more" if len(paths) > shown else ""
    return f"registered: {listed}{more}"


async def serve_websocket(transport: Transport, scope: WebSocketScope) -> None:
    """Check and route one handshake, then serve the connection until it ends.

    Routing (``trio_djws.routing``): a ``@Namespace`` matching the path wins; otherwise the
    fallback resolvers are asked (``trio_djws.views``: ``ROOT_URLCONF`` to a view that accepts
    WebSockets).

    Rejections (logged at WARNING, each naming its cause): HTTP 503 while the server drains
    for shutdown; 503 above ``WEBSOCKET_MAX_CONNECTIONS``, ``WEBSOCKET_MAX_CONNECTIONS_PER_IP``
    or within ``WEBSOCKET_FD_HEADROOM`` of the fd limit (``trio_djws.limits``); 403 for an
    ``Origin`` that ``WEBSOCKET_ALLOWED_ORIGINS``/``ALLOWED_HOSTS`` does not allow; 403 for a
    path that neither a ``@Namespace`` nor a URL pattern matches; 400 for a view that does not
    accept WebSockets; 503 when every view thread is busy.
    """
    path = scope["path"]
    server = current_server()
    if server.draining:
        logger.warning("rejected handshake for %r with 503: the server is shutting down", path)
        await _reject(transport, 503)
        return
    limits = current_limits()
    if limits.refusal(scope, len(server.connections)) is not None:
        await transport.reject(503)  # logged by refusal(), at most once a minute per cause
        return
    origin = _header(scope, b"origin")
    if not origin_allowed(origin):
        peer_warning(
            logger,
            "rejected handshake for %r with 403: Origin %r is not allowed "
            "(WEBSOCKET_ALLOWED_ORIGINS, else ALLOWED_HOSTS; WEBSOCKET_REQUIRE_ORIGIN)",
            path,
            origin,
        )
        await _reject(transport, 403)
        return
    # A @Namespace, else the fallback resolvers features registered (trio_djws.routing):
    # e.g. a ROOT_URLCONF view that accepts WebSockets (trio_djws.views).
    found = registry.resolve_scope(scope)
    if found is None:
        peer_warning(
            logger,
            "rejected handshake for %r with 403: no @Namespace or URL pattern matches this "
            "path (%s; 'manage.py websocket_routes' lists every route)",
            path,
            _registered_paths(),
        )
        await _reject(transport, 403)
        return
    if isinstance(found, Refusal):
        peer_warning(
            logger, "rejected handshake for %r with %d: %s", path, found.status, escape(found.why)
        )
        await _reject(transport, found.status)
        return
    handler_class, kwargs = found
    with limits.counted(scope):
        await serve_connection(handler_class, transport, scope, kwargs)


async def _reject(transport: Transport, status: int) -> None:
    observer = instrument.active
    if observer is not None:
        observer.handshake_rejected(status)
    await transport.reject(status)


async def serve_connection(
    handler_class: type[BaseWSClass],
    transport: Transport,
    scope: WebSocketScope,
    kwargs: dict[str, Any] | None = None,
) -> None:
    """Run one connection with a fresh handler instance, in its own nursery.

    Returns when the connection has ended; nothing it started outlives it. Hook exceptions
    never propagate: they become HTTP 500 (before the accept) or close code 1011, logged
    with the traceback, the path and the connection id.
    """
    server = current_server()
    observer = instrument.active
    probe = None
    if observer is not None:
        probe = observer.open_connection(_namespace(handler_class), _client(scope))
    runtime = Runtime(transport, server)
    if probe is not None and probe.counts_messages:
        runtime.counts = instrument.message_counts(_namespace(handler_class))
    websocket = WebSocket(runtime, scope, kwargs)
    handler = handler_class()
    log_context = ConnectionContext(
        websocket.id, escape(websocket.path), _client(scope), _namespace(handler_class)
    )
    connection_context.set(log_context)
    if probe is not None:
        probe.begin(websocket.id)
    settings = get_settings()
    close_timeout = settings.close_timeout
    max_lifetime = settings.max_lifetime
    server.add(runtime)
    try:
        async with trio.open_nursery() as nursery:
            runtime.attach(nursery)
            try:
                async with handler.mixin_connections(websocket):
                    runtime.handler = handler  # for on_resync (Groups.resync)
                    run_on_connect, on_message, run_on_close = _hooks(handler, probe)
                    await run_on_connect(websocket, websocket.path)
                    log_context.user_id = _user_id(websocket)
                    if websocket.closed and not runtime.accepted:
                        raise Reject(403, "closed in on_connect")  # refuse, as ASGI does
                    await runtime.accept()
                    if probe is not None:
                        probe.accepted()
                    if max_lifetime is not None:
                        nursery.start_soon(_close_at_end_of_life, websocket, max_lifetime)
                    try:
                        await receive_loop(runtime, on_message)
                    except BaseException as exc:
                        # on_close must see why the connection ends; logged further down.
                        failure = _failure(exc)
                        if failure is not None:
                            runtime.fail(*failure)
                        raise
                    finally:
                        with trio.move_on_after(close_timeout, shield=True):
                            await run_on_close(websocket)
            except* Reject as group:
                await _refuse(runtime, transport, group.exceptions[0])
            except* ConnectionClosed:
                pass  # the peer left mid-send: not a crash
            except* Exception:  # Cancelled is a BaseException: it passes
                if runtime.accepted:
                    logger.exception(
                        "hook failed on %r (connection %s); closing with 1011",
                        websocket.path,
                        websocket.id,
                    )
                    runtime.fail(CloseReason.INTERNAL_ERROR, "internal error")
                else:
                    logger.exception(
                        "hook failed before the handshake on %r (connection %s); HTTP 500",
                        websocket.path,
                        websocket.id,
                    )
                    with trio.move_on_after(close_timeout, shield=True):
                        await _reject(transport, 500)
            finally:
                with trio.move_on_after(2 * close_timeout, shield=True):
                    await runtime.aclose()
                nursery.cancel_scope.cancel()
    finally:
        server.discard(websocket)
        if probe is not None:
            probe.closed(runtime.accepted, websocket.close_code, websocket.close_reason)
    if runtime.accepted:
        _log_close(runtime, transport)  # after the probe: who reads it finds it counted


def _user_id(websocket: WebSocket) -> str:
    # The log context's user id: the handshake user's pk ("-": none, or anonymous).
    user = websocket.user
    if user is None or not user.is_authenticated:
        return "-"
    return str(user.pk)


def _namespace(handler_class: type[BaseWSClass]) -> str:
    # The metrics label and span attribute: the registered pattern, never the path.
    return handler_class.namespace or handler_class.__qualname__


def _hooks(
    handler: BaseWSClass, probe: instrument.ConnectionProbe | None
) -> tuple[
    Callable[[WebSocket, str], Awaitable[None]],
    Callable[[WebSocket, Message], Awaitable[None]],
    Callable[[WebSocket], Awaitable[None]],
]:
    # The hook chains serve_connection runs, wrapped by the instrumentation if any.
    # One coroutine per message, not two, when no mixin hooks on_message.
    on_message = _message_hook(handler)
    if probe is None:
        return handler.run_on_connect, on_message, handler.run_on_close
    return (
        probe.wrap_hook("on_connect", handler.run_on_connect),
        probe.wrap_hook("on_message", on_message),
        probe.wrap_hook("on_close", handler.run_on_close),
    )


MAX_LIFETIME_REASON: Final = "maximum connection lifetime"  # with 1001 at WEBSOCKET_MAX_LIFETIME


async def _close_at_end_of_life(websocket: WebSocket, seconds: float) -> None:
    # WEBSOCKET_MAX_LIFETIME: a normal close (queued messages first) with 1001, as at a
    # shutdown, so that a client reconnects (and re-authenticates) at least this often.
    await trio.sleep(seconds)
    logger.info(
        "closing %s on %r with 1001: WEBSOCKET_MAX_LIFETIME (%.0f s) reached",
        websocket.id,
        websocket.path,
        seconds,
    )
    websocket.close_nowait(CloseReason.GOING_AWAY, MAX_LIFETIME_REASON)


def _message_hook(handler: BaseWSClass) -> Callable[[WebSocket, Message], Awaitable[None]]:
    # What the receive loop calls per message: one coroutine per message, not two, when no
    # mixin hooks it; behind the connection's token bucket when it has a rate limit.
    on_message = handler.message_hook()
    limit = rate_limit_of(handler.rate_limit)
    if limit is None:
        return on_message
    bucket = TokenBucket(limit, trio.current_time())

    async def limited(websocket: WebSocket, message: Message) -> None:
        if bucket.take(trio.current_time()):
            await on_message(websocket, message)
        else:
            await handler.on_rate_limit(websocket, message)

    return limited


async def _refuse(runtime: Runtime, transport: Transport, exc: BaseException) -> None:
    status = exc.status if isinstance(exc, Reject) else 403
    websocket = runtime.websocket
    if runtime.accepted:
        # Reject after the handshake: nothing left to refuse, close with a policy violation.
        logger.warning(
            "Reject(%d) raised after the handshake on %r (connection %s); closing with 1008",
            status,
            websocket.path,
            websocket.id,
        )
        runtime.fail(CloseReason.POLICY_VIOLATION, "rejected")
        return
    logger.info("rejected handshake for %r with %d: %s", websocket.path, status, escape(str(exc)))
    with trio.move_on_after(get_settings().close_timeout, shield=True):
        await _reject(transport, status)


def _failure(exc: BaseException) -> tuple[int, str] | None:
    # The close code the except* clauses of serve_connection will choose for ``exc`` (1011
    # wins over a Reject's 1008), or None: cancelled, or the peer left mid-send.
    def other(e: BaseException) -> bool:
        return isinstance(e, Exception) and not isinstance(
            e, BaseExceptionGroup | Reject | ConnectionClosed
        )

    group = exc if isinstance(exc, BaseExceptionGroup) else BaseExceptionGroup("", [exc])
    if group.subgroup(other) is not None:
        return CloseReason.INTERNAL_ERROR, "internal error"
    if group.subgroup(Reject) is not None:
        return CloseReason.POLICY_VIOLATION, "rejected"
    return None


def _log_close(runtime: Runtime, transport: Transport) -> None:
    # One line per close, the connection id once; a close whose cause was already logged
    # (1011 with its traceback, a 1008 abort, 1009) or that the peer made is only noted at
    # INFO, so that it is not logged twice.
    websocket = runtime.websocket
    code = websocket.close_code
    if (
        runtime.cause is Cause.PEER
        and code == CloseReason.ABNORMAL_CLOSURE
        and not getattr(transport, "close_code_known", True)
    ):
        # Hypercorn reports every client close as 1006, a clean one included: a bare 1006
        # would read like an abnormal closure.
        logger.info("closed %s on %r: client closed (code unknown)", websocket.id, websocket.path)
        return
    level = (
        logging.INFO
        if code in (CloseReason.NORMAL_CLOSURE, CloseReason.GOING_AWAY)
        or runtime.cause not in (None, Cause.CLOSE)
        else logging.WARNING
    )
    logger.log(
        level,
        "closed %s on %r: code %s %r",
        websocket.id,
        websocket.path,
        code,
        websocket.close_reason,
    )
