"""``manage.py serve``: Hypercorn's trio worker with the fixes in ``trio_djws.servers.hypercorn``
(the process: ``trio_djws.servers.serve``)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from trio_djws.conf import require_app
from trio_djws.exceptions import ConfigurationError
from trio_djws.management.metrics import open_metrics
from trio_djws.servers import serve
from trio_djws.servers.sockets import open_sockets, parse_bind

__all__ = ["Command"]


class Command(BaseCommand):
    help = (
        "Serve ASGI_APPLICATION (default: trio_djws.asgi.get_asgi_application()) with "
        "Hypercorn's trio worker. Prints 'Listening on http://HOST:PORT' per address once "
        "serving. SIGINT/SIGTERM closes every WebSocket with 1001 within "
        "WEBSOCKET_SHUTDOWN_TIMEOUT seconds, then exits."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--bind",
            action="append",
            metavar="HOST:PORT",
            help=f"address to listen on, repeatable; port 0 picks a free port "
            f"(default: {serve.DEFAULT_BIND})",
        )
        parser.add_argument(
            "--workers",
            type=int,
            default=1,
            metavar="N",
            help="worker processes sharing the sockets (default: 1); more than 1 needs a "
            "WEBSOCKET_BROKER with cross_process = True",
        )
        parser.add_argument(
            "--metrics-bind",
            metavar="HOST:PORT",
            help="serve Prometheus metrics on this address (needs trio-djws[metrics]; "
            "every path answers, e.g. http://HOST:PORT/metrics)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        workers: int = options["workers"]
        try:
            require_app()
            addresses = [parse_bind(bind) for bind in options["bind"] or [serve.DEFAULT_BIND]]
            serve.check_workers(workers)
            sockets = open_sockets(addresses)
        except (ValueError, ConfigurationError, OSError) as exc:
            raise CommandError(str(exc)) from exc
        with open_metrics(options["metrics_bind"], workers, self.stdout) as metrics:
            status = serve.run(sockets, workers=workers, stdout=self.stdout, metrics=metrics)
        if status != 0:
            raise CommandError(
                f"a worker failed (its exit is logged above); exit status {status}",
                returncode=status,
            )
