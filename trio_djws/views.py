"""dwebsocket / django-websocket style views: a sync Django view talks to the client through
``request.websocket``.

A handshake that no ``@Namespace`` matches is resolved through ``ROOT_URLCONF``. If the view
accepts WebSockets (``@accept_websocket``, ``@require_websocket``, a view attribute
``accept_websocket = True``, or ``WEBSOCKET_ACCEPT_ALL``), Django's WSGI handler runs it, with
``MIDDLEWARE`` applied as for any request, in one worker thread for the whole connection.
The thread comes from the view limiter (``WEBSOCKET_VIEW_THREADS``); when every thread is
busy the handshake gets HTTP 503 at once instead of queueing.

The bridge: the view's ``request.websocket`` (a ``ViewWebSocket``) calls into trio with
``trio.from_thread``; messages from the client wait in a bounded memory channel
(``WEBSOCKET_SEND_QUEUE_SIZE`` messages; when it is full, the client is read no faster than the
view reads) and messages to it go through the connection's send queue. The handshake is
accepted on the view's first use of ``request.websocket``; a view that returns a response
without using it refuses the handshake with that status (3xx to 5xx) or is accepted and closed
(2xx). The connection closes when the view returns: 1000, or 1011 if it raised (Django's 500).

Why one module of more than 450 lines: the view thread's side (``ViewWebSocket``) and the trio
side (``_Bridge``, ``_ViewHandler``) are the two halves of one bridge and share its private
state; split, each would reach into the other's private names.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Final, TypeVar

import trio
from django.conf import settings
from django.core.handlers.wsgi import WSGIHandler, WSGIRequest
from django.core.signals import setting_changed
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, HttpResponseBase
from django.urls import Resolver404, get_resolver
from wsproto.frame_protocol import CloseReason

from .auth import build_environ
from .conf import get_settings
from .exceptions import ConnectionClosed, Reject
from .handler import BaseWSClass
from .routing import Refusal
from .state import current_server
from .typing import Message

if TYPE_CHECKING:
    from .typing import Transport, WebSocketScope
    from .websocket import WebSocket

__all__ = [
    "IDLE_REASON",
    "ViewWebSocket",
    "WebSocketRequest",
    "accept_websocket",
    "require_websocket",
    "resolve_fallback",
    "resolve_view",
    "serve_view",
    "view_limiter",
]

logger = logging.getLogger(__name__)

R = TypeVar("R")
_ENVIRON_KEY: Final = "trio_djws.websocket"

IDLE_REASON: Final = "idle timeout"  # with 1001 at WEBSOCKET_VIEW_IDLE_TIMEOUT
_view_limiter: trio.lowlevel.RunVar[trio.CapacityLimiter] = trio.lowlevel.RunVar("trio_djws.views")


def view_limiter() -> trio.CapacityLimiter:
    """The limiter of view threads: ``WEBSOCKET_VIEW_THREADS`` (default 20), one per open
    view connection. Each thread may hold a database connection while its view runs."""
    try:
        return _view_limiter.get()
    except LookupError:
        limiter = trio.CapacityLimiter(get_settings().view_threads)
        _view_limiter.set(limiter)
        return limiter


# -- the view side: request.websocket ------------------------------------------------------


class ViewWebSocket:
    """``request.websocket`` of a view serving a WebSocket (dwebsocket's API), for the view's
    worker thread. Text frames arrive as ``str``, binary frames as ``bytes``.

    Every method is one round trip to the trio thread (``trio.from_thread``). The first call
    of any method but ``is_closed`` completes the handshake (HTTP 101).
    """

    def __init__(self, bridge: _Bridge) -> None:
        self._bridge = bridge
        self._closed = False

    @property
    def closed(self) -> bool:
        """dwebsocket's attribute: ``is_closed()``."""
        return self.is_closed()

    def _call(self, fn: Callable[..., R], *args: object) -> R | None:
        # trio.Cancelled reaches this thread when the connection is torn down (server
        # shutdown past WEBSOCKET_SHUTDOWN_TIMEOUT, an abort): the view sees a closed socket
        # and returns normally, so that Django's request_finished still runs in this thread.
        # The trio side raises its own cancellation once the thread has returned.
        try:
            return trio.from_thread.run_sync(fn, *args)
        except trio.Cancelled:
            self._closed = True
            return None

    def _ensure_accepted(self) -> None:
        if not self._bridge.accept_requested:
            try:
                trio.from_thread.run(self._bridge.accept)
            except (trio.Cancelled, ConnectionClosed):
                self._closed = True

    def wait(self) -> Message | None:
        """Block until the next message and return it; ``None`` once the client has closed
        or the connection is closing (then the view should return)."""
        self._ensure_accepted()
        if self._closed:
            return None
        try:
            return trio.from_thread.run(self._bridge.inbox.receive)
        except (trio.EndOfChannel, trio.ClosedResourceError, trio.Cancelled):
            self._closed = True
            return None

    def read(self, fallback: Message | None = None) -> Message | None:
        """The next message if one has arrived, else ``fallback`` (never blocks)."""
        self._ensure_accepted()
        try:
            return trio.from_thread.run_sync(self._bridge.inbox.receive_nowait)
        except trio.WouldBlock:
            return fallback
        except (trio.EndOfChannel, trio.ClosedResourceError, trio.Cancelled):
            self._closed = True
            return fallback

    def count_messages(self) -> int:
        """The number of messages that have arrived and not been read."""
        self._ensure_accepted()
        count = self._call(self._bridge.queued)
        return count or 0

    def has_messages(self) -> bool:
        """Whether ``read()`` would return a message now."""
        return self.count_messages() > 0

    def send(self, message: Message) -> None:
        """Send one message (``str``: text frame, ``bytes``: binary frame). Blocks while the
        send queue (``WEBSOCKET_SEND_QUEUE_SIZE`` messages) is full; does nothing once the
        connection is closed, as dwebsocket's ``send``.

        Raises:
            TypeError: ``message`` is neither ``str`` nor ``bytes``.
        """
        if not isinstance(message, str | bytes):
            raise TypeError(f"send() expects str or bytes, got {type(message).__name__}")
        self._ensure_accepted()
        if self._closed:
            return
        try:
            trio.from_thread.run(self._bridge.send, message)
        except (ConnectionClosed, trio.Cancelled):
            self._closed = True

    def __iter__(self) -> Iterator[Message]:
        """Yield every message until the client closes the connection."""
        while (message := self.wait()) is not None:
            yield message

    def is_closed(self) -> bool:
        """Whether the connection is closing or closed (by either side)."""
        if self._closed:
            return True
        closed = self._call(lambda: self._bridge.websocket.closed)
        return closed is None or closed

    def close(self, code: int = CloseReason.NORMAL_CLOSURE, reason: str = "") -> None:
        """Close the connection with ``code`` (RFC 6455 §7.4.1) once queued messages are
        sent; later ``wait()`` returns ``None`` and ``send()`` does nothing. Idempotent."""
        self._ensure_accepted()
        if not self._closed:
            self._call(self._bridge.websocket.close_nowait, code, reason)
        self._closed = True


class WebSocketRequest(WSGIRequest):
    """Django's ``WSGIRequest`` with dwebsocket's ``websocket`` attribute (a
    ``ViewWebSocket``, or None for plain HTTP) and ``is_websocket()``."""

    def __init__(self, environ: dict[str, Any]) -> None:
        super().__init__(environ)
        self.websocket: ViewWebSocket | None = environ.get(_ENVIRON_KEY)

    def is_websocket(self) -> bool:
        """True when this request is a WebSocket handshake served by this view."""
        return self.websocket is not None


class _Handler(WSGIHandler):
    request_class = WebSocketRequest


_handler_lock = threading.Lock()


@functools.cache
def _cached_handler() -> _Handler:
    return _Handler()  # loads MIDDLEWARE: imports, so only in a worker thread


def _view_handler() -> _Handler:
    with _handler_lock:  # functools.cache alone may build two handlers when calls race
        return _cached_handler()


def _clear_handler(*, setting: str, **kwargs: object) -> None:
    if setting == "MIDDLEWARE":
        _cached_handler.cache_clear()


setting_changed.connect(_clear_handler, dispatch_uid="trio_djws.views.clear_handler")


# -- decorators ----------------------------------------------------------------------------


def _mark_plain(request: HttpRequest) -> None:
    # A request that is not a handshake served here: dwebsocket's attributes, None/False.
    if not hasattr(request, "websocket"):
        vars(request).update(websocket=None, is_websocket=lambda: False)


def _finish(request: HttpRequest, response: HttpResponseBase | None) -> HttpResponseBase:
    if response is None:
        if getattr(request, "websocket", None) is None:
            raise ValueError("a view must return a response to a plain HTTP request")
        return HttpResponse()  # a WebSocket view returns nothing: a normal close
    return response


def accept_websocket(view: Callable[..., Any]) -> Callable[..., HttpResponseBase]:
    """Decorator (dwebsocket's): the view serves WebSocket handshakes and plain HTTP.

    For a handshake, ``request.is_websocket()`` is True and ``request.websocket`` is a
    ``ViewWebSocket``; for plain HTTP they are False and None. A view that returns None after
    serving a WebSocket gets an empty 200 (a normal close, 1000).
    """

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        _mark_plain(request)
        return _finish(request, view(request, *args, **kwargs))

    vars(wrapper).update(
        accept_websocket=True, require_websocket=getattr(view, "require_websocket", False)
    )
    return wrapper


def require_websocket(view: Callable[..., Any]) -> Callable[..., HttpResponseBase]:
    """Decorator (dwebsocket's): like ``accept_websocket``, but a plain HTTP request gets
    HTTP 400 and the view does not run."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        _mark_plain(request)
        if getattr(request, "websocket", None) is None:
            return HttpResponseBadRequest("this URL serves WebSocket connections only")
        return _finish(request, view(request, *args, **kwargs))

    vars(wrapper).update(accept_websocket=True, require_websocket=True)
    return wrapper


# -- routing -------------------------------------------------------------------------------


def resolve_view(scope: WebSocketScope) -> bool | None:
    """Resolve a handshake's path through ``ROOT_URLCONF``.

    Resolution is pure Python once the URLconf is imported, so it runs on the trio thread;
    ``state.open_server`` imports the URLconf in a worker thread at startup.

    Returns:
        None when no URL pattern matches (the handshake gets 403), else whether the view
        accepts WebSockets (False: 400).
    """
    urlconf = getattr(settings, "ROOT_URLCONF", None)
    if not urlconf:
        return None
    path = scope["path"].removeprefix(scope.get("root_path", "")) or "/"
    try:
        match = get_resolver(urlconf).resolve(path)
    except Resolver404:
        return None
    return get_settings().accept_all or bool(getattr(match.func, "accept_websocket", False))


def resolve_fallback(scope: WebSocketScope) -> type[BaseWSClass] | Refusal | None:
    """The routing fallback (``trio_djws.routing.registry.add_fallback``, registered in
    ``AppConfig.ready()``): a handshake that no ``@Namespace`` matches is served by its
    ``ROOT_URLCONF`` view when that view accepts WebSockets (``serve_view``); a view that
    does not gets HTTP 400; no URL pattern: None (HTTP 403)."""
    accepts = resolve_view(scope)
    if accepts is None:
        return None
    if not accepts:
        return Refusal(
            400,
            "its view does not accept WebSockets "
            "(@accept_websocket, @require_websocket or WEBSOCKET_ACCEPT_ALL)",
        )
    return _ViewHandler


# -- the trio side -------------------------------------------------------------------------


class _Bridge:
    """What the view thread and the trio connection share; trio-side methods only."""

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket
        self.runtime = current_server().runtime_of(websocket)  # the accept, a failure
        self.inbox_send, self.inbox = trio.open_memory_channel[Message](
            get_settings().send_queue_size
        )
        self.decided = trio.Event()  # the view asked for the accept, or returned
        self.done = trio.Event()  # the view thread has returned
        self.accept_requested = False
        self.status = 500  # the view's response status once it has returned
        self.last_activity = trio.current_time()  # a message either way (idle timeout)

    def queued(self) -> int:
        return self.inbox.statistics().current_buffer_used

    async def accept(self) -> None:
        self.accept_requested = True
        self.decided.set()
        await self.runtime.wait_accepted()

    async def send(self, message: Message) -> None:
        self.last_activity = trio.current_time()
        await self.websocket.send(message)

    async def close_when_idle(self, seconds: float) -> None:
        # WEBSOCKET_VIEW_IDLE_TIMEOUT: no message either way for ``seconds`` frees
        # the view's thread (wait() returns None, then the view returns).
        while True:
            deadline = self.last_activity + seconds
            if trio.current_time() >= deadline:
                logger.info(
                    "closing view connection %s on %r with 1001: no message for %.0f s "
                    "(WEBSOCKET_VIEW_IDLE_TIMEOUT)",
                    self.websocket.id,
                    self.websocket.path,
                    seconds,
                )
                self.websocket.close_nowait(CloseReason.GOING_AWAY, IDLE_REASON)
                return
            await trio.sleep_until(deadline)

    # -- worker thread --------------------------------------------------------------------

    def run_view(self, environ: dict[str, Any]) -> int:
        statuses: list[int] = []

        def start_response(
            status: str, headers: list[tuple[str, str]], exc_info: object = None, /
        ) -> Callable[[bytes], object]:
            statuses.append(int(status.split(" ", 1)[0]))
            return lambda data: None  # a WebSocket has no response body to send

        response = _view_handler()(environ, start_response)
        try:
            for _ in response:  # a WebSocket has no response body to send
                pass
        finally:
            close = getattr(response, "close", None)
            if close is not None:
                close()  # request_finished, in this thread
        return statuses[-1] if statuses else 500


class _ViewHandler(BaseWSClass):
    """Serves one view connection through ``serve_connection`` (one instance each)."""

    def __init__(self) -> None:
        self._bridge: _Bridge | None = None

    async def on_connect(self, websocket: WebSocket, path: str) -> None:
        limiter = view_limiter()
        try:
            limiter.acquire_on_behalf_of_nowait(self)
        except trio.WouldBlock:
            raise Reject(
                503, f"all {limiter.total_tokens} view threads are busy (WEBSOCKET_VIEW_THREADS)"
            ) from None
        bridge = self._bridge = _Bridge(websocket)
        environ = build_environ(websocket.scope)
        environ[_ENVIRON_KEY] = ViewWebSocket(bridge)
        websocket.start_soon(self._run, bridge, environ, limiter)
        await bridge.decided.wait()
        if bridge.accept_requested:
            idle_timeout = get_settings().view_idle_timeout
            if idle_timeout is not None:
                websocket.start_soon(bridge.close_when_idle, idle_timeout)
            return
        if bridge.status >= 300:
            raise Reject(bridge.status, f"the view answered HTTP {bridge.status}")
        await bridge.runtime.accept()  # a 2xx without using the socket: accepted, then closed
        websocket.close_nowait(_close_code(bridge.status))

    async def _run(
        self, bridge: _Bridge, environ: dict[str, Any], limiter: trio.CapacityLimiter
    ) -> None:
        try:
            with bridge.inbox:
                # The slot taken in on_connect pays for this thread: the thread itself runs
                # under a fresh single-token limiter, so that it never waits.
                bridge.status = await trio.to_thread.run_sync(
                    bridge.run_view, environ, limiter=trio.CapacityLimiter(1)
                )
        finally:
            limiter.release_on_behalf_of(self)
            bridge.done.set()
            bridge.decided.set()
        if bridge.accept_requested:
            code = _close_code(bridge.status)
            if code != CloseReason.NORMAL_CLOSURE:
                logger.warning(
                    "view on %r answered HTTP %d after the handshake; closing with %d",
                    bridge.websocket.path,
                    bridge.status,
                    code,
                )
                bridge.runtime.fail(code, "view failed")
            else:
                bridge.websocket.close_nowait(code)

    async def on_message(self, websocket: WebSocket, message: Message) -> None:
        assert self._bridge is not None
        self._bridge.last_activity = trio.current_time()
        try:
            await self._bridge.inbox_send.send(message)  # waits while the view is behind
        except trio.BrokenResourceError:
            pass  # the view has returned; the connection is closing

    async def on_close(self, websocket: WebSocket) -> None:
        # The client left or the connection is closing: wait() returns None from now on.
        # Wait (within WEBSOCKET_CLOSE_TIMEOUT, the bound serve_connection puts on on_close)
        # for the view to return, so that its last messages go out before the close frame.
        if self._bridge is not None:
            self._bridge.inbox_send.close()
            await self._bridge.done.wait()


def _close_code(status: int) -> int:
    if status >= 500:
        return CloseReason.INTERNAL_ERROR
    if status >= 400:
        return CloseReason.POLICY_VIOLATION
    return CloseReason.NORMAL_CLOSURE


async def serve_view(transport: Transport, scope: WebSocketScope) -> None:
    """Serve a handshake with the ``ROOT_URLCONF`` view that accepts it, through
    ``serve_connection`` (close codes, logging and shutdown as for any handler).

    Rejections: HTTP 503 when all ``WEBSOCKET_VIEW_THREADS`` view threads are busy; the
    view's own status when it (or a ``MIDDLEWARE``) answers without using the socket.
    """
    from .connection import serve_connection

    await serve_connection(_ViewHandler, transport, scope)
