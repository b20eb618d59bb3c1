"""Rooms and the messages posted in them."""

from __future__ import annotations

from datetime import datetime
from typing import TypedDict

from django.db import models
from django.urls import reverse


class MessagePayload(TypedDict):
    """One message on the wire (``M`` in the protocol); ``created`` becomes ISO 8601."""

    id: int
    author: str
    text: str
    created: datetime


class Room(models.Model):
    """A chat room, addressed by its slug: ``/rooms/<slug>/`` and ``/ws/chat/<slug>/``."""

    slug = models.SlugField(unique=True)
    name = models.CharField(max_length=64)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        """The room's page."""
        return reverse("chat:room", args=[self.slug])


class Message(models.Model):
    """One chat message; ``author`` is the sender's nickname at the time."""

    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="messages")
    author = models.CharField(max_length=32)
    text = models.TextField()
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        # The history query: a room's newest messages by id.
        indexes = [models.Index(fields=["room", "id"], name="chat_message_room_id_idx")]

    def __str__(self) -> str:
        return f"{self.author}: {self.text[:40]}"

    def payload(self) -> MessagePayload:
        """This message as the protocol sends it; reads no related objects (no query)."""
        return {"id": self.pk, "author": self.author, "text": self.text, "created": self.created}
