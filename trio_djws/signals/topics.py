"""Internal: topics and their signed token; use ``trio_djws.signals``.

Topics: the groups that ``trigger()`` addresses, and the signed token that grants them.

A topic is a string or a model instance; ``serialize_topic`` turns it into a string
(``"app_label.model_name:pk"`` for an instance, overridable with
``WEBSOCKET_TOPIC_SERIALIZER``) and ``topic_group`` into the group that carries it, so topics
cross processes through ``WEBSOCKET_BROKER`` like any group. Besides the topics a view grants,
every window is in its own ``WINDOW`` topic, its user's ``USER`` topic
(``trio_djws.user_group(user)``) and ``BROADCAST``.

A view grants topics with ``set_websocket_topics(request, [obj, ...])``; ``{% websocket_script
%}`` embeds them with the page's window key in a token signed with ``django.core.signing``
(``SECRET_KEY``, salt ``"trio_djws.signals.topics"``), which the signals endpoint checks at the
handshake: a page cannot subscribe itself to a topic its view did not grant, nor take another
window's key. Tokens older than ``WEBSOCKET_TOPICS_MAX_AGE`` seconds are refused.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Final

from django.core import signing
from django.db.models import Model
from django.http import HttpRequest
from django.utils.module_loading import import_string

from ..conf import get_settings
from ..exceptions import ConfigurationError

__all__: list[str] = []

TOKEN_SALT: Final = "trio_djws.signals.topics"
TOPIC_GROUP_PREFIX: Final = "trio_djws.topic."
WINDOW_GROUP_PREFIX: Final = "trio_djws.window."
BROADCAST_GROUP: Final = "trio_djws.broadcast"


class Special(str):
    """One of the four special destinations of ``trigger(..., to=[...])``."""

    __slots__ = ()

    def __repr__(self) -> str:
        return str(self)


SERVER: Final = Special("SERVER")
"""Call the Python functions registered for the signal."""
WINDOW: Final = Special("WINDOW")
"""Call the JavaScript functions in the source's window only."""
USER: Final = Special("USER")
"""Call the JavaScript functions in every window of the source's logged-in user."""
BROADCAST: Final = Special("BROADCAST")
"""Call the JavaScript functions in every window connected to the signals endpoint."""


def default_serializer(topic: object) -> str:
    """``str`` unchanged; a model instance as ``"app_label.model_name:pk"``.

    Raises:
        TypeError: another type, or an unsaved instance.
    """
    if isinstance(topic, str):
        return topic
    if isinstance(topic, Model):
        if topic.pk is None:
            raise TypeError(f"a topic instance must be saved (pk set), got {topic!r}")
        return f"{topic._meta.label_lower}:{topic.pk}"  # noqa: SLF001  (Django's public _meta API)
    raise TypeError(f"a topic must be a str or a model instance, got {type(topic).__name__}")


def serialize_topic(topic: object) -> str:
    """The string of a topic, made by ``WEBSOCKET_TOPIC_SERIALIZER`` (a dotted path to a
    function of one argument; default: ``default_serializer``).

    Raises:
        TypeError: the serializer refuses ``topic``.
        ConfigurationError: the serializer does not import or returns no ``str``.
    """
    if isinstance(topic, Special):
        raise TypeError(f"{topic} is not a topic to serialize; trigger() resolves it")
    path = get_settings().topic_serializer
    try:
        serializer: Callable[[object], object] = import_string(path)
    except ImportError as exc:
        raise ConfigurationError(
            f"WEBSOCKET_TOPIC_SERIALIZER must be an importable dotted path, got {path!r}: {exc}"
        ) from exc
    value = serializer(topic)
    if not isinstance(value, str):
        raise ConfigurationError(
            f"WEBSOCKET_TOPIC_SERIALIZER {path} must return a str, got {value!r} for {topic!r}"
        )
    return value


def topic_group(topic: str) -> str:
    """The group that carries the serialized ``topic``."""
    return TOPIC_GROUP_PREFIX + topic


def window_group(key: str) -> str:
    """The group of the window whose key is ``key`` (its ``WINDOW`` topic)."""
    return WINDOW_GROUP_PREFIX + key


def new_window_key() -> str:
    """A fresh, unguessable window key (32 hex digits)."""
    return secrets.token_hex(16)


@dataclass
class _PageTopics:
    # What one rendered page gets: its window key and the topics its view granted.
    window_key: str = field(default_factory=new_window_key)
    topics: list[str] = field(default_factory=list)


_PAGE_ATTRIBUTE: Final = "trio_djws_page"


def _page(request: HttpRequest) -> _PageTopics:
    page = getattr(request, _PAGE_ATTRIBUTE, None)
    if page is None:
        page = _PageTopics()
        setattr(request, _PAGE_ATTRIBUTE, page)
    assert isinstance(page, _PageTopics)
    return page


def window_key(request: HttpRequest) -> str:
    """The window key of the page ``request`` renders (made on first use): its socket's
    ``WINDOW`` topic, and the window that ``trigger(request, ..., to=[WINDOW])`` reaches."""
    return _page(request).window_key


def set_websocket_topics(request: HttpRequest, topics: Iterable[object]) -> None:
    """Grant the page rendered for ``request`` the ``topics`` (strings or model instances):
    its socket subscribes to them when it connects, through the token that
    ``{% websocket_script %}`` embeds. Adds to topics granted earlier in the same request.

    Raises:
        TypeError: a topic is neither a str nor a saved model instance (see
            ``serialize_topic``).
    """
    page = _page(request)
    for topic in topics:
        name = serialize_topic(topic)
        if name not in page.topics:
            page.topics.append(name)


def granted_topics(request: HttpRequest) -> list[str]:
    """The serialized topics granted so far to the page of ``request``."""
    return list(_page(request).topics)


@dataclass(frozen=True)
class TopicsToken:
    """A verified topics token."""

    window_key: str
    """The window key of the page it was made for."""
    topics: tuple[str, ...]
    """The serialized topics its view granted."""


def make_token(key: str, topics: Iterable[str]) -> str:
    """Sign ``key`` and ``topics`` (``django.core.signing``, timestamped)."""
    return signing.dumps({"w": key, "t": list(topics)}, salt=TOKEN_SALT, compress=True)


def topics_token(request: HttpRequest) -> str:
    """The signed token of the page of ``request`` (what ``{% websocket_script %}`` embeds)."""
    page = _page(request)
    return make_token(page.window_key, page.topics)


def read_token(token: str) -> TopicsToken:
    """Verify a topics token.

    Raises:
        signing.BadSignature: forged or altered (``signing.SignatureExpired``, a subclass:
            older than ``WEBSOCKET_TOPICS_MAX_AGE`` seconds).
    """
    max_age = timedelta(seconds=get_settings().topics_max_age)
    data = signing.loads(token, salt=TOKEN_SALT, max_age=max_age)
    if not (
        isinstance(data, dict)
        and isinstance(data.get("w"), str)
        and isinstance(data.get("t"), list)
        and all(isinstance(topic, str) for topic in data["t"])
    ):
        raise signing.BadSignature("the topics token does not have the expected shape")
    return TopicsToken(data["w"], tuple(data["t"]))
