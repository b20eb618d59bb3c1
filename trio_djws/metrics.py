"""Prometheus metrics (the ``trio-djws[metrics]`` extra: ``prometheus-client``).

``enable()`` registers ``PrometheusInstrumentation`` with ``trio_djws.instrument``;
``AppConfig.ready()`` calls it when ``WEBSOCKET_METRICS`` is True, and ``manage.py serve`` /
``runwebsocket --metrics-bind HOST:PORT`` call it and serve the exposition on that address
(``serve_metrics``). ``metrics_view`` is the same exposition as a Django view.

Every transport is counted alike: the metrics come from ``serve_connection``, groups, the
brokers, the worker-thread helpers and the WSGI bridge, never from one server's protocol code.
Labels are bounded: ``namespace`` is the handler's registered pattern (``/chat/<slug:room>/``,
never the path), ``code`` a close code (application codes folded into ``"3xxx"``/``"4xxx"``),
``status`` an HTTP status, ``hook`` one of ``on_connect``, ``on_message``, ``on_close``.
No connection id or group name is ever a label.

Several processes (``serve --workers N``): each worker writes its values to files in
``PROMETHEUS_MULTIPROC_DIR`` (prometheus-client's multiprocess mode; ``serve`` makes a
temporary one when it is not set) and the exposition sums them: counters and histograms
over every process that ever ran, gauges over the live ones.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Final, TypeVar

import trio
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)
from prometheus_client import multiprocess as _multiprocess
from prometheus_client.registry import Collector
from wsproto.frame_protocol import CloseReason

from . import instrument
from .instrument import ConnectionProbe, Instrumentation, counting_transport, message_size

if TYPE_CHECKING:
    from collections.abc import Iterable

    from django.http import HttpRequest, HttpResponse
    from prometheus_client.metrics_core import Metric

    from .typing import Message, Transport

__all__ = [
    "MULTIPROC_ENV",
    "SAMPLE_INTERVAL",
    "PrometheusInstrumentation",
    "close_code_label",
    "enable",
    "exposition",
    "metrics_view",
    "open_metrics_endpoint",
    "serve_metrics",
]

logger = logging.getLogger(__name__)

MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"  # prometheus-client's multiprocess directory
SAMPLE_INTERVAL: Final = 1.0  # seconds between samples of the gauges below marked "sampled"
# Hook durations: 100 µs to 10 s (on_message is usually well under a millisecond).
HOOK_BUCKETS: Final = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05)
HOOK_BUCKETS_SLOW: Final = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
FANOUT_BUCKETS: Final = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 10000)
BUCKETS: Final = HOOK_BUCKETS + HOOK_BUCKETS_SLOW  # hook durations' upper bounds (+Inf added)
HOOKS: Final = ("on_connect", "on_message", "on_close")
_KNOWN_CODES: Final = frozenset(int(code) for code in CloseReason)

Hook = TypeVar("Hook", bound=Callable[..., Awaitable[Any]])


def close_code_label(code: int | None) -> str:
    """The ``code`` label of a close code: the RFC 6455 §7.4.1 codes as they are,
    application codes as ``"3xxx"``/``"4xxx"`` (a client picks them: unbounded), else
    ``"other"``; ``"none"`` for no code."""
    if code is None:
        return "none"
    if code in _KNOWN_CODES:
        return str(code)
    if 3000 <= code <= 4999:
        return f"{code // 1000}xxx"
    return "other"


class _Metrics:
    # The metric objects, made once per process (prometheus-client registers them globally).
    def __init__(self) -> None:
        ns = ("namespace",)
        self.open = Gauge(
            "trio_djws_connections_open",
            "Accepted WebSocket connections open now",
            ns,
            multiprocess_mode="livesum",
        )
        self.opened = Counter(
            "trio_djws_connections_opened", "WebSocket connections accepted (HTTP 101)", ns
        )
        self.closed = Counter(
            "trio_djws_connections_closed",
            "Accepted WebSocket connections ended, by close code",
            ("namespace", "code"),
        )
        self.rejected = Counter(
            "trio_djws_handshakes_rejected",
            "WebSocket handshakes refused, by HTTP status",
            ("status",),
        )
        self.received = Counter("trio_djws_messages_received", "WebSocket messages received", ns)
        self.received_bytes = Counter(
            "trio_djws_received_bytes", "WebSocket message payload bytes received", ns
        )
        self.sent = Counter("trio_djws_messages_sent", "WebSocket messages sent", ns)
        self.sent_bytes = Counter(
            "trio_djws_sent_bytes", "WebSocket message payload bytes sent", ns
        )
        self.hook = Histogram(
            "trio_djws_hook_duration_seconds",
            "Time spent in a handler hook (mixins included)",
            ("hook", "namespace"),
            buckets=BUCKETS,
        )
        self.slow = Counter(
            "trio_djws_slow_consumer_closes",
            "Connections closed with 1008 'slow consumer' (send queue full)",
            ns,
        )
        self.queue = Gauge(
            "trio_djws_send_queue_messages",
            "Messages waiting in send queues, all connections (sampled)",
            multiprocess_mode="livesum",
        )
        self.queue_max = Gauge(
            "trio_djws_send_queue_max_messages",
            "Fullest send queue of one connection (sampled)",
            multiprocess_mode="livemax",
        )
        self.fanout = Histogram(
            "trio_djws_group_fanout_members",
            "Local members a group message was fanned out to",
            buckets=FANOUT_BUCKETS,
        )
        self.deliveries = Counter(
            "trio_djws_group_deliveries", "Group messages queued for a local member"
        )
        self.broker = Counter(
            "trio_djws_broker_events",
            "Broker events: publish, receive, lost (not published), overflow (a member's "
            "send queue full), reconnect (a Redis reconnection attempt)",
            ("event",),
        )
        self.lag = Histogram(
            "trio_djws_broker_lag_seconds",
            "Time from publish to receipt of a pub/sub message (Redis broker)",
            buckets=HOOK_BUCKETS + HOOK_BUCKETS_SLOW,
        )
        self.presence = Gauge(
            "trio_djws_presence_entries",
            "Present (group, member) entries on this server (sampled)",
            multiprocess_mode="livesum",
        )
        self.groups = Gauge(
            "trio_djws_groups",
            "Groups with at least one local member (sampled)",
            multiprocess_mode="livesum",
        )
        self.threads = Gauge(
            "trio_djws_db_threads_in_use",
            "Worker threads of the DB limiter in use (WEBSOCKET_DB_THREADS; sampled)",
            multiprocess_mode="livesum",
        )
        self.thread_wait = Histogram(
            "trio_djws_thread_wait_seconds",
            "Time a sync call waited for a worker thread, by limiter",
            ("limiter",),
            buckets=HOOK_BUCKETS + HOOK_BUCKETS_SLOW,
        )
        self.http = Counter(
            "trio_djws_http_requests",
            "HTTP requests answered by Django through the WSGI bridge, by status",
            ("status",),
        )
        for event in ("publish", "receive", "lost", "overflow", "reconnect"):
            self.broker.labels(event)  # present at 0 from the start
        _check_histogram_internals(self.hook)


_metrics: _Metrics | None = None


def _get() -> _Metrics:
    global _metrics
    if _metrics is None:
        _metrics = _Metrics()
    return _metrics


class _HookStats:
    # One hook's durations since the last flush: their sum and a count per bucket (the last
    # is +Inf), in the order of the histogram's buckets.
    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.sum = 0.0
        self.counts = [0] * (len(BUCKETS) + 1)


class _Stats:
    # One namespace's per-message counts since the last flush, as plain ints: the per-message
    # path costs a few additions, and the metrics get them in one call each per flush.
    __slots__ = ("hooks", "received", "received_bytes", "sent", "sent_bytes")

    def __init__(self) -> None:
        self.received = self.received_bytes = self.sent = self.sent_bytes = 0
        self.hooks = {name: _HookStats() for name in HOOKS}

    def count_received(self, message: Message) -> None:
        self.received += 1
        self.received_bytes += message_size(message)

    def count_sent(self, message: Message) -> None:
        self.sent += 1
        self.sent_bytes += message_size(message)


class _Probe(ConnectionProbe):
    __slots__ = ("instrumentation", "namespace", "stats")

    def __init__(self, instrumentation: PrometheusInstrumentation, namespace: str) -> None:
        self.instrumentation = instrumentation
        self.namespace = namespace
        self.stats = instrumentation.stats_of(namespace)

    def wrap_transport(self, transport: Transport) -> Transport:
        return counting_transport(transport, self.stats.count_received, self.stats.count_sent)

    def wrap_hook(self, name: str, hook: Hook) -> Hook:
        durations = self.stats.hooks[name]
        counts = durations.counts
        clock = time.perf_counter

        async def timed(*args: Any) -> Any:
            start = clock()
            try:
                return await hook(*args)
            finally:
                elapsed = clock() - start
                durations.sum += elapsed
                counts[bisect_left(BUCKETS, elapsed)] += 1  # le: the first bound >= elapsed

        return timed  # type: ignore[return-value]  # same signature as hook

    def accepted(self) -> None:
        metrics = self.instrumentation.metrics
        metrics.opened.labels(self.namespace).inc()
        metrics.open.labels(self.namespace).inc()

    def closed(self, accepted: bool, code: int | None, reason: str) -> None:
        if not accepted:
            return
        metrics = self.instrumentation.metrics
        metrics.open.labels(self.namespace).dec()
        metrics.closed.labels(self.namespace, close_code_label(code)).inc()
        if code == CloseReason.POLICY_VIOLATION and reason == "slow consumer":
            metrics.slow.labels(self.namespace).inc()
        self.instrumentation.flush()  # a closed connection's counts are exact at once


def _add_observations(child: Any, total: float, counts: list[int]) -> None:
    # Histogram.observe() called len(counts) times in one go: prometheus-client keeps a
    # histogram child's sum in ``_sum`` and one non-cumulative value per bucket in
    # ``_buckets`` (checked by _check_histogram_internals and a test; version pinned).
    child._sum.inc(total)  # noqa: SLF001  (prometheus-client internals: see above)
    for index, count in enumerate(counts):
        if count:
            child._buckets[index].inc(count)  # noqa: SLF001  (as above)


def _check_histogram_internals(histogram: Histogram) -> None:
    child = histogram.labels("on_message", "-")  # the labels: hook, namespace
    buckets = getattr(child, "_buckets", None)
    if (
        not hasattr(child, "_sum")
        or not isinstance(buckets, list)
        or len(buckets) != len(BUCKETS) + 1
    ):
        raise RuntimeError(
            "trio_djws.metrics adds hook durations through prometheus-client's Histogram "
            "internals (_sum, _buckets), which this prometheus-client version does not have; "
            "install prometheus-client>=0.20,<1"
        )
    histogram.remove("on_message", "-")


class PrometheusInstrumentation(Instrumentation):
    """Counts the server's events into the ``trio_djws_*`` metrics (see the module docs).

    Messages, bytes and hook durations are counted per namespace in plain integers on the
    trio thread and added to the metrics by ``flush()``: every ``SAMPLE_INTERVAL`` seconds
    and whenever a connection closes, so a scrape may miss the last second of an open
    connection's messages, never a closed one's.
    """

    def __init__(self) -> None:
        self.metrics = _get()
        self._stats: dict[str, _Stats] = {}

    def stats_of(self, namespace: str) -> _Stats:
        """The per-message counts of ``namespace`` awaiting ``flush()``."""
        stats = self._stats.get(namespace)
        if stats is None:
            stats = self._stats[namespace] = _Stats()
        return stats

    def flush(self) -> None:
        """Add the per-message counts gathered since the last flush to the metrics (on the
        trio thread: the counts are not locked)."""
        metrics = self.metrics
        for namespace, stats in self._stats.items():
            if stats.received:
                metrics.received.labels(namespace).inc(stats.received)
                metrics.received_bytes.labels(namespace).inc(stats.received_bytes)
                stats.received = stats.received_bytes = 0
            if stats.sent:
                metrics.sent.labels(namespace).inc(stats.sent)
                metrics.sent_bytes.labels(namespace).inc(stats.sent_bytes)
                stats.sent = stats.sent_bytes = 0
            for name, durations in stats.hooks.items():
                if any(durations.counts):
                    child = metrics.hook.labels(name, namespace)
                    _add_observations(child, durations.sum, durations.counts)
                    durations.sum = 0.0
                    durations.counts[:] = [0] * len(durations.counts)

    def open_connection(self, namespace: str, client: str) -> ConnectionProbe | None:
        return _Probe(self, namespace)

    def handshake_rejected(self, status: int) -> None:
        self.metrics.rejected.labels(str(status)).inc()

    def group_delivered(self, members: int, delivered: int) -> None:
        self.metrics.fanout.observe(members)
        self.metrics.deliveries.inc(delivered)

    def broker_event(self, event: str, count: int = 1) -> None:
        self.metrics.broker.labels(event).inc(count)

    def broker_lag(self, seconds: float) -> None:
        self.metrics.lag.observe(seconds)

    def thread_wait(self, limiter: str, seconds: float) -> None:
        self.metrics.thread_wait.labels(limiter).observe(seconds)

    def http_request(self, status: int) -> None:
        self.metrics.http.labels(str(status)).inc()

    async def serve(self, server: object, *, task_status: trio.TaskStatus[None]) -> None:
        """Sample the server's gauges every ``SAMPLE_INTERVAL`` seconds until cancelled."""
        from .state import ServerState
        from .threads import db_limiter

        assert isinstance(server, ServerState)
        metrics = self.metrics
        task_status.started()
        while True:
            self.flush()
            total, fullest = server.queued_messages()
            metrics.queue.set(total)
            metrics.queue_max.set(fullest)
            groups = server.groups
            metrics.groups.set(len(groups.names()))
            metrics.presence.set(
                sum(sum(groups.presence(group).values()) for group in groups.presence_groups())
            )
            metrics.threads.set(db_limiter().borrowed_tokens)
            await trio.sleep(SAMPLE_INTERVAL)


