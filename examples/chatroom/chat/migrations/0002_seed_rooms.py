"""Seed the rooms a fresh chatroom starts with."""

from __future__ import annotations

from django.apps.registry import Apps
from django.db import migrations
from django.db.backends.base.schema import BaseDatabaseSchemaEditor

ROOMS = [("lobby", "Lobby"), ("random", "Random"), ("trio", "Trio & Django")]


def create_rooms(apps: Apps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    Room = apps.get_model("chat", "Room")
    for slug, name in ROOMS:
        Room.objects.get_or_create(slug=slug, defaults={"name": name})


def delete_rooms(apps: Apps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    Room = apps.get_model("chat", "Room")
    Room.objects.filter(slug__in=[slug for slug, _ in ROOMS]).delete()


class Migration(migrations.Migration):
    dependencies = [("chat", "0001_initial")]

    operations = [migrations.RunPython(create_rooms, delete_rooms)]
