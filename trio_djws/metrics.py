"""Prometheus metrics (the ``trio-djws[metrics]`` extra: ``prometheus-client``).

``enable()`` registers ``PrometheusInstrumentation`` with ``trio_djws.instrument``;
``AppConfig.ready()`` calls it when ``WEBSOCKET_METRICS`` is True, and ``manage.py serve`` /
``runwebsocket --metrics-bind HOST:PORT`` call it and serve the exposition on that address
(``open_metrics_endpoint``). How a scrape reads them (one process or several, the HTTP
endpoint, ``metrics_view``) is ``trio_djws.exposition``, re-exported here.

Every transport is counted alike: the metrics come from ``serve_connection``, the connection
runtime, groups, the brokers, the worker-thread helpers and the WSGI bridge, never from one
server's protocol code. Labels are bounded: ``namespace`` is the handler's registered pattern
(``/chat/<slug:room>/``, never the path; the class name of a handler routed without
``@Namespace``, e.g. a dwebsocket-style view), ``code`` a close code (application codes folded
into ``"3xxx"``/``"4xxx"``), ``status`` an HTTP status, ``hook`` one of ``on_connect``,
``on_message``, ``on_close``. No connection id or group name is ever a label.

Per message, a prometheus-client update (a lock, and in multiprocess mode a write to a
memory-mapped file) would cost more than the rest of the metrics together: messages and
bytes are plain integers the runtime adds up (``trio_djws.instrument.MessageCounts``), hook
durations plain integers per histogram bucket. In one process a collector reads them at each
scrape, so every total is exact. With several processes each worker adds what is new to its
files every ``SAMPLE_INTERVAL`` seconds and whenever a connection closes: a scrape is exact
for closed connections and at most ``SAMPLE_INTERVAL`` behind for open ones.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Final, TypeVar

import trio
from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from wsproto.frame_protocol import CloseReason

from . import instrument
from .exposition import (
    MULTIPROC_ENV,
    exposition,
    metrics_view,
    multiprocess,
    multiprocess_directory,
    serve_metrics,
)
from .instrument import ConnectionProbe, Instrumentation

if TYPE_CHECKING:
    from collections.abc import Iterable

    from prometheus_client.metrics_core import Metric

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

SAMPLE_INTERVAL: Final = 1.0  # seconds between samples of the gauges below marked "sampled"
# Hook durations: 100 µs to 10 s (on_message is usually well under a millisecond).
HOOK_BUCKETS: Final = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05)
HOOK_BUCKETS_SLOW: Final = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
FANOUT_BUCKETS: Final = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 10000)
BUCKETS: Final = HOOK_BUCKETS + HOOK_BUCKETS_SLOW  # hook durations' upper bounds (+Inf added)
HOOKS: Final = ("on_connect", "on_message", "on_close")
_KNOWN_CODES: Final = frozenset(int(code) for code in CloseReason)
_MESSAGES: Final = (  # (name, help, MessageCounts attribute): the per-message counters
    ("trio_djws_messages_received", "WebSocket messages received", "received"),
    ("trio_djws_received_bytes", "WebSocket message payload bytes received", "received_bytes"),
    ("trio_djws_messages_sent", "WebSocket messages sent", "sent"),
    ("trio_djws_sent_bytes", "WebSocket message payload bytes sent", "sent_bytes"),
)
_HOOK_METRIC: Final = "trio_djws_hook_duration_seconds"
_HOOK_HELP: Final = "Time spent in a handler hook (mixins included)"
# The buckets' "le" labels as prometheus-client writes them (Histogram.observe's exposition).
_LE: Final = tuple(floatToGoString(b) for b in (*BUCKETS, float("inf")))  # type: ignore[no-untyped-call]  # prometheus_client.utils is not annotated

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


class _HookStats:
    # One hook's durations in one namespace: their sum and a count per bucket (the last is
    # +Inf), in the order of the histogram's buckets. Only grows in one process; emptied by
    # each flush with several.
    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.sum = 0.0
        self.counts = [0] * (len(BUCKETS) + 1)


class _PerMessage:
    # The per-message metrics, flushed to prometheus-client's files (several processes).
    def __init__(self) -> None:
        ns = ("namespace",)
        self.counters = [Counter(name, text, ns) for name, text, _ in _MESSAGES]
        self.hook = Histogram(_HOOK_METRIC, _HOOK_HELP, ("hook", "namespace"), buckets=BUCKETS)
        _check_histogram_internals(self.hook)


class _LiveCollector(Collector):
    # The per-message metrics read at each scrape (one process): exact, nothing to flush.
    def __init__(self, hooks: dict[tuple[str, str], _HookStats]) -> None:
        self.hooks = hooks

    def collect(self) -> Iterable[Metric]:
        # Runs in the exporter's (or a view's) thread: each int is read whole under the GIL,
        # and a histogram's count is the sum of its bucket counts as read.
        counts = instrument.all_message_counts()
        for name, text, attribute in _MESSAGES:
            family = CounterMetricFamily(name, text, labels=("namespace",))
            for namespace, values in counts.items():
                family.add_metric((namespace,), getattr(values, attribute))
            yield family
        histogram = HistogramMetricFamily(_HOOK_METRIC, _HOOK_HELP, labels=("hook", "namespace"))
        for (hook, namespace), stats in self.hooks.copy().items():
            observed = stats.counts.copy()
            cumulative, buckets = 0, []
            for bound, count in zip(_LE, observed, strict=True):
                cumulative += count
                buckets.append((bound, float(cumulative)))
            histogram.add_metric((hook, namespace), buckets, stats.sum)
        yield histogram


class _Metrics:
    # The metric objects, made once per process (prometheus-client registers them globally).
    def __init__(self, hooks: dict[tuple[str, str], _HookStats]) -> None:
        ns = ("namespace",)
        # One process: read at scrape time; several: prometheus-client's files, flushed.
        self.per_message: _PerMessage | None = None
        if multiprocess():
            self.per_message = _PerMessage()
        else:
            REGISTRY.register(_LiveCollector(hooks))
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
            buckets=BUCKETS,
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
            buckets=BUCKETS,
        )
        self.http = Counter(
            "trio_djws_http_requests",
            "HTTP requests answered by Django through the WSGI bridge, by status",
            ("status",),
        )
        for event in ("publish", "receive", "lost", "overflow", "reconnect"):
            self.broker.labels(event)  # present at 0 from the start


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


class _Probe(ConnectionProbe):
    __slots__ = ("instrumentation", "namespace")

    counts_messages = True  # into instrument.message_counts(namespace), read by the metrics

    def __init__(self, instrumentation: PrometheusInstrumentation, namespace: str) -> None:
        self.instrumentation = instrumentation
        self.namespace = namespace

    def wrap_hook(self, name: str, hook: Hook) -> Hook:
        durations = self.instrumentation.hook_stats(name, self.namespace)
        clock = time.perf_counter

        async def timed(*args: Any) -> Any:
            start = clock()
            try:
                return await hook(*args)
            finally:
                elapsed = clock() - start
                durations.sum += elapsed
                durations.counts[bisect_left(BUCKETS, elapsed)] += 1  # le: first bound >= it

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


class PrometheusInstrumentation(Instrumentation):
    """Counts the server's events into the ``trio_djws_*`` metrics (see the module docs)."""

    def __init__(self) -> None:
        global _metrics
        if _metrics is None:  # prometheus-client's metrics are per process: made once
            _metrics = _Metrics(_hooks)
        self.metrics = _metrics
        # Several processes: what flush() has added to the files so far, per namespace.
        self._flushed: dict[str, tuple[int, int, int, int]] = {}

    def hook_stats(self, hook: str, namespace: str) -> _HookStats:
        """The duration counts of ``hook`` in ``namespace`` (made on first use)."""
        stats = _hooks.get((hook, namespace))
        if stats is None:
            stats = _hooks[hook, namespace] = _HookStats()
        return stats

    def flush(self) -> None:
        """Several processes: add the per-message counts and hook durations gathered since
        the last flush to prometheus-client's files (on the trio thread: the counts are not
        locked). One process: nothing to do, a scrape reads them."""
        per_message = self.metrics.per_message
        if per_message is None:
            return
        for namespace, counts in instrument.all_message_counts().items():
            now = (counts.received, counts.received_bytes, counts.sent, counts.sent_bytes)
            before = self._flushed.get(namespace, (0, 0, 0, 0))
            if now != before:
                for counter, new, old in zip(per_message.counters, now, before, strict=True):
                    if new > old:
                        counter.labels(namespace).inc(new - old)
                self._flushed[namespace] = now
        for (hook, namespace), durations in _hooks.items():
            if any(durations.counts):
                child = per_message.hook.labels(hook, namespace)
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
        """Sample the server's gauges (and flush, with several processes) every
        ``SAMPLE_INTERVAL`` seconds until cancelled."""
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


