"""Handlers that use Django's request machinery (trio_djws.mixins), for tests/test_mixins.py."""

from __future__ import annotations

import json

from django.http import HttpRequest, HttpResponse, HttpResponseForbidden, HttpResponseRedirect

from trio_djws import BaseMixin, BaseWSClass, Namespace, send_to_group, user_group
from trio_djws.mixins import (
    DjangoMiddlewareMixin,
    LoginRequiredMixin,
    PermissionRequiredMixin,
    WSGIMixin,
)
from trio_djws.typing import Message
from trio_djws.websocket import WebSocket


def describe(websocket: WebSocket) -> str:
    """What the handler knows about the handshake's user, as JSON."""
    user = websocket.user
    return json.dumps(
        {
            "user": None if user is None else type(user).__name__,
            "username": getattr(user, "username", None),
            "authenticated": bool(user and user.is_authenticated),
            "language": websocket.language,
            "path": websocket.request.path if websocket.request else None,
            "remote_addr": websocket.request.META.get("REMOTE_ADDR") if websocket.request else None,
            "groups": sorted(websocket.groups),
        }
    )


@Namespace("/auth/whoami/")
class WhoAmI(DjangoMiddlewareMixin, BaseWSClass):
    """Reports the user on connect; commands: ``set k v`` (session + save_session),
    ``refresh`` (refresh_user), ``user-group TEXT`` (send_to_group to the user's group)."""

    async def on_connect(self, websocket: WebSocket, path: str) -> None:
        await websocket.send(describe(websocket))

    async def on_message(self, websocket: WebSocket, message: Message) -> None:
        assert isinstance(message, str)
        command, _, rest = message.partition(" ")
        if command == "set":
            key, _, value = rest.partition(" ")
            assert websocket.session is not None
            websocket.session[key] = value
            await websocket.save_session()
            await websocket.send("saved")
        elif command == "refresh":
            await websocket.refresh_user()
            await websocket.send(describe(websocket))
        elif command == "user-group":
            assert websocket.user is not None
            await send_to_group(user_group(websocket.user), rest)


@Namespace("/auth/wsgi-mixin/")
class OldName(WSGIMixin, BaseWSClass):
    async def on_connect(self, websocket: WebSocket, path: str) -> None:
        await websocket.send(describe(websocket))


@Namespace("/auth/login-required/")
class Private(LoginRequiredMixin, BaseWSClass):
    async def on_connect(self, websocket: WebSocket, path: str) -> None:
        assert websocket.user is not None
        await websocket.send(f"hello {websocket.user.get_username()}")


@Namespace("/auth/permission/")
class Staff(PermissionRequiredMixin, BaseWSClass):
    permission_required = "auth.change_user"

    async def on_connect(self, websocket: WebSocket, path: str) -> None:
        await websocket.send("allowed")


@Namespace("/auth/no-permission-attribute/")
class Misconfigured(PermissionRequiredMixin, BaseWSClass):
    pass


class DenyMiddleware:
    """A Django middleware: ``?deny=403`` answers 403, ``?deny=302`` redirects to /login/."""

    def __init__(self, get_response: object) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        deny = request.GET.get("deny")
        if deny == "403":
            return HttpResponseForbidden("no")
        if deny == "302":
            return HttpResponseRedirect("/login/")
        if deny == "boom":
            raise RuntimeError("middleware failed")
        return self.get_response(request)  # type: ignore[operator,no-any-return]


# -- djwebsockets-style @classmethod hooks taking (cls, websocket, ...) ------------------------

LEGACY_CLOSED: list[str] = []


class Shout(BaseMixin):
    @classmethod
    def on_message(cls, websocket: WebSocket, message: Message) -> Message:
        return message.upper() if isinstance(message, str) else message


@Namespace("/auth/legacy/")
class Legacy(Shout, WSGIMixin, BaseWSClass):
    @classmethod
    async def on_connect(cls, websocket: WebSocket, path: str) -> None:  # type: ignore[override]
        user = websocket.user
        await websocket.send(f"{cls.__name__} {path} {user.is_authenticated if user else None}")

    @classmethod
    def on_message(cls, websocket: WebSocket, message: Message) -> None:  # type: ignore[override]
        websocket.sync.send(f"{cls.__name__}:{message!s}")

    @classmethod
    async def on_close(cls, websocket: WebSocket) -> None:  # type: ignore[override]
        LEGACY_CLOSED.append(cls.__name__)
