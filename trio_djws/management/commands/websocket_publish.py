"""``manage.py websocket_publish <group> <text>``: send a text frame to a group's members."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from trio_djws.conf import require_app
from trio_djws.exceptions import BrokerError, ConfigurationError
from trio_djws.publish import publish

__all__ = ["Command"]


class Command(BaseCommand):
    help = (
        "Send TEXT as one text frame to every member of GROUP, on every server process "
        "(needs a cross-process WEBSOCKET_BROKER such as trio_djws.brokers.RedisBroker)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("group", help="the group name")
        parser.add_argument("text", help="the message, sent as a text frame")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            require_app()
            publish(options["group"], options["text"])
        except (ConfigurationError, BrokerError) as exc:
            raise CommandError(str(exc)) from exc
