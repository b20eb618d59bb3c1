"""Django's request machinery on a WebSocket handshake: the ``HttpRequest``, the
``WEBSOCKET_MIDDLEWARE`` chain, and the user, session and language it yields.

The request is Django's own ``WSGIRequest``, built from the PEP 3333 environ of the handshake
(``trio_djws.environ.wsgi_environ``, which the ASGI app's WSGI bridge uses for HTTP), so headers,
cookies, path, query string and client address read exactly as in a view. The middleware chain is
loaded as Django's ``BaseHandler.load_middleware`` does (``import_string``, ``MiddlewareNotUsed``,
``convert_exception_to_response``), from ``WEBSOCKET_MIDDLEWARE`` instead of ``MIDDLEWARE``; its
innermost handler answers with an empty 200 that means "go on". Anything else a middleware returns
(a redirect, a 403, the 500 of an exception) refuses the handshake with its status.

Everything that may touch the database runs in a worker thread under the DB limiter
(``WEBSOCKET_DB_THREADS``): the middleware, the first use of Django's lazy ``request.user``
and ``request.session`` (forced there, so that no query ever runs on the trio thread),
``refresh_user()`` and ``save_session()``.
"""

from __future__ import annotations

import functools
import io
import logging
import threading
from collections.abc import Callable, Sequence
from importlib import import_module
from typing import TYPE_CHECKING, Any, Final, cast

from django.conf import settings
from django.core.exceptions import MiddlewareNotUsed
from django.core.handlers.exception import convert_exception_to_response
from django.core.handlers.wsgi import WSGIRequest
from django.core.signals import setting_changed
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.utils.module_loading import import_string

from .conf import get_settings
from .environ import wsgi_environ  # shared with the ASGI app's WSGI bridge
from .exceptions import ConfigurationError, Reject
from .threads import to_thread
from .tickets import TicketMixin, issue_ticket, ticket_view  # connection tickets, also here
from .typing import HTTPScope, WebSocketScope
from .websocket import set_auth_hooks

if TYPE_CHECKING:
    from django.contrib.auth.base_user import AbstractBaseUser
    from django.contrib.auth.models import AnonymousUser
    from django.contrib.sessions.backends.base import SessionBase

    from .websocket import WebSocket

__all__ = ["TicketMixin", "issue_ticket", "ticket_view", "user_group"]

logger = logging.getLogger(__name__)

_USER_GROUP_PREFIX: Final = "trio_djws.user."
_chain_lock = threading.Lock()


_HTTP_SCHEMES: Final = {"ws": "http", "wss": "https"}


def build_environ(scope: WebSocketScope) -> dict[str, Any]:
    """The PEP 3333 environ of a handshake: a ``GET`` with the handshake's headers (cookies
    included), path, query string and client address, and an empty body. The scheme is
    the handshake's HTTP one (``wss`` → ``https``), so ``request.is_secure()`` holds over
    TLS and ``SecurityMiddleware`` (``SECURE_SSL_REDIRECT``) does not redirect it."""
    scheme = scope.get("scheme", "ws")
    http_scope = cast(
        "HTTPScope",
        {**scope, "type": "http", "method": "GET", "scheme": _HTTP_SCHEMES.get(scheme, scheme)},
    )
    return dict(wsgi_environ(http_scope, io.BytesIO()))


def build_request(scope: WebSocketScope) -> WSGIRequest:
    """Django's ``WSGIRequest`` for a handshake (see ``build_environ``)."""
    return WSGIRequest(build_environ(scope))


def _passed(request: HttpRequest) -> HttpResponse:
    # The innermost handler of the chain: every middleware let the handshake through.
    response = HttpResponse(status=200)
    response.trio_djws_passed = True  # type: ignore[attr-defined]  # our marker, read below
    return response


