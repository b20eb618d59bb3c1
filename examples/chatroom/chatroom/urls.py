"""URLs of the HTML pages, Django's login page and the admin (with trio_djws' live
connections page, ``/admin/trio_djws/connections/``, before it); the WebSocket path
``/ws/chat/<slug>/`` is a ``@Namespace`` in ``chat.websockets``, not a URL pattern.
``/dws/...`` are dwebsocket-style views (``chat.dws``): WebSocket handshakes reach them
through this URLconf."""

from __future__ import annotations

from chat import dws
from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("", include("chat.urls")),
    path("accounts/", include("django.contrib.auth.urls")),
    path("admin/trio_djws/", include("trio_djws.urls")),  # before the admin's own URLs
    path("admin/", admin.site.urls),
    path("dws/echo_once/", dws.echo_once),
    path("dws/lower_case/", dws.lower_case),
]
