"""Internal: ``WindowInfo``; use ``trio_djws.signals``.

``WindowInfo``: who a signal comes from, or which window ``trigger()`` starts from.

As df_websockets' ``WindowInfo``: the window key, the user, the session key, the language and
the topics, built from a signals connection, a view's ``HttpRequest``, or a dict (a background
task gets ``to_dict()`` and rebuilds it with ``from_dict()``; the user object itself is not
serialised: ``get_user()`` loads it again).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.http import HttpRequest

from ..typing import JSONValue
from .topics import granted_topics, new_window_key, window_key

if TYPE_CHECKING:
    import trio
    from django.contrib.auth.base_user import AbstractBaseUser
    from django.contrib.auth.models import AnonymousUser

    from ..websocket import WebSocket

__all__: list[str] = []


def _user_group(user: object) -> str | None:
    from ..auth import user_group

    if user is None or not getattr(user, "is_authenticated", False):
        return None
    return user_group(user)  # type: ignore[arg-type]  # an authenticated Django user


@dataclass
class WindowInfo:
    """One browser window (a page connected to the signals endpoint), or the request of a
    view acting for one.

    Serialisable with ``to_dict()`` / ``from_dict()`` (JSON values only), for background tasks.
    """

    window_key: str | None = None
    """The window's key (its ``WINDOW`` topic); None when there is no window (another process)."""
    user_pk: str | None = None
    """The logged-in user's primary key as a string, else None."""
    username: str = ""
    """The user's ``get_username()``; empty for anonymous users."""
    is_authenticated: bool = False
    """Whether a user is logged in."""
    is_staff: bool = False
    """The user's ``is_staff``."""
    is_superuser: bool = False
    """The user's ``is_superuser``."""
    user_group: str | None = None
    """The group of the user's windows (``trio_djws.user_group(user)``, the ``USER`` topic)."""
    session_key: str | None = None
    """The Django session key, if the request had a session."""
    language: str | None = None
    """The request's language code."""
    topics: tuple[str, ...] = ()
    """The serialized topics the window's view granted (see ``set_websocket_topics``)."""
    user: AbstractBaseUser | AnonymousUser | None = field(default=None, repr=False, compare=False)
    """The user object when known (not serialised; see ``get_user()``)."""
    websocket: WebSocket | None = field(default=None, repr=False, compare=False)
    """The window's connection on this server, if any (not serialised)."""
    _outbox: trio.MemorySendChannel[Callable[[], Awaitable[None]]] | None = field(
        default=None, repr=False, compare=False
    )

    @property
    def has_trigger_queue(self) -> bool:
        """Whether ``trigger()`` calls made on the trio thread with this window as source
        have a queue to go to (a live signals connection on this server)."""
        return self._outbox is not None

    def set_trigger_queue(
        self, queue: trio.MemorySendChannel[Callable[[], Awaitable[None]]]
    ) -> None:
        """Send the ``trigger()`` calls made on the trio thread with this window as source
        to ``queue``, whose receive end runs them in order on the window's connection
        (``SignalHandler``). Not serialised."""
        self._outbox = queue

    def queue_trigger(self, job: Callable[[], Awaitable[None]]) -> None:
        """Hand ``job`` to the window's trigger queue without waiting.

        Raises:
            RuntimeError: the window has no trigger queue (``has_trigger_queue``).
            trio.WouldBlock: the queue is full.
            trio.ClosedResourceError: the window's connection has closed.
        """
        if self._outbox is None:
            raise RuntimeError(f"window {self.window_key} has no trigger queue")
        self._outbox.send_nowait(job)

    def close_trigger_queue(self) -> None:
        """Close the trigger queue, if any: later ``queue_trigger`` calls raise."""
        if self._outbox is not None:
            self._outbox.close()

    def _set_user(self, user: AbstractBaseUser | AnonymousUser | None) -> None:
        self.user = user
        if user is not None and user.is_authenticated:
            self.is_authenticated = True
            self.user_pk = str(user.pk)
            self.username = user.get_username()
            self.is_staff = bool(getattr(user, "is_staff", False))
            self.is_superuser = bool(getattr(user, "is_superuser", False))
            self.user_group = _user_group(user)

    @classmethod
    def from_request(cls, request: HttpRequest) -> WindowInfo:
        """The window of the page ``request`` renders (its ``window_key``); resolves
        ``request.user`` (a query on first use): call it in the view's thread."""
        info = cls(
            window_key=window_key(request),
            language=getattr(request, "LANGUAGE_CODE", None),
            topics=tuple(granted_topics(request)),
        )
        session = getattr(request, "session", None)
        if session is not None:
            info.session_key = session.session_key
        info._set_user(getattr(request, "user", None))
        return info

    @classmethod
    def from_websocket(
        cls, websocket: WebSocket, key: str | None = None, topics: tuple[str, ...] = ()
    ) -> WindowInfo:
        """The window of ``websocket`` (``websocket.user``, ``session`` and ``language`` as
        ``DjangoMiddlewareMixin`` set them), with window key ``key`` (a fresh one if None)."""
        info = cls(
            window_key=key or new_window_key(),
            language=websocket.language,
            topics=topics,
            websocket=websocket,
        )
        if websocket.session is not None:
            info.session_key = websocket.session.session_key
        info._set_user(websocket.user)
        return info

    def to_dict(self) -> dict[str, JSONValue]:
        """The serialisable fields as a JSON-compatible dict."""
        return {
            "window_key": self.window_key,
            "user_pk": self.user_pk,
            "username": self.username,
            "is_authenticated": self.is_authenticated,
            "is_staff": self.is_staff,
            "is_superuser": self.is_superuser,
            "user_group": self.user_group,
            "session_key": self.session_key,
            "language": self.language,
            "topics": list(self.topics),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WindowInfo:
        """Rebuild a ``WindowInfo`` made by ``to_dict()`` (``user`` and ``websocket`` None).

        Raises:
            KeyError, TypeError: ``data`` was not made by ``to_dict()``.
        """
        return cls(
            window_key=data["window_key"],
            user_pk=data["user_pk"],
            username=str(data["username"]),
            is_authenticated=bool(data["is_authenticated"]),
            is_staff=bool(data["is_staff"]),
            is_superuser=bool(data["is_superuser"]),
            user_group=data["user_group"],
            session_key=data["session_key"],
            language=data["language"],
            topics=tuple(data["topics"]),
        )

    def get_user(self) -> AbstractBaseUser | AnonymousUser:
        """The user object: ``user`` if known, else loaded by ``user_pk`` (a query: call it in
        a worker thread, never on the trio thread); ``AnonymousUser`` if there is none."""
        from django.contrib.auth import get_user_model
        from django.contrib.auth.models import AnonymousUser

        if self.user is not None:
            return self.user
        if self.user_pk is None:
            return AnonymousUser()
        model = get_user_model()
        # _default_manager and _meta are Django's documented Model API despite the underscore.
        manager, pk = model._default_manager, model._meta.pk  # noqa: SLF001
        user = manager.get(pk=pk.to_python(self.user_pk))
        self.user = user
        return user
