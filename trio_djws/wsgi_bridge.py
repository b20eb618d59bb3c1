"""Internal: the WSGI bridge of ``trio_djws.asgi`` for the ``http`` scope.

The ASGI app's WSGI bridge: Django's WSGI handler for the ASGI ``http`` scope, in worker
threads (``trio_djws.asgi`` routes the ``http`` scope here).

Django's ``ASGIHandler`` needs asyncio and fails under trio, so each HTTP request goes
through Django's WSGI handler (PEP 3333) in one worker thread under ``http_limiter()``
(``WEBSOCKET_HTTP_THREADS`` threads). The view, the iteration of its response and the
response's ``close()`` (Django's ``request_finished`` signal, which also cleans up DB
connections) all run in that one thread, because Django's DB connections belong to threads.

Bodies:

- in: the whole request body is read on the trio side **before** a worker thread is taken,
  into a ``tempfile.SpooledTemporaryFile`` that stays in memory up to Django's
  ``FILE_UPLOAD_MAX_MEMORY_SIZE`` bytes and goes to disk past it, within
  ``WEBSOCKET_HTTP_BODY_TIMEOUT`` seconds from the start of the request: a client that
  trickles its body (one byte every few seconds) holds no thread, and gets 408 Request
  Timeout when the deadline passes. A client that disconnects first costs no thread either.
  The spooled body is ``wsgi.input``; Django's own limits (``DATA_UPLOAD_MAX_MEMORY_SIZE`` …)
  apply when the view reads it. A chunked body without ``Content-Length`` gets its length.
  Hypercorn's ``TrioWSGIMiddleware`` buffers the whole body in memory and caps it at 64 KiB.
- out: each chunk of the WSGI response becomes one ``http.response.body`` message as soon
  as the response iterator yields it, so a ``StreamingHttpResponse`` streams.

Once the body is in, one trio task (the pump) is the only caller of ``receive``: it watches
for ``http.disconnect``, after which the response iterator is not advanced again and is
closed. Hypercorn drops sends to a closed connection silently, so without the pump an endless
streaming response would run on forever. A disconnect is noticed only when the response
iterator yields its next chunk.

Development conveniences (``HTTPOptions``, set with ``configure_http()``): static files at
``STATIC_URL`` from the finders of ``django.contrib.staticfiles`` (its ``StaticFilesHandler``,
as ``runserver`` serves them; by default when ``DEBUG`` is on), and one ``django.server`` log
line per request, as ``runserver`` writes (``manage.py runserver`` turns it on).
"""

from __future__ import annotations

import functools
import logging
import math
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import trio
from django.apps import apps
from django.conf import settings
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import setting_changed

from . import instrument
from .conf import get_settings
from .environ import wsgi_environ
from .log import escape, peer_warning
from .threads import http_limiter
from .typing import ASGIReceive, ASGISend, HTTPScope

if TYPE_CHECKING:
    from wsgiref.types import WSGIApplication

    from _typeshed import OptExcInfo

__all__: list[str] = []

logger = logging.getLogger(__name__)

_ERROR_BODY: Final = b"Internal Server Error"
_TIMEOUT_BODY: Final = b"Request Timeout"
_handler_lock = threading.Lock()


# Requests of runserver's log format, on runserver's logger (Django's default LOGGING prints it).
_server_log = logging.getLogger("django.server")


@dataclass(frozen=True)
class HTTPOptions:
    """Process-wide options of the HTTP side; ``manage.py runserver`` sets them."""

    static_files: bool | None = None
    """Answer ``STATIC_URL`` from the static files finders (``django.contrib.staticfiles``'
    ``StaticFilesHandler``, as ``runserver`` does). None: when ``DEBUG`` is on and
    ``django.contrib.staticfiles`` is installed (``manage.py serve`` in development)."""
    log_requests: bool = False
    """One line per request on the ``django.server`` logger, as ``runserver`` writes it:
    ``"GET /admin/ HTTP/1.1" 200 4158`` (INFO; WARNING for 4xx, ERROR for 5xx)."""


_options = HTTPOptions()


def configure_http(options: HTTPOptions) -> None:
    """Set the process's ``HTTPOptions`` (before serving; the handler is rebuilt)."""
    global _options
    _options = options
    _cached_handler.cache_clear()


def _serves_static_files() -> bool:
    wanted = _options.static_files
    if wanted is None:
        wanted = bool(settings.DEBUG)
    return wanted and apps.is_installed("django.contrib.staticfiles") and bool(settings.STATIC_URL)


@functools.cache
def _cached_handler() -> WSGIApplication:
    handler = WSGIHandler()  # loads MIDDLEWARE: imports, so only ever in a worker thread
    if _serves_static_files():
        from django.contrib.staticfiles.handlers import StaticFilesHandler

        return StaticFilesHandler(handler)
    return handler


