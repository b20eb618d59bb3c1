"""Instrumentation hooks: how metrics and tracing observe the core without the core importing them.

The core (``serve_connection``, groups, the brokers, the worker-thread helpers, the WSGI bridge)
reports events to ``instrument.active``: ``None`` unless a feature registered an
``Instrumentation`` (``trio_djws.metrics`` and ``trio_djws.tracing`` do, from
``AppConfig.ready()`` when ``WEBSOCKET_METRICS`` / ``WEBSOCKET_TRACING`` is on). With nothing
registered, each event costs one attribute load and a ``None`` test.

Per connection, ``Instrumentation.open_connection`` returns a ``ConnectionProbe`` (or ``None``)
that may ask for the connection's messages and bytes to be counted (``counts_messages``: the
runtime adds them to the namespace's ``MessageCounts``, plain integers, where it receives and
writes them), may wrap its hooks (to time them or open a span around each call), and hears the
accept and the close.

The registry is filled at start-up, before any trio run, like the namespace registry;
``register`` and ``unregister`` are for ``AppConfig.ready()`` and tests. The message counts
are per process too (like prometheus-client's registry) and only grow: readers (the metrics'
scrape, the admin page's rates) take differences or totals, never reset them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio

__all__ = [
    "ConnectionProbe",
    "Instrumentation",
    "MessageCounts",
    "all_message_counts",
    "message_counts",
    "register",
    "registered",
    "unregister",
]

Hook = TypeVar("Hook", bound=Callable[..., Awaitable[Any]])


def message_size(message: str | bytes) -> int:
    """A message's payload size in bytes (UTF-8 for text; ``str.isascii`` is O(1))."""
    if isinstance(message, bytes) or message.isascii():
        return len(message)
    return len(message.encode("utf-8", "surrogatepass"))


class MessageCounts:
    """The messages and payload bytes (UTF-8 for text) of one namespace, received and sent,
    since the process started: plain integers that only grow, added by the connection runtime
    on the trio thread (a reader in another thread sees each value whole, never torn)."""

    __slots__ = ("received", "received_bytes", "sent", "sent_bytes")

    def __init__(self) -> None:
        self.received = self.received_bytes = self.sent = self.sent_bytes = 0

    # message_size() inlined for the ASCII case: these run once per message.
    def count_received(self, message: str | bytes) -> None:
        """One message received (its payload bytes included)."""
        self.received += 1
        if isinstance(message, bytes) or message.isascii():
            self.received_bytes += len(message)
        else:
            self.received_bytes += message_size(message)

    def count_sent(self, message: str | bytes) -> None:
        """One message written to the client (its payload bytes included)."""
        self.sent += 1
        if isinstance(message, bytes) or message.isascii():
            self.sent_bytes += len(message)
        else:
            self.sent_bytes += message_size(message)


_counts: dict[str, MessageCounts] = {}


def message_counts(namespace: str) -> MessageCounts:
    """The process's ``MessageCounts`` of ``namespace`` (made on first use; trio thread)."""
    counts = _counts.get(namespace)
    if counts is None:
        counts = _counts[namespace] = MessageCounts()
    return counts


def all_message_counts() -> dict[str, MessageCounts]:
    """Every namespace's ``MessageCounts`` so far (a copy of the mapping; any thread)."""
    return _counts.copy()


class ConnectionProbe:
    """One connection's observer; the defaults do nothing. All calls are on the trio thread."""

    counts_messages: bool = False
    """Whether the runtime counts this connection's messages and bytes into
    ``message_counts(namespace)`` (one integer addition each; read them there)."""

    def wrap_hook(self, name: str, hook: Hook) -> Hook:
        """Return ``hook`` (``on_connect``, ``on_message`` or ``on_close``, already bound) or
        a wrapper that times it or opens a span around it; the wrapper must re-raise."""
        return hook

    def begin(self, connection_id: str) -> None:
        """The connection's ``WebSocket`` exists (``connection_id`` is its ``id``); called on
        the connection's task before any hook, so context set here is the hooks' context."""

    def accepted(self) -> None:
        """The handshake completed (HTTP 101)."""

    def closed(self, accepted: bool, code: int | None, reason: str) -> None:
        """The connection ended; ``code`` is its close code (None if never accepted)."""


