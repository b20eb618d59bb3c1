"""A sync Django view that reaches the WebSocket clients of the standalone server running in
the same process (tests/test_wsgi.py)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, path

from trio_djws import send_to_group
from trio_djws.wsgi import run_in_server


def publish(request: HttpRequest, group: str) -> HttpResponse:
    # In-process hand-over to the server thread's trio run (the in-memory broker lives there).
    run_in_server(send_to_group, group, request.GET["text"])
    return HttpResponse("sent", content_type="text/plain")


urlpatterns: list[URLPattern] = [path("publish/<slug:group>/", publish)]
