"""URLs of the HTML pages; the WebSocket path ``/ws/chat/<slug>/`` is a ``@Namespace`` in
``chat.websockets``, not a URL pattern."""

from __future__ import annotations

from django.urls import include, path

urlpatterns = [
    path("", include("chat.urls")),
]