class Instrumentation:
    """An observer of the server's events; the defaults do nothing.

    Methods marked *any thread* may be called from worker threads and must be thread-safe.
    """

    def open_connection(self, namespace: str, client: str) -> ConnectionProbe | None:
        """A handshake from ``client`` (``"host:port"``) was routed to the handler registered
        at ``namespace`` (the pattern, e.g. ``"/chat/<slug:room>/"``: a bounded label)."""
        return None

    def handshake_rejected(self, status: int) -> None:
        """A handshake was refused with HTTP ``status``."""

    def group_delivered(self, members: int, delivered: int) -> None:
        """One message was fanned out to ``members`` local members, ``delivered`` queued."""

    def broker_event(self, event: str, count: int = 1) -> None:
        """A broker event: ``"publish"``, ``"receive"``, ``"lost"`` or ``"reconnect"``."""

    def broker_lag(self, seconds: float) -> None:
        """A pub/sub message arrived ``seconds`` after it was published (Redis broker)."""

    def thread_wait(self, limiter: str, seconds: float) -> None:
        """A call waited ``seconds`` for a worker thread of ``limiter`` (``"db"``). Any thread."""

    def http_request(self, status: int) -> None:
        """The WSGI bridge answered one HTTP request with ``status``. Any thread."""

    async def serve(self, server: object, *, task_status: trio.TaskStatus[None]) -> None:
        """Run in the server nursery for the server's lifetime (e.g. sample gauges of
        ``server``, a ``trio_djws.state.ServerState``); cancelled at shutdown."""
        task_status.started()


class _Chain(Instrumentation):
    # Several registered instrumentations, called in registration order.
    def __init__(self, parts: tuple[Instrumentation, ...]) -> None:
        self.parts = parts

    def open_connection(self, namespace: str, client: str) -> ConnectionProbe | None:
        probes = [
            probe
            for part in self.parts
            if (probe := part.open_connection(namespace, client)) is not None
        ]
        if not probes:
            return None
        return probes[0] if len(probes) == 1 else _ChainProbe(tuple(probes))

    def handshake_rejected(self, status: int) -> None:
        for part in self.parts:
            part.handshake_rejected(status)

    def group_delivered(self, members: int, delivered: int) -> None:
        for part in self.parts:
            part.group_delivered(members, delivered)

    def broker_event(self, event: str, count: int = 1) -> None:
        for part in self.parts:
            part.broker_event(event, count)

    def broker_lag(self, seconds: float) -> None:
        for part in self.parts:
            part.broker_lag(seconds)

    def thread_wait(self, limiter: str, seconds: float) -> None:
        for part in self.parts:
            part.thread_wait(limiter, seconds)

    def http_request(self, status: int) -> None:
        for part in self.parts:
            part.http_request(status)

    async def serve(self, server: object, *, task_status: trio.TaskStatus[None]) -> None:
        async with trio.open_nursery() as nursery:
            for part in self.parts:
                await nursery.start(part.serve, server)
            task_status.started()


class _ChainProbe(ConnectionProbe):
    def __init__(self, probes: tuple[ConnectionProbe, ...]) -> None:
        self.probes = probes
        self.counts_messages = any(probe.counts_messages for probe in probes)

    def wrap_hook(self, name: str, hook: Hook) -> Hook:
        # The first registered probe's wrapper is the outermost.
        for probe in reversed(self.probes):
            hook = probe.wrap_hook(name, hook)
        return hook

    def begin(self, connection_id: str) -> None:
        for probe in self.probes:
            probe.begin(connection_id)

    def accepted(self) -> None:
        for probe in self.probes:
            probe.accepted()

    def closed(self, accepted: bool, code: int | None, reason: str) -> None:
        for probe in self.probes:
            probe.closed(accepted, code, reason)


_registered: list[Instrumentation] = []
active: Instrumentation | None = None
"""What the core reports to: None (nothing registered), the one registered, or a chain."""


def _update() -> None:
    global active
    if not _registered:
        active = None
    elif len(_registered) == 1:
        active = _registered[0]
    else:
        active = _Chain(tuple(_registered))


def register(instrumentation: Instrumentation) -> None:
    """Add an instrumentation (no effect if it is already registered). Call it before the
    server starts (``AppConfig.ready()``): connections already open keep their probes."""
    if instrumentation not in _registered:
        _registered.append(instrumentation)
        _update()


def unregister(instrumentation: Instrumentation) -> None:
    """Remove an instrumentation; no error if it was not registered."""
    if instrumentation in _registered:
        _registered.remove(instrumentation)
        _update()


def registered() -> tuple[Instrumentation, ...]:
    """The registered instrumentations, in order."""
    return tuple(_registered)
