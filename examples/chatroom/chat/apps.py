"""The ``chat`` app config; ``trio_djws`` imports ``chat.websockets`` at startup."""

from __future__ import annotations

from django.apps import AppConfig


class ChatConfig(AppConfig):
    """Rooms and their messages."""

    name = "chat"
    default_auto_field = "django.db.models.BigAutoField"
