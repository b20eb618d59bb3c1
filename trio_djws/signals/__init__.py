"""Signals and topics between browser and server, df_websockets' model on trio_djws.

A page calls named Python functions over one WebSocket (the signals endpoint,
``trio_djws.handlers.SignalHandler`` at ``WEBSOCKET_SIGNALS_PATH``), and the server calls named
JavaScript functions in chosen windows (``trigger()``)::

    from trio_djws.signals import signal, trigger, everyone, WINDOW

    @signal(path="demo.hello", is_allowed_to=everyone)
    async def hello(window_info, name: str):
        trigger(window_info, "demo.greet", to=[WINDOW], text=f"Hello {name}")

Everything public is importable from here; the modules behind it are internal: ``registry``
(``@signal``, permissions, ``SerializedForm``), ``topics`` (the destinations, the signed topics
token), ``window`` (``WindowInfo``), ``trigger``, ``wire`` (the JSON frames) and ``capture``
(``SignalQueue``, importable from ``trio_djws.testing``).
"""

from __future__ import annotations

from .capture import SignalQueue
from .registry import (
    SerializedForm,
    everyone,
    is_authenticated,
    is_staff,
    is_superuser,
    signal,
)
from .topics import (
    BROADCAST,
    SERVER,
    USER,
    WINDOW,
    serialize_topic,
    set_websocket_topics,
    topics_token,
    window_key,
)
from .trigger import atrigger, trigger
from .window import WindowInfo
from .wire import WIRE_VERSION

__all__ = [
    "BROADCAST",
    "SERVER",
    "USER",
    "WINDOW",
    "WIRE_VERSION",
    "SerializedForm",
    "SignalQueue",
    "WindowInfo",
    "atrigger",
    "everyone",
    "is_authenticated",
    "is_staff",
    "is_superuser",
    "serialize_topic",
    "set_websocket_topics",
    "signal",
    "topics_token",
    "trigger",
    "window_key",
]


def autodiscover() -> None:
    """Import every installed app's ``signals`` module (its ``@signal`` functions register as
    a side effect). Run at startup by ``trio_djws.routing.autodiscover``, through the discovery
    hook that ``AppConfig.ready()`` registers, which also routes the signals endpoint
    (``trio_djws.handlers.SignalHandler``) at ``WEBSOCKET_SIGNALS_PATH``."""
    from django.utils.module_loading import autodiscover_modules

    autodiscover_modules("signals")
