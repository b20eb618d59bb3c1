"""``manage.py runwebsocket``: the standalone WebSocket server
(``trio_djws.servers.standalone``) in the foreground, beside any WSGI deployment."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from trio_djws.conf import ENGINES, get_settings, require_app
from trio_djws.exceptions import ConfigurationError
from trio_djws.management.metrics import open_metrics
from trio_djws.servers import standalone
from trio_djws.servers.sockets import open_sockets, parse_bind

__all__ = ["Command"]


class Command(BaseCommand):
    help = (
        "Serve the @Namespace handlers on a WebSocket-only port (the standalone server; HTTP "
        "stays with your WSGI server). Prints 'Listening on ws://HOST:PORT' per address once "
        "serving. SIGINT/SIGTERM closes every WebSocket with 1001 after flushing its send "
        "queue, within WEBSOCKET_SHUTDOWN_TIMEOUT seconds, then exits 0."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--bind",
            action="append",
            metavar="HOST:PORT",
            help="address to listen on, repeatable; port 0 picks a free port "
            "(default: WEBSOCKET_HOST:WEBSOCKET_PORT, 127.0.0.1:8001)",
        )
        parser.add_argument(
            "--engine",
            choices=ENGINES,
            help="protocol engine (default: WEBSOCKET_ENGINE, 'websockets')",
        )
        parser.add_argument(
            "--metrics-bind",
            metavar="HOST:PORT",
            help="serve Prometheus metrics on this address (needs trio-djws[metrics]; "
            "every path answers, e.g. http://HOST:PORT/metrics)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            require_app()
            settings = get_settings()
            binds: list[str] | None = options["bind"]
            addresses = (
                [parse_bind(bind) for bind in binds] if binds else [(settings.host, settings.port)]
            )
            sockets = open_sockets(addresses)
        except (ValueError, ConfigurationError, OSError) as exc:
            raise CommandError(str(exc)) from exc
        with open_metrics(options["metrics_bind"], 1, self.stdout):
            standalone.run(sockets, engine=options["engine"], stdout=self.stdout)