_instrumentation: PrometheusInstrumentation | None = None


def enable() -> PrometheusInstrumentation:
    """Register the Prometheus instrumentation (once per process; later calls return it)."""
    global _instrumentation
    if _instrumentation is None:
        _instrumentation = PrometheusInstrumentation()
    instrument.register(_instrumentation)
    return _instrumentation


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


@contextmanager
def open_metrics_endpoint(host: str, port: int, *, processes: int = 1) -> Iterator[str]:
    """Enable the metrics and serve them on ``host:port`` for the duration of the block:
    ``manage.py serve`` / ``runwebsocket --metrics-bind``. Yields the URL served.

    With ``processes`` > 1 (``serve --workers N``), enters prometheus-client's multiprocess
    mode first: ``PROMETHEUS_MULTIPROC_DIR`` is set to a fresh temporary directory (removed
    on exit) unless already set, so that the worker processes spawned inside the block
    write their values there and the endpoint sums them. Call it before spawning them.

    Raises:
        OSError: the address cannot be bound.
    """
    made: str | None = None
    if processes > 1 and not os.environ.get(MULTIPROC_ENV):
        made = tempfile.mkdtemp(prefix="trio_djws-metrics-")
        os.environ[MULTIPROC_ENV] = made
    try:
        enable()
        url, stop = serve_metrics(host, port)
        try:
            yield url
        finally:
            stop()
    finally:
        if made is not None:
            del os.environ[MULTIPROC_ENV]
            shutil.rmtree(made, ignore_errors=True)


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
