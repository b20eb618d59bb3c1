"""Internal: ``--metrics-bind`` of the commands (see ``trio_djws.metrics``).

``--metrics-bind HOST:PORT`` of ``manage.py serve`` and ``runwebsocket``."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from django.core.management.base import CommandError, OutputWrapper

from trio_djws.servers.sockets import parse_bind

__all__: list[str] = []


@contextmanager
def open_metrics(bind: str | None, processes: int, stdout: OutputWrapper) -> Iterator[bool]:
    """Serve the metrics on ``bind`` (``None``: not served) while the block runs; yields
    whether they are served. Prints ``Metrics on http://HOST:PORT/metrics``.

    Raises:
        CommandError: a bad address, an address that cannot be bound, or prometheus-client
            not installed.
    """
    if bind is None:
        yield False
        return
    if importlib.util.find_spec("prometheus_client") is None:
        raise CommandError(
            "--metrics-bind needs prometheus-client: pip install 'trio-djws[metrics]'"
        )
    from trio_djws.metrics import open_metrics_endpoint

    with ExitStack() as stack:
        try:
            host, port = parse_bind(bind)
            url = stack.enter_context(open_metrics_endpoint(host, port, processes=processes))
        except (ValueError, OSError) as exc:
            raise CommandError(f"--metrics-bind: {exc}") from exc
        stdout.write(f"Metrics on {url}\n")
        stdout.flush()
        yield True