# Per process, like prometheus-client's registry: the metric objects and the hook durations.
_metrics: _Metrics | None = None
_hooks: dict[tuple[str, str], _HookStats] = {}
_instrumentation: PrometheusInstrumentation | None = None


def enable() -> PrometheusInstrumentation:
    """Register the Prometheus instrumentation (once per process; later calls return it)."""
    global _instrumentation
    if _instrumentation is None:
        _instrumentation = PrometheusInstrumentation()
    instrument.register(_instrumentation)
    return _instrumentation


@contextmanager
def open_metrics_endpoint(host: str, port: int, *, processes: int = 1) -> Iterator[str]:
    """Enable the metrics and serve them on ``host:port`` for the duration of the block:
    ``manage.py serve`` / ``runwebsocket --metrics-bind``. Yields the URL served.

    With ``processes`` > 1 (``serve --workers N``), enters prometheus-client's multiprocess
    mode first (``trio_djws.exposition.multiprocess_directory``: ``PROMETHEUS_MULTIPROC_DIR``
    is set to a fresh temporary directory, removed on exit, unless already set), so that the
    worker processes spawned inside the block write their values there and the endpoint sums
    them. Call it before spawning them.

    Raises:
        OSError: the address cannot be bound.
    """
    with multiprocess_directory(processes):
        enable()
        url, stop = serve_metrics(host, port)
        try:
            yield url
        finally:
            stop()