def _wsgi_handler() -> WSGIApplication:
    # functools.cache alone may build two handlers when the first requests race.
    with _handler_lock:
        return _cached_handler()


def _clear_handler(*, setting: str, **kwargs: object) -> None:
    # so that override_settings(MIDDLEWARE=..., DEBUG=...) takes effect
    if setting in {"MIDDLEWARE", "DEBUG", "STATIC_URL", "INSTALLED_APPS"}:
        _cached_handler.cache_clear()


setting_changed.connect(_clear_handler, dispatch_uid="trio_djws.wsgi_bridge.clear_handler")


async def serve_http(scope: HTTPScope, receive: ASGIReceive, send: ASGISend) -> None:
    """Serve one ASGI ``http`` scope with Django's WSGI handler in a worker thread.

    The thread comes from ``http_limiter()`` (``WEBSOCKET_HTTP_THREADS``), never from trio's
    default limiter. Request and response bodies stream one chunk (bytes, as the client or
    the response iterator cut them) at a time; Django's settings such as
    ``DATA_UPLOAD_MAX_MEMORY_SIZE`` are the only size limits. Exceptions in views are
    Django's to handle (``handler500``). An exception in the bridge itself, including one
    raised while iterating a streaming response, is logged with its traceback and answered
    with 500 if the response has not started; once it has, the response is cut short
    (Hypercorn then closes the connection). If the client disconnects, the response
    iterator is not advanced again and is closed; nothing is raised.

    A checkpoint. If cancelled (Hypercorn's ``graceful_timeout`` at shutdown), it waits
    for the thread, which sees ``trio.Cancelled`` at its next read or write and closes the
    response; a view that never reads or writes again keeps the cancellation waiting.

    Raises:
        trio.Cancelled: as above, after the response was closed.
    """
    body = await _read_body(scope, receive, send)
    if body is None:
        return  # the client left, or got 408: no thread was taken
    exchange = _Exchange(scope, send, body)
    failed = False
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(exchange.pump, receive)
            try:
                await trio.to_thread.run_sync(exchange.run, limiter=http_limiter())
            except Exception:
                logger.exception(
                    "HTTP %s %r failed in the WSGI bridge", scope["method"], scope["path"]
                )
                failed = True
            nursery.cancel_scope.cancel()  # the pump: the request is over
    finally:
        with trio.move_on_after(get_settings().close_timeout, shield=True):
            await body.aclose()  # a no-op once the thread closed it
    if failed and not exchange.response_started and not exchange.disconnected:
        headers = [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(_ERROR_BODY))]
        await send({"type": "http.response.start", "status": 500, "headers": headers})
        await send({"type": "http.response.body", "body": _ERROR_BODY, "more_body": False})
    observer = instrument.active
    if observer is not None:
        # Set by start_response in the thread, which has returned (0: never called).
        status = exchange.status
        observer.http_request(500 if failed or not status else status)


class _Body:
    """A request body being spooled: memory up to ``FILE_UPLOAD_MAX_MEMORY_SIZE`` bytes, then a
    temporary file written from a worker thread (disk writes never block the trio thread)."""

    def __init__(self) -> None:
        self.file = tempfile.SpooledTemporaryFile(max_size=settings.FILE_UPLOAD_MAX_MEMORY_SIZE)
        self.size = 0
        self._on_disk = False

    async def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if not self._on_disk and self.size <= settings.FILE_UPLOAD_MAX_MEMORY_SIZE:
            self.file.write(chunk)  # in memory: a BytesIO write
            return
        self._on_disk = True  # this write rolls the spool over to disk
        await trio.to_thread.run_sync(self.file.write, chunk, limiter=http_limiter())

    async def aclose(self) -> None:
        # Deletes the temporary file, if there is one: in a thread.
        if self._on_disk:
            await trio.to_thread.run_sync(self.file.close, limiter=http_limiter())
        else:
            self.file.close()