@functools.cache
def _chain(paths: tuple[str, ...]) -> Callable[[HttpRequest], HttpResponseBase]:
    # Sync middleware only: convert_exception_to_response keeps a sync callable sync.
    handler = cast(
        "Callable[[HttpRequest], HttpResponseBase]", convert_exception_to_response(_passed)
    )
    for path in reversed(paths):
        factory = import_string(path)
        if not getattr(factory, "sync_capable", True):
            raise ConfigurationError(
                f"WEBSOCKET_MIDDLEWARE entry {path!r} is async-only (sync_capable = False); "
                "handshake middleware runs synchronously in a worker thread"
            )
        try:
            instance = factory(handler)
        except MiddlewareNotUsed:
            continue
        if instance is None:
            raise ImportError(f"Middleware factory {path} returned None")
        handler = cast(
            "Callable[[HttpRequest], HttpResponseBase]", convert_exception_to_response(instance)
        )
    return handler


def middleware_chain(paths: Sequence[str]) -> Callable[[HttpRequest], HttpResponseBase]:
    """The middleware chain of ``paths`` (dotted paths, outermost first), loaded once and
    cached until a ``setting_changed`` signal. Call it in a worker thread: loading imports.

    Raises:
        ImportError: a path does not import (also a system check error).
        ConfigurationError: a middleware is async-only (``sync_capable = False``).
    """
    with _chain_lock:  # functools.cache alone may load a chain twice when calls race
        return _chain(tuple(paths))


def _clear_chains(*, setting: str, **kwargs: object) -> None:
    if setting.startswith("WEBSOCKET_") or setting in {"MIDDLEWARE", "SESSION_ENGINE"}:
        _chain.cache_clear()


setting_changed.connect(_clear_chains, dispatch_uid="trio_djws.auth.clear_chains")


def _resolved_user(request: HttpRequest) -> AbstractBaseUser | AnonymousUser | None:
    # Django's request.user is a SimpleLazyObject: force it here, in the worker thread, and
    # keep the real object so that nothing on the trio thread ever triggers the query.
    user = getattr(request, "user", None)
    if user is None:
        return None
    user.is_authenticated  # noqa: B018  (forces the lazy object: session + user queries)
    return cast("AbstractBaseUser | AnonymousUser", getattr(user, "_wrapped", user))


def _resolved_session(request: HttpRequest) -> SessionBase | None:
    session = getattr(request, "session", None)
    if session is not None:
        session.keys()  # loads the session data now, in this thread
    return cast("SessionBase | None", session)


def _run_chain(
    scope: WebSocketScope, paths: Sequence[str]
) -> tuple[HttpRequest, HttpResponseBase | None]:
    # Worker thread: the request, and the response of a middleware that refused (or None).
    request = build_request(scope)
    response = middleware_chain(paths)(request)
    if getattr(response, "trio_djws_passed", False):
        return request, None
    return request, response


def _user_and_session(
    request: HttpRequest,
) -> tuple[AbstractBaseUser | AnonymousUser | None, SessionBase | None, str]:
    user = _resolved_user(request)
    session = _resolved_session(request)
    language = str(getattr(request, "LANGUAGE_CODE", settings.LANGUAGE_CODE))
    return user, session, language


async def load_request(websocket: WebSocket) -> None:
    """Run ``WEBSOCKET_MIDDLEWARE`` on the handshake and set ``websocket.request``, ``user``,
    ``session`` and ``language``; join ``user_group(user)`` when the user is logged in.

    Runs in a worker thread under the DB limiter (``WEBSOCKET_DB_THREADS``). A checkpoint;
    if cancelled while waiting for a thread, nothing ran.

    Raises:
        Reject: a middleware returned a response (a redirect, a 403, or the 500 that Django
            makes of a middleware's exception): the handshake gets that status.
    """
    paths = get_settings().middleware

    def run() -> tuple[
        HttpRequest,
        HttpResponseBase | None,
        tuple[AbstractBaseUser | AnonymousUser | None, SessionBase | None, str],
    ]:
        request, response = _run_chain(websocket.scope, paths)
        return request, response, _user_and_session(request)

    request, response, (user, session, language) = await to_thread(run)
    if response is not None:
        raise Reject(
            response.status_code,
            f"WEBSOCKET_MIDDLEWARE answered the handshake with HTTP {response.status_code}",
        )
    websocket.request = request
    websocket.user = user
    websocket.session = session
    websocket.language = language
    await _join_user_group(websocket, None)


