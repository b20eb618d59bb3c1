"""The HTML pages: the room list (with the "create a room" form) and a room.

Plain Django views; ``trio_djws`` runs them through Django's WSGI handler in worker threads.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods, require_safe

from trio_djws.signals import set_websocket_topics

from .forms import RoomForm
from .models import Room


@require_http_methods(["GET", "HEAD", "POST"])
def index(request: HttpRequest) -> HttpResponse:
    """List the rooms; a valid POST creates a room (or finds the one with that slug) and
    redirects to it."""
    form = RoomForm(request.POST if request.method == "POST" else None)
    if form.is_valid():
        room, _ = Room.objects.get_or_create(
            slug=form.cleaned_data["slug"], defaults={"name": form.cleaned_data["name"]}
        )
        return redirect(room)
    return render(request, "chat/index.html", {"rooms": Room.objects.all(), "form": form})


@require_safe
def room(request: HttpRequest, slug: str) -> HttpResponse:
    """A room's page; the messages arrive over the WebSocket, history first. Its signals
    window is granted the room's topic (the "… is typing" indicator, chat/signals.py)."""
    room = get_object_or_404(Room, slug=slug)
    set_websocket_topics(request, [room])
    return render(request, "chat/room.html", {"room": room})
