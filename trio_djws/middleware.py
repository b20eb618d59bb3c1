"""``WebSocketMiddleware``: dwebsocket's Django middleware, for ``MIDDLEWARE``.

Every request gets dwebsocket's ``request.websocket`` (None for plain HTTP) and
``request.is_websocket()``, whatever serves it (trio_djws's HTTP bridge, ``runserver``, any
WSGI server); ``process_view`` answers HTTP 400 to a handshake for a view that does not
accept WebSockets (unless ``WEBSOCKET_ACCEPT_ALL``) and to plain HTTP for a
``@require_websocket`` view. Handshakes are routed by ``trio_djws.views`` either way; the
middleware makes the attributes available to every view, as dwebsocket's does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponseBadRequest, HttpResponseBase

from .conf import get_settings

__all__ = ["WebSocketMiddleware"]


class WebSocketMiddleware:
    """Add to ``MIDDLEWARE`` as ``"trio_djws.middleware.WebSocketMiddleware"``."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        if not hasattr(request, "websocket"):
            vars(request).update(websocket=None, is_websocket=lambda: False)
        return self.get_response(request)

    def process_view(
        self,
        request: HttpRequest,
        view_func: Callable[..., Any],
        view_args: tuple[Any, ...],
        view_kwargs: dict[str, Any],
    ) -> HttpResponseBase | None:
        """HTTP 400 for a handshake to a view that does not accept WebSockets, and for plain
        HTTP to a ``@require_websocket`` view; None (go on) otherwise."""
        if getattr(request, "websocket", None) is not None:
            if not (get_settings().accept_all or getattr(view_func, "accept_websocket", False)):
                return HttpResponseBadRequest("this URL does not accept WebSocket connections")
        elif getattr(view_func, "require_websocket", False):
            return HttpResponseBadRequest("this URL serves WebSocket connections only")
        return None
