"""One small HTTP view, for the ``http`` workload (HTTP requests/s through the server)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, path


def hello(request: HttpRequest) -> HttpResponse:
    """A small plain-text response: the server's HTTP path, not the view, is measured."""
    return HttpResponse(b"hello, world\n", content_type="text/plain")


urlpatterns: list[URLPattern] = [path("hello/", hello)]
