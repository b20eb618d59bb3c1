"""Views of the signals tests: a page that connects a window, and a view that triggers."""

from __future__ import annotations

from django.contrib.auth.models import Group
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, render

from trio_djws.signals import set_websocket_topics, trigger


def page(request: HttpRequest, group: int) -> HttpResponse:
    """A signals page; ``group`` > 0 grants it the topic of that auth ``Group``."""
    if group:
        set_websocket_topics(request, [get_object_or_404(Group, pk=group)])
    return render(request, "tests/signals_page.html")


def notify(request: HttpRequest, group: int) -> JsonResponse:
    """Call ``tests.show`` in the windows granted the ``Group``'s topic."""
    target = get_object_or_404(Group, pk=group)
    trigger(request, "tests.show", to=[target], text=request.GET.get("text", ""))
    return JsonResponse({"sent": True})
