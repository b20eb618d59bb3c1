"""The rooms and messages in Django's admin (``/admin/``, staff only), next to trio_djws' live
connections page (``/admin/trio_djws/connections/``)."""

from __future__ import annotations

from django.contrib import admin

from .models import Message, Room


@admin.register(Room)
class RoomAdmin(admin.ModelAdmin):
    list_display = ["name", "slug"]


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ["room", "author", "created", "text"]
    list_filter = ["room"]
