"""The Prometheus exposition of the metrics: which registry a scrape reads, the HTTP endpoint
beside the server and the Django view (needs the ``trio-djws[metrics]`` extra).

What is counted is ``trio_djws.metrics``, which re-exports these names (``metrics_view``,
``exposition``, ``serve_metrics``, ``MULTIPROC_ENV``) under its own path.

One process: the exposition is prometheus-client's default registry. Several processes
(``serve --workers N``): each worker writes its values to files in ``PROMETHEUS_MULTIPROC_DIR``
(prometheus-client's multiprocess mode) and the exposition sums them: counters and histograms
over every process that ever ran, gauges over the live ones (the files of a worker that has
exited are marked dead first, so its live gauges drop out).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Final

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
    start_http_server,
)
from prometheus_client import multiprocess as _multiprocess
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from collections.abc import Iterable

    from django.http import HttpRequest, HttpResponse
    from prometheus_client.metrics_core import Metric

__all__ = [
    "MULTIPROC_ENV",
    "exposition",
    "metrics_view",
    "multiprocess",
    "multiprocess_directory",
    "serve_metrics",
]

MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"  # prometheus-client's multiprocess directory


def multiprocess() -> bool:
    """Whether this process writes its values to ``PROMETHEUS_MULTIPROC_DIR`` (set by
    ``multiprocess_directory`` before the workers start, or by the deployment)."""
    return bool(os.environ.get(MULTIPROC_ENV))


@contextmanager
def multiprocess_directory(processes: int) -> Iterator[None]:
    """With ``processes`` > 1, enter prometheus-client's multiprocess mode for the block:
    ``PROMETHEUS_MULTIPROC_DIR`` is set to a fresh temporary directory (removed on exit)
    unless already set, so that the worker processes spawned inside write their values there.
    Enter it before the first metric is made (``trio_djws.metrics.enable``)."""
    made: str | None = None
    if processes > 1 and not multiprocess():
        made = tempfile.mkdtemp(prefix="trio_djws-metrics-")
        os.environ[MULTIPROC_ENV] = made
    try:
        yield
    finally:
        if made is not None:
            del os.environ[MULTIPROC_ENV]
            shutil.rmtree(made, ignore_errors=True)


class _LiveMultiProcessCollector(Collector):
    # prometheus-client's MultiProcessCollector, after dropping the live gauges of worker
    # processes that have exited (their counters and histograms are kept).
    def __init__(self, path: str) -> None:
        self.path = path
        # prometheus_client.multiprocess is not annotated.
        self.inner = _multiprocess.MultiProcessCollector(None, path=path)  # type: ignore[no-untyped-call]

    def collect(self) -> Iterable[Metric]:
        for name in os.listdir(self.path):
            if not name.startswith("gauge_live") or not name.endswith(".db"):
                continue
            pid = int(name.rsplit("_", 1)[1][: -len(".db")])
            if not _alive(pid):
                _multiprocess.mark_process_dead(pid, self.path)  # type: ignore[no-untyped-call]
        metrics: Iterable[Metric] = self.inner.collect()  # type: ignore[no-untyped-call]
        return metrics


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _registry() -> CollectorRegistry:
    path = os.environ.get(MULTIPROC_ENV)
    if not path:
        return REGISTRY
    registry = CollectorRegistry()
    registry.register(_LiveMultiProcessCollector(path))
    return registry


def exposition() -> bytes:
    """The metrics in Prometheus' text format: this process's, or with
    ``PROMETHEUS_MULTIPROC_DIR`` set every process's writing there, summed."""
    return generate_latest(_registry())


def metrics_view(request: HttpRequest) -> HttpResponse:
    """A Django view serving ``exposition()`` (``text/plain; version=0.0.4``).

    Anyone who can reach it can read it: route it where only the scraper gets, or wrap it
    (e.g. ``staff_member_required``)."""
    from django.http import HttpResponse

    return HttpResponse(exposition(), content_type=CONTENT_TYPE_LATEST)


def serve_metrics(host: str, port: int) -> tuple[str, Callable[[], None]]:
    """Serve ``exposition()`` over HTTP on ``host:port`` (port 0: a free one) from
    prometheus-client's exporter thread, beside the server.

    Returns:
        The URL served (``http://HOST:PORT/metrics``; every path answers) and a function
        that stops serving.

    Raises:
        OSError: the address cannot be bound.
    """
    httpd, thread = start_http_server(port, host, registry=_registry())
    bound_host, bound_port = httpd.server_address[:2]
    text = bound_host.decode() if isinstance(bound_host, bytes) else str(bound_host)
    display = f"[{text}]" if ":" in text else text

    def stop() -> None:
        httpd.shutdown()
        httpd.server_close()
        thread.join()

    return f"http://{display}:{bound_port}/metrics", stop