async def _read_body(scope: HTTPScope, receive: ASGIReceive, send: ASGISend) -> _Body | None:
    # The whole request body, before any thread is taken, within WEBSOCKET_HTTP_BODY_TIMEOUT
    # seconds; None if the client disconnected first or got 408 (then the response is sent).
    timeout = get_settings().http_body_timeout
    body = _Body()
    with trio.move_on_after(math.inf if timeout is None else timeout) as deadline:
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                await body.aclose()
                return None
            if message["type"] != "http.request":
                continue
            chunk = bytes(message.get("body", b""))
            if chunk:
                await body.write(chunk)
            more = bool(message.get("more_body", False))
    if not deadline.cancelled_caught:
        return body
    await body.aclose()
    client = scope.get("client")
    peer_warning(
        logger,
        "HTTP %s %r from %s: request body incomplete after WEBSOCKET_HTTP_BODY_TIMEOUT "
        "(%.0f s, %d bytes received); answered 408",
        scope["method"],
        scope["path"],
        escape(f"{client[0]}:{client[1]}") if client else "an unknown client",
        timeout,
        body.size,
    )
    headers = [
        (b"content-type", b"text/plain"),
        (b"content-length", b"%d" % len(_TIMEOUT_BODY)),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": 408, "headers": headers})
    await send({"type": "http.response.body", "body": _TIMEOUT_BODY, "more_body": False})
    return None


class _Exchange:
    """One request and its response: the pump task, the trio-side helpers that the worker
    thread calls through ``trio.from_thread``, and the worker thread's own code."""

    @property
    def status(self) -> int:
        """The response's HTTP status once ``start_response`` ran, else 0; read it on the trio
        side only after the worker thread has returned."""
        return self._status

    def __init__(self, scope: HTTPScope, send: ASGISend, body: _Body) -> None:
        self._scope = scope
        self._send = send
        self._body = body
        self._start: dict[str, object] | None = None  # from start_response, until sent
        # Written by the thread before each send; read on the trio side only once the
        # thread has returned, so it needs no lock.
        self.response_started = False
        self.disconnected = False  # trio side only
        self._status = 0  # worker thread only: for the request log line
        self._bytes = 0

    # -- trio side -------------------------------------------------------------------

    async def pump(self, receive: ASGIReceive) -> None:
        # The body is in: only a disconnect is left to notice.
        while (await receive())["type"] != "http.disconnect":
            pass
        self.disconnected = True

    async def _send_messages(self, messages: list[dict[str, object]]) -> bool:
        if self.disconnected:
            return False
        for message in messages:
            await self._send(message)
        return True

    # -- worker thread ---------------------------------------------------------------

    def run(self) -> None:
        body = self._body.file
        try:
            body.seek(0)
            self._respond(body)
        finally:
            body.close()  # deletes a spooled temporary file

    def _respond(self, body: object) -> None:
        environ = wsgi_environ(self._scope, body)
        if "CONTENT_LENGTH" not in environ and self._body.size:
            environ["CONTENT_LENGTH"] = str(self._body.size)  # a chunked body: now known
        response = _wsgi_handler()(environ, self._start_response)
        complete = False
        tail = b""
        try:
            if getattr(response, "streaming", True):
                # all() stops at the first False: the client is gone, stop iterating.
                complete = all(self._write(chunk) for chunk in response)
            else:
                # Django's HttpResponse holds all its content: send it in one round trip.
                tail = b"".join(response)
                complete = True
        finally:
            close = getattr(response, "close", None)
            if close is not None:
                close()  # request_finished, in this thread
        if _options.log_requests:
            self._log_request(len(tail))
        if complete:
            # After close(): the client sees the end of the response only once the
            # request has finished.
            self._send_from_thread({"type": "http.response.body", "body": tail, "more_body": False})
        else:
            logger.debug(
                "HTTP %s %s: the client disconnected before the end of the response",
                self._scope["method"],
                self._scope["path"],
            )

    def _log_request(self, tail: int) -> None:
        # runserver's line: '"GET /path?query HTTP/1.1" 200 1234'. The target is the raw,
        # still percent-encoded one (h11 refuses control characters in it), so a client
        # cannot forge a line; extra status_code lets Django's ServerFormatter colour it.
        scope = self._scope
        target = bytes(scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
        query = bytes(scope.get("query_string", b"")).decode("latin-1")
        if query:
            target = f"{target}?{query}"
        status = self._status
        level = (
            logging.ERROR if status >= 500 else logging.WARNING if status >= 400 else logging.INFO
        )
        _server_log.log(
            level,
            '"%s %s HTTP/%s" %s %s',
            scope["method"],
            target,
            scope.get("http_version", "1.1"),
            status,
            self._bytes + tail,
            extra={"status_code": status},
        )

    def _start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: OptExcInfo | None = None, /
    ) -> Callable[[bytes], object]:
        if exc_info is not None and exc_info[1] is not None:
            if self.response_started:  # PEP 3333: too late to replace the status line
                raise exc_info[1].with_traceback(exc_info[2])
        elif self._start is not None:
            raise RuntimeError("start_response() was called twice without exc_info (PEP 3333)")
        self._status = int(status.split(" ", 1)[0])
        self._start = {
            "type": "http.response.start",
            "status": self._status,
            "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers],
        }
        return self._write

    def _write(self, data: bytes) -> bool:
        if not data:
            return True  # PEP 3333: an empty chunk does not start the response
        self._bytes += len(data)
        return self._send_from_thread(
            {"type": "http.response.body", "body": data, "more_body": True}
        )

    def _send_from_thread(self, message: dict[str, object]) -> bool:
        messages = [message]
        if not self.response_started:
            if self._start is None:
                raise RuntimeError(
                    "the WSGI application sent a body before calling start_response()"
                )
            messages.insert(0, self._start)
            self.response_started = True
        return trio.from_thread.run(self._send_messages, messages)
