"""A sync Django view that reaches the WebSocket clients of the standalone server running in
the same process (tests/test_servers_wsgi.py)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, path

import trio_djws


def publish(request: HttpRequest, group: str) -> HttpResponse:
    # trio_djws.publish() hands the message to the server thread's trio run in this process
    # (the in-memory broker lives there).
    trio_djws.publish(group, request.GET["text"])
    return HttpResponse("sent", content_type="text/plain")


urlpatterns: list[URLPattern] = [path("publish/<slug:group>/", publish)]
