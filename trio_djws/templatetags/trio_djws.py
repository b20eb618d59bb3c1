"""``{% load trio_djws %}``: ``{% websocket_script %}`` and ``{% js_call %}``.

``{% websocket_script %}`` includes ``trio_djws/signals.js`` with its configuration: the
signals endpoint's URL (``WEBSOCKET_BASE_URI`` + ``WEBSOCKET_SIGNALS_PATH``; on another port
with ``{% websocket_script port=8001 %}``, for the standalone server) and the signed
topics token of the page (its window key and the topics the view granted with
``set_websocket_topics``). It needs the request: ``render(request, ...)``, or ``request`` in
the context.

``{% js_call "signal.name" on="change" form="form_data" id=42 %}`` goes inside an element's
tag, as df_websockets' ``js_call``: when the element fires ``on`` (default ``"change"``), the
page calls the Python signal with the other arguments as keyword arguments; ``form="name"``
adds the element's form (the element itself if it is a ``<form>``) as a list of
``{name, value}`` (receive it with ``SerializedForm(MyForm)``), and ``value="name"`` the
element's value. A ``submit`` event's default action is prevented.
"""

from __future__ import annotations

import json
from typing import Any

from django import template
from django.core.serializers.json import DjangoJSONEncoder
from django.http import HttpRequest
from django.templatetags.static import static
from django.utils.html import format_html, json_script
from django.utils.safestring import SafeString

from ..conf import get_settings
from ..signals.topics import topics_token

__all__ = ["js_call", "websocket_script"]

register = template.Library()


@register.simple_tag(takes_context=True)
def websocket_script(context: template.Context, port: int | str | None = None) -> SafeString:
    """The ``<script>`` elements that load ``signals.js`` and connect this page's window.

    Args:
        context: the template context; its ``request`` signs the page's topics token.
        port: the TCP port of the WebSocket server when it is not the page's own (the
            standalone server, ``manage.py runwebsocket``: ``WEBSOCKET_PORT``); None or
            empty: the page's own host and port.

    Raises:
        ValueError: ``WEBSOCKET_SIGNALS_PATH`` is None.
    """
    settings = get_settings()
    if settings.signals_path is None:
        raise ValueError("{% websocket_script %} needs WEBSOCKET_SIGNALS_PATH; it is None")
    config: dict[str, Any] = {"url": settings.base_uri + settings.signals_path}
    if port:
        config["port"] = int(port)
    request = getattr(context, "request", None) or context.get("request")  # RequestContext
    if isinstance(request, HttpRequest):
        config["token"] = topics_token(request)
    return format_html(
        '{}\n<script src="{}"></script>',
        json_script(config, "trio-djws-config"),
        static("trio_djws/signals.js"),
    )


@register.simple_tag
def js_call(
    signal: str, on: str = "change", form: str = "", value: str = "", **kwargs: Any
) -> SafeString:
    """Attributes that make the element call Python signal ``signal`` on event ``on``."""
    return format_html(
        'data-djws-call="{}" data-djws-on="{}" data-djws-form="{}" data-djws-value="{}" '
        'data-djws-kwargs="{}"',
        signal,
        on,
        form,
        value,
        json.dumps(kwargs, cls=DjangoJSONEncoder),
    )
