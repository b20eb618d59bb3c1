"""Mixins that bring Django's request machinery to WebSocket handlers.

List them before ``BaseWSClass``; like every mixin they run before the handler's hooks::

    @Namespace("/ws/inbox/")
    class Inbox(LoginRequiredMixin, BaseWSClass):
        async def on_connect(self, websocket, path):
            await websocket.send(f"hello {websocket.user.username}")

- ``DjangoMiddlewareMixin`` runs ``WEBSOCKET_MIDDLEWARE`` on the handshake (djwebsockets'
  ``WSGIMixin``, which is kept as an alias) and sets ``websocket.request``, ``user``,
  ``session`` and ``language``.
- ``LoginRequiredMixin`` and ``PermissionRequiredMixin`` are named after Django's own
  (``django.contrib.auth.mixins``) and refuse the handshake with HTTP 403.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

from .auth import load_request
from .exceptions import ConfigurationError, Reject
from .handler import BaseMixin
from .threads import to_thread

if TYPE_CHECKING:
    from .websocket import WebSocket

__all__ = [
    "DjangoMiddlewareMixin",
    "LoginRequiredMixin",
    "PermissionRequiredMixin",
    "WSGIMixin",
]


class DjangoMiddlewareMixin(BaseMixin):
    """Run Django middleware on the handshake, before ``on_connect``.

    Builds Django's ``HttpRequest`` from the handshake (headers, cookies, path, query string,
    client address) and runs the middleware listed in ``WEBSOCKET_MIDDLEWARE`` (default:
    ``SessionMiddleware`` and ``AuthenticationMiddleware``) in a worker thread under the DB
    limiter. Afterwards ``websocket.request``, ``websocket.user`` (resolved there, never
    lazily on the trio thread), ``websocket.session`` and ``websocket.language`` are set, and
    a logged-in user's connection is a member of ``trio_djws.user_group(user)``.

    A middleware that returns a response (a redirect, a 403, or the 500 Django makes of a
    middleware's exception) refuses the handshake with that HTTP status (a 3xx carries no
    ``Location`` header: browsers do not follow redirects on a WebSocket handshake).
    ``process_view`` hooks do not run: there is no view.
    """

    async def on_connect(self, websocket: WebSocket, path: str) -> None:
        """Run the middleware once per connection.

        Raises:
            Reject: a middleware answered; the status is its response's.
        """
        if websocket.request is None:
            await load_request(websocket)


WSGIMixin = DjangoMiddlewareMixin
"""djwebsockets' name for ``DjangoMiddlewareMixin``; kept as a documented alias."""


class LoginRequiredMixin(DjangoMiddlewareMixin):
    """Refuse the handshake of an anonymous user with HTTP 403 (Django's
    ``LoginRequiredMixin`` redirects to the login page; a WebSocket cannot follow it).

    Includes ``DjangoMiddlewareMixin``, whose ``on_connect`` runs first.
    """

    async def on_connect(self, websocket: WebSocket, path: str) -> None:
        """Raises:
        Reject: HTTP 403, the user is not logged in.
        """
        user = websocket.user
        if user is None or not user.is_authenticated:
            raise Reject(403, "login required (LoginRequiredMixin)")


class PermissionRequiredMixin(DjangoMiddlewareMixin):
    """Refuse the handshake with HTTP 403 unless the user has every permission in
    ``permission_required`` (``"app_label.codename"`` or a sequence of them), checked with
    ``user.has_perms()`` in a worker thread, as Django's ``PermissionRequiredMixin`` does.

    Includes ``DjangoMiddlewareMixin``, whose ``on_connect`` runs first.
    """

    permission_required: ClassVar[str | Sequence[str] | None] = None

    @classmethod
    def get_permission_required(cls) -> Sequence[str]:
        """The permissions to check.

        Raises:
            ConfigurationError: ``permission_required`` is not set.
        """
        if cls.permission_required is None:
            raise ConfigurationError(
                f"{cls.__qualname__} is missing the permission_required attribute: set it to "
                "'app_label.codename' or a list of them"
            )
        if isinstance(cls.permission_required, str):
            return (cls.permission_required,)
        return tuple(cls.permission_required)

    async def on_connect(self, websocket: WebSocket, path: str) -> None:
        """Raises:
        Reject: HTTP 403, the user lacks a permission (or is anonymous).
        """
        perms = self.get_permission_required()
        user = websocket.user
        if user is None or not user.is_authenticated:
            raise Reject(403, f"permission {', '.join(perms)} required; the user is anonymous")
        has_perms = getattr(user, "has_perms", None)  # PermissionsMixin; not every user model
        if has_perms is None or not await to_thread(has_perms, perms):
            raise Reject(403, f"permission {', '.join(perms)} required (PermissionRequiredMixin)")