async def _join_user_group(
    websocket: WebSocket, previous: AbstractBaseUser | AnonymousUser | None
) -> None:
    old = _group_of(previous)
    new = _group_of(websocket.user)
    if old is not None and old != new:
        await websocket.leave(old)
    if new is not None:
        await websocket.join(new)


def _group_of(user: AbstractBaseUser | AnonymousUser | None) -> str | None:
    if user is None or not user.is_authenticated:
        return None
    return user_group(user)


def user_group(user: AbstractBaseUser | AnonymousUser) -> str:
    """The group every connection of a logged-in ``user`` is a member of (joined by
    ``DjangoMiddlewareMixin`` at connect), so that ``send_to_group(user_group(user), ...)``
    reaches every window of that user.

    Raises:
        ValueError: ``user`` is not logged in (anonymous users have no group).
    """
    if not user.is_authenticated or user.pk is None:
        raise ValueError(f"user_group() needs a logged-in user, got {user!r}")
    return f"{_USER_GROUP_PREFIX}{user.pk}"


def _reload(request: HttpRequest) -> tuple[AbstractBaseUser | AnonymousUser | None, SessionBase]:
    # Worker thread: a fresh session from the store, then the user as AuthenticationMiddleware
    # resolves it (django.contrib.auth.get_user checks the session's auth hash).
    from django.contrib import auth

    old = cast("SessionBase | None", getattr(request, "session", None))
    engine = import_module(settings.SESSION_ENGINE)
    session = cast("SessionBase", engine.SessionStore(old.session_key if old else None))
    session.keys()
    request.session = session
    user: AbstractBaseUser | AnonymousUser | None = None
    if hasattr(request, "user"):
        user = auth.get_user(request)
        request.user = user
    return user, session


async def refresh_user(websocket: WebSocket) -> None:
    """Reload ``websocket.session`` from the session store and ``websocket.user`` from it
    (a logout elsewhere makes it ``AnonymousUser``; a login, the new user), moving the
    connection to the new user's group. Unsaved session changes are discarded.

    Runs in a worker thread under the DB limiter. A checkpoint.

    Raises:
        RuntimeError: the handshake was not run through Django middleware (the handler has
            no ``DjangoMiddlewareMixin``).
    """
    request = _require_request(websocket, "refresh_user")
    previous = websocket.user
    user, session = await to_thread(_reload, request)
    websocket.session = session
    if user is not None:
        websocket.user = user
    await _join_user_group(websocket, previous)


async def save_session(websocket: WebSocket) -> None:
    """Persist changes a handler made to ``websocket.session`` (in a worker thread under the
    DB limiter), so that the next HTTP request carrying the session cookie sees them.

    The session keeps its key, so the browser's cookie stays valid; a connection without a
    session cookie gets a new session that no browser knows about. A checkpoint.

    Raises:
        RuntimeError: ``websocket.session`` is None (no ``SessionMiddleware`` in
            ``WEBSOCKET_MIDDLEWARE``, or no ``DjangoMiddlewareMixin``).
    """
    session = websocket.session
    if session is None:
        raise RuntimeError(
            "save_session() needs websocket.session: add DjangoMiddlewareMixin to the handler "
            "and SessionMiddleware to WEBSOCKET_MIDDLEWARE"
        )
    await to_thread(session.save)


def _require_request(websocket: WebSocket, name: str) -> HttpRequest:
    if websocket.request is None:
        raise RuntimeError(
            f"{name}() needs the Django request of the handshake: add "
            "trio_djws.mixins.DjangoMiddlewareMixin to the handler's bases"
        )
    return websocket.request


# WebSocket.refresh_user() and save_session() run these (the core names no feature).
set_auth_hooks(refresh_user=refresh_user, save_session=save_session)
