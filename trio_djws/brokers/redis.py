"""``RedisBroker``: groups across processes and machines through Redis pub/sub (coredis).

One broker per server process, with three tasks in the server nursery:

- the **subscriber**: one pub/sub connection, subscribed to a group's Redis channel
  (``<prefix>:group:<name>``) only while this process has members in it; it drains coredis'
  unbounded buffer as messages arrive and queues each for the local members at once (their
  send queues are the bounded queues; a full one closes that member with 1008 and counts in
  ``overflows``). A process with no member in a group never receives that group's messages.
- the **publisher**: takes envelopes from a bounded queue (``PUBLISH_QUEUE_SIZE``) in order
  and publishes them, so messages from one publisher to one group keep their order;
- the **presence** task: heartbeats (every ``WEBSOCKET_PRESENCE_TTL / 3`` seconds) and
  announces presence changes.

Delivery is at most once. A message published on this process reaches its local members
directly and the others through Redis; this process skips its own copy coming back (the
envelope's origin). While Redis is unreachable, local delivery goes on, messages published
here do not reach other processes and messages published elsewhere do not reach this one:
they are lost, counted in ``lost`` and logged. A Redis that stops answering without closing
its sockets counts as unreachable once a command waits ``COMMAND_TIMEOUT`` (5 s). The
subscriber reconnects with backoff (0.1 s doubling to 16 s), resubscribes every group that
has members, and on each fresh subscribe acknowledgement calls ``on_resync(websocket,
group)`` of the group's local members so that they can reload what they missed
(channels_redis loses such messages silently: its issue 256). Nothing here closes a
connection or stops the server because Redis is away.

**Groups with history** (``WEBSOCKET_GROUP_HISTORY``) work differently: ``publish`` runs the
append script of ``trio_djws.brokers.streams`` (the message is kept in the group's stream at
the next offset and published with its position, version-2 envelope), and every process,
the publishing one included, delivers it from its subscription, so every member gets the
group's messages in offset order. The subscriber remembers the last offset it delivered per
group: an offset that jumps (this process missed messages, e.g. while Redis was away) is
filled from the stream with one read per group and process, then fanned out; only when the
stream no longer holds them (or the epoch changed: the history was lost) do the group's
members get ``on_resync``. A publish to a history group while Redis is unreachable is
retried for ``WEBSOCKET_HISTORY_PUBLISH_TIMEOUT`` seconds, then raises ``BrokerError``:
never dropped silently.

Connecting never sits on the ASGI lifespan startup path: ``serve`` reports started at once
(coredis' ``pubsub()`` would wait without limit while Redis is down, and Hypercorn kills a
server whose startup takes over 60 s).

Why one module of more than 450 lines: the subscriber, the publisher and the presence task
share one coredis client, its reconnect backoff and the counters above; the group history
moving in (``trio_djws.brokers.streams``) is the point to split the presence task out.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Final

import coredis
import coredis.exceptions
import trio
from coredis.patterns.pubsub import PubSub
from coredis.retry import NoRetryPolicy

from .. import instrument
from ..conf import get_settings
from ..exceptions import BrokerError, ConfigurationError
from ..history import HistoryPolicy, JoinResult, Position, history_policy, json_with_position
from ..typing import Message
from .envelope import (
    KIND_BYTES,
    KIND_JSON,
    KIND_PRESENCE,
    KIND_TEXT,
    Envelope,
    decode_envelope,
    encode_envelope,
    envelope_head,
    process_origin,
    sync_origin,
)
from .handover import HistoryRead, Pause, join_with_history
from .lag import EchoClock
from .streams import RedisHistory
from .sync_clients import sync_client

if TYPE_CHECKING:
    from .._runtime import Runtime
    from ..groups import Groups

__all__ = ["RedisBroker"]

logger = logging.getLogger(__name__)

DEFAULT_URL: Final = "redis://127.0.0.1:6379/0"
DEFAULT_PREFIX: Final = "trio_djws"
PUBLISH_QUEUE_SIZE: Final = 1024  # envelopes waiting for Redis; then publishers wait
PUBLISH_BATCH: Final = 256  # envelopes per pipeline round trip at most
SUBSCRIBE_TIMEOUT: Final = 10.0  # seconds for Redis to acknowledge a SUBSCRIBE
PRESENCE_CLEANUP_TIMEOUT: Final = 2.0  # seconds at shutdown to remove this process's presence
CONNECT_TIMEOUT: Final = 5.0  # seconds per connection attempt
# Seconds for Redis to answer a command. Without it a Redis that stops answering but keeps its
# sockets open (a network partition, a stopped process) blocks the publisher for good, and
# with it every send_to_group once the publish queue is full.
COMMAND_TIMEOUT: Final = 5.0
BACKOFF_FIRST: Final = 0.1  # seconds before the first reconnection attempt
BACKOFF_MAX: Final = 16.0  # seconds, as coredis' own pub/sub retry policy

# What an unreachable or restarting Redis raises through coredis (connection refused,
# reset, a subscribe never acknowledged).
_REDIS_DOWN: Final = (coredis.exceptions.RedisError, OSError, TimeoutError)


def _channel(prefix: str, group: str) -> str:
    return f"{prefix}:group:{group}"


def _report(event: str, count: int = 1) -> None:
    # Broker events for the instrumentation (trio_djws.instrument): metrics count them.
    observer = instrument.active
    if observer is not None:
        observer.broker_event(event, count)


def _kind_and_payload(message: Message, json_object: bool) -> tuple[bytes, bytes]:
    if isinstance(message, bytes):
        return KIND_BYTES, message
    return (KIND_JSON if json_object else KIND_TEXT), message.encode("utf-8")


def render(policy: HistoryPolicy, position: Position, kind: bytes, payload: bytes) -> Message:
    """A history group's message as its members receive it: the position merged into a
    JSON object (kind ``b"j"``), else the group's formatter on the text or bytes."""
    if kind == KIND_BYTES:
        return policy.format(payload, position)
    text = payload.decode("utf-8")
    if kind == KIND_JSON:
        return json_with_position(text, position)
    return policy.format(text, position)


def _publish_history_sync(
    url: str, prefix: str, group: str, policy: HistoryPolicy, message: Message, json_object: bool
) -> None:
    # publish() outside a server, to a history group: the append script through redis-py,
    # retried with backoff for WEBSOCKET_HISTORY_PUBLISH_TIMEOUT seconds (a blocking call:
    # this runs in a plain thread or process, never on the trio thread).
    import redis.exceptions

    kind, payload = _kind_and_payload(message, json_object)
    timeout = get_settings().history_publish_timeout
    deadline = time.monotonic() + timeout
    delay = BACKOFF_FIRST
    while True:
        try:
            RedisHistory(prefix).append_sync(
                sync_client(url),
                group,
                policy,
                kind=kind,
                payload=payload,
                channel=_channel(prefix, group),
                head=envelope_head(kind, sync_origin()),
            )
        except (redis.exceptions.RedisError, OSError) as exc:
            if time.monotonic() + delay > deadline:
                raise BrokerError(
                    f"could not publish to history group {group!r}: Redis at {url} "
                    f"unreachable for {timeout} s (WEBSOCKET_HISTORY_PUBLISH_TIMEOUT): {exc}"
                ) from exc
            time.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)
        else:
            return


def _first_leaf(error: BaseException) -> BaseException:
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


def _options(config: Mapping[str, object]) -> tuple[str, str]:
    url = config.get("url", DEFAULT_URL)
    prefix = config.get("prefix", DEFAULT_PREFIX)
    if not isinstance(url, str) or not url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigurationError(
            f"WEBSOCKET_BROKER['CONFIG']['url'] must be a redis:// URL, got {url!r}"
        )
    if not isinstance(prefix, str) or not prefix:
        raise ConfigurationError(
            f"WEBSOCKET_BROKER['CONFIG']['prefix'] must be a non-empty str, got {prefix!r}"
        )
    unknown = set(config) - {"url", "prefix"}
    if unknown:
        raise ConfigurationError(
            f"WEBSOCKET_BROKER['CONFIG'] has unknown keys {sorted(unknown)}; "
            "RedisBroker reads 'url' and 'prefix'"
        )
    return url, prefix


class RedisBroker:
    """Group messages and presence across processes through Redis.

    Args:
        groups: the server's group registry.
        config: ``WEBSOCKET_BROKER['CONFIG']``: ``url`` (default
            ``redis://127.0.0.1:6379/0``) and ``prefix`` of every Redis key and channel
            (default ``trio_djws``; two projects sharing one Redis use different prefixes).

    Attributes:
        connected: whether the subscriber is connected to Redis now.
        lost: envelopes that could not be published to Redis (Redis unreachable).
        undecodable: envelopes received that were not a version-1 or -2 envelope (dropped).
        resyncs: ``on_resync`` rounds started (one per group resubscribed after a gap, or
            per history group whose gap the history could not fill).
        recovered: messages of history groups filled in from the history after a gap.
        hand_over_pause: awaited at each pause point of every hand-over (tests).

    Raises:
        ConfigurationError: a bad ``url`` or ``prefix``, or an unknown key.
    """

    cross_process = True

    def __init__(self, groups: Groups, config: Mapping[str, object] | None = None) -> None:
        self.url, self.prefix = _options(config or {})
        self._groups = groups
        self._ttl = get_settings().presence_ttl
        self.connected = False
        self.lost = 0
        self.undecodable = 0
        self.resyncs = 0
        self.recovered = 0
        self.hand_over_pause: Pause | None = None
        self._history = RedisHistory(self.prefix)
        self._told_version_2 = False
        # History groups: the last position delivered here, per group subscribed.
        self._last: dict[str, Position] = {}
        self._client: coredis.Redis[bytes] | None = None
        self._outgoing_send, self._outgoing = trio.open_memory_channel[tuple[str, bytes]](
            PUBLISH_QUEUE_SIZE
        )
        # Groups whose subscription may have to change, and groups whose presence changed
        # here, since the tasks last looked. Sets, not queues: bounded by the number of
        # groups this process has touched, and repeated joins/leaves coalesce.
        self._dirty: set[str] = set()
        self._wake = trio.Event()
        self._presence_dirty: set[str] = set()
        self._presence_recheck: set[str] = set()
        self._presence_wake = trio.Event()
        self._announced: dict[str, dict[str, int]] = {}
        self._written: set[str] = set()  # groups with this process's presence in Redis
        self._live: set[str] = set()  # groups whose subscription Redis has acknowledged
        self._live_changed = trio.Event()
        self._down = False  # the subscriber lost Redis (or never reached it) and retries
        self._echo = EchoClock()  # pub/sub lag, while an instrumentation listens
        groups.watch(self._changed)

    @property
    def overflows(self) -> int:
        """Messages that found a local member's send queue full (it was closed with 1008)."""
        return self._groups.overflows

    # -- names --------------------------------------------------------------------------------

    def channel(self, group: str) -> str:
        """The Redis channel that carries ``group``: ``<prefix>:group:<group>``."""
        return _channel(self.prefix, group)

    def _group_of(self, channel: bytes | str) -> str:
        name = channel.decode() if isinstance(channel, bytes) else channel
        return name.removeprefix(f"{self.prefix}:group:")

    # Presence keys: a set of the processes with members in a group, and one key per process
    # and group holding its counts (with a TTL). The origin has no ":", so neither kind of
    # name can equal another whatever the group names are.
    def _presence_index(self, group: str) -> str:
        return f"{self.prefix}:presence-index:{group}"

    def _presence_key(self, group: str, origin: str) -> str:
        return f"{self.prefix}:presence:{origin}:{group}"

    # -- the Groups watcher (sync, trio thread) ------------------------------------------------

    def _changed(self, group: str, presence: bool) -> None:
        self._dirty.add(group)
        self._wake.set()
        if presence:
            self._presence_dirty.add(group)
            self._presence_wake.set()

    # -- Broker -----------------------------------------------------------------------------

    async def publish(self, group: str, message: Message, *, json_object: bool = False) -> None:
        """Queue ``message`` for the local members of ``group`` at once, then hand one
        envelope to the publisher task for the other processes.

        Waits only while ``PUBLISH_QUEUE_SIZE`` envelopes wait for Redis (backpressure); if
        cancelled there, the local members have it and the other processes do not.

        A group with history: the message is kept in Redis first (one append script round
        trip, retried while Redis is unreachable) and reaches every member, local ones too,
        from the subscription, in offset order.

        Raises:
            BrokerError: a history group and Redis stayed unreachable for
                ``WEBSOCKET_HISTORY_PUBLISH_TIMEOUT`` seconds (or the broker is not
                running); the message was not sent.
        """
        policy = history_policy(group)
        if policy is not None:
            await self._publish_history(group, policy, message, json_object)
            return
        await trio.lowlevel.checkpoint_if_cancelled()
        envelope = encode_envelope(message)
        _report("publish")
        self._groups.deliver(group, message)
        if self._client is None:
            # Not serving (no lifespan, e.g. the in-memory test client): nothing would drain
            # the queue, and no other process is reachable from here.
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        channel = self.channel(group)
        if instrument.active is not None and group in self._live:
            self._echo.sent(channel, envelope)  # comes back to this process's subscriber
        await self._outgoing_send.send((channel, envelope))

    async def _publish_history(
        self, group: str, policy: HistoryPolicy, message: Message, json_object: bool
    ) -> None:
        client = self._require_client()
        kind, payload = _kind_and_payload(message, json_object)
        head = envelope_head(kind)
        if not self._told_version_2:
            # Once per broker: during a rolling upgrade, older processes drop these.
            self._told_version_2 = True
            logger.info(
                "history groups travel in envelope version 2: processes of a trio-djws "
                "without group history drop them (one warning each: 'expected an envelope "
                "of version 1, got 2'); upgrade every process sharing prefix %r",
                self.prefix,
            )
        timeout = get_settings().history_publish_timeout
        delay = BACKOFF_FIRST
        failure: BaseException | None = None
        with trio.move_on_after(timeout):
            while True:
                try:
                    await self._history.append(
                        client,
                        group,
                        policy,
                        kind=kind,
                        payload=payload,
                        channel=self.channel(group),
                        head=head,
                    )
                except _REDIS_DOWN as exc:
                    failure = exc
                    await trio.sleep(delay)  # retry with backoff until the deadline
                    delay = min(delay * 2, BACKOFF_MAX)
                else:
                    return
        raise BrokerError(
            f"could not publish to history group {group!r}: Redis at {self.url} unreachable "
            f"for {timeout} s (WEBSOCKET_HISTORY_PUBLISH_TIMEOUT): {failure}"
        )

    async def join_history(
        self,
        runtime: Runtime,
        group: str,
        channel: trio.MemorySendChannel[Message],
        policy: HistoryPolicy,
        since: Position | None,
        *,
        before_messages: Callable[[JoinResult], Awaitable[None]] | None = None,
    ) -> JoinResult:
        """Join ``group`` through the hand-over from its Redis stream (see ``Broker``):
        waits for this process's subscription first, so no live message can fall between
        the read and the first one delivered."""
        timeout = get_settings().history_publish_timeout

        async def subscribed() -> None:
            with trio.move_on_after(timeout):
                await self.wait_subscribed(group)
                return
            raise BrokerError(f"group {group!r} not subscribed on Redis at {self.url}")

        async def read(after: Position | None) -> HistoryRead:
            client = self._require_client()
            with trio.move_on_after(timeout):
                try:
                    return await self._history.read(
                        client, group, policy, after, lambda *a: render(policy, *a)
                    )
                except _REDIS_DOWN as exc:
                    raise BrokerError(f"history of group {group!r}: {exc}") from exc
            raise BrokerError(f"history of group {group!r}: no answer from {self.url}")

        return await join_with_history(
            self._groups,
            runtime,
            group,
            channel,
            policy,
            since,
            read=read,
            subscribed=subscribed,
            before_messages=before_messages,
            pause=self.hand_over_pause,
        )

    @classmethod
    def publish_sync(
        cls,
        config: Mapping[str, object],
        group: str,
        message: Message,
        *,
        json_object: bool = False,
    ) -> None:
        """``publish()`` from a process that runs no server: redis-py's pooled sync client.

        A group with history runs the same append script as the servers (retried for
        ``WEBSOCKET_HISTORY_PUBLISH_TIMEOUT`` seconds while Redis is unreachable).

        Raises:
            BrokerError: Redis could not be reached; the message is lost.
        """
        import redis.exceptions

        url, prefix = _options(config)
        policy = history_policy(group)
        if policy is not None:
            _publish_history_sync(url, prefix, group, policy, message, json_object)
            return
        try:
            # Not process_origin(): nothing was delivered locally, so this process's own
            # subscriber (if it runs a server) must not skip the message.
            envelope = encode_envelope(message, origin=sync_origin())
            sync_client(url).publish(_channel(prefix, group), envelope)
        except redis.exceptions.RedisError as exc:
            raise BrokerError(f"could not publish to group {group!r} on {url}: {exc}") from exc

    async def wait_subscribed(self, group: str, subscribed: bool = True) -> None:
        """Wait until Redis has acknowledged this process's subscription to ``group`` (or,
        with ``subscribed=False``, until this process is no longer subscribed to it).

        ``websocket.join`` returns at once and the subscription follows in the background;
        until it is acknowledged, messages published to the group on other processes do not
        reach this one. Waits without limit while Redis is down: callers bound it with
        ``trio.fail_after``. A checkpoint.
        """
        await trio.lowlevel.checkpoint()
        while (group in self._live) is not subscribed:
            await self._live_changed.wait()

    def _set_live(self, group: str, live: bool) -> None:
        if live:
            self._live.add(group)
        else:
            self._live.discard(group)
        self._live_changed.set()
        self._live_changed = trio.Event()

    async def members(self, group: str) -> dict[str, int]:
        """Presence of ``group`` across every process that shares this Redis: identity →
        number of connections. Entries of a process that stopped heartbeating vanish after
        ``WEBSOCKET_PRESENCE_TTL`` seconds.

        Raises:
            BrokerError: Redis is unreachable.
        """
        client = self._require_client()
        own = process_origin().decode()
        local = self._groups.presence(group)
        try:
            origins = [o.decode() for o in await client.smembers(self._presence_index(group))]
            others = [o for o in origins if o != own]
            values = (
                await client.mget([self._presence_key(group, o) for o in others]) if others else []
            )
            stale = [o for o, v in zip(others, values, strict=True) if v is None]
            if stale:
                await client.srem(self._presence_index(group), stale)
        except _REDIS_DOWN as exc:
            raise BrokerError(f"presence of group {group!r}: Redis at {self.url}: {exc}") from exc
        counts = dict(local)
        for value in values:
            try:
                entries = json.loads(value) if value is not None else {}
                for identity, count in entries.items():
                    counts[str(identity)] = counts.get(str(identity), 0) + int(count)
            except (ValueError, TypeError, AttributeError):
                logger.warning("ignored a malformed presence entry in group %s", group)
        return counts

    def _require_client(self) -> coredis.Redis[bytes]:
        if self._client is None:
            raise BrokerError("the RedisBroker is not running (no server lifespan)")
        return self._client

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the subscriber, publisher and presence tasks until cancelled.

        Reports started at once, before any connection to Redis.
        """
        try:
            async with self._open_client() as client:
                self._client = client
                task_status.started()
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._publisher, client)
                    nursery.start_soon(self._subscriber, client)
                    nursery.start_soon(self._presence, client)
        finally:
            self._client = None
            with trio.move_on_after(PRESENCE_CLEANUP_TIMEOUT, shield=True):
                try:
                    await self._remove_presence()
                except _REDIS_DOWN as exc:
                    logger.warning("presence left in Redis until it expires: %s", exc)

    def _open_client(self) -> coredis.Redis[bytes]:
        return coredis.Redis.from_url(
            self.url,
            connect_timeout=CONNECT_TIMEOUT,
            stream_timeout=COMMAND_TIMEOUT,
            retry_policy=NoRetryPolicy(),
        )

    # -- publisher ----------------------------------------------------------------------------

    async def _publisher(self, client: coredis.Redis[bytes]) -> None:
        # One task, one Redis connection at a time, batches in queue order: messages from one
        # publisher keep their order. A batch of what has queued up meanwhile goes out as one
        # pipeline (one round trip instead of one per message).
        async with self._outgoing:
            async for first in self._outgoing:
                batch = [first]
                while len(batch) < PUBLISH_BATCH:
                    try:
                        batch.append(self._outgoing.receive_nowait())
                    except trio.WouldBlock:
                        break
                if self._down:
                    # The subscriber knows Redis is away: drop at once rather than make every
                    # publisher wait for a connection attempt per batch.
                    self.lost += len(batch)
                    _report("lost", len(batch))
                    continue
                try:
                    if len(batch) == 1:
                        await client.publish(*first)
                    else:
                        async with client.pipeline(transaction=False) as pipe:
                            for channel, envelope in batch:
                                pipe.publish(channel, envelope)
                except _REDIS_DOWN as exc:
                    self.lost += len(batch)
                    _report("lost", len(batch))
                    logger.error(
                        "Redis at %s unreachable: %d messages published here did not reach "
                        "other processes (%s)",
                        self.url,
                        len(batch),
                        exc,
                    )

    # -- subscriber ---------------------------------------------------------------------------

    async def _subscriber(self, client: coredis.Redis[bytes]) -> None:
        delay = BACKOFF_FIRST
        while True:
            failure: BaseException | None = None
            # Groups with members before this connection exists missed what was published
            # meanwhile: their first acknowledgement on it triggers on_resync.
            resync = set(self._groups.names())
            try:
                async with client.pubsub(
                    retry_policy=NoRetryPolicy(), subscription_timeout=SUBSCRIBE_TIMEOUT
                ) as pubsub:
                    logger.info("subscriber connected to Redis at %s", self.url)
                    self.connected = True
                    self._down = False
                    delay = BACKOFF_FIRST
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._reconcile, pubsub)
                        nursery.start_soon(self._drain, client, pubsub, resync)
            except* _REDIS_DOWN as group:
                failure = _first_leaf(group)
            except* Exception as group:  # a bug must not stop the server: log, reconnect
                failure = _first_leaf(group)
                if trio.current_effective_deadline() != -math.inf:  # see below
                    logger.exception(
                        "RedisBroker subscriber failed; reconnecting", exc_info=failure
                    )
            # Cancelled (the server stops): coredis' pub/sub cleanup can raise in place of the
            # cancellation (ClosedResourceError: its connection is gone already). That is the
            # shutdown, not a failure: no traceback, no "unreachable".
            await trio.lowlevel.checkpoint_if_cancelled()
            self.connected = False
            self._down = True
            for name in list(self._live):
                self._set_live(name, False)
            logger.error(
                "Redis at %s unreachable (%s: %s); retrying in %.1f s; local delivery goes on",
                self.url,
                type(failure).__name__,
                failure,
                delay,
            )
            await trio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)
            _report("reconnect")

    async def _reconcile(self, pubsub: PubSub[bytes]) -> None:
        # Subscribe the groups that have members, unsubscribe those that lost their last.
        subscribed: set[str] = set()
        pending = set(self._groups.names())
        while True:
            self._wake = trio.Event()
            pending |= self._dirty
            self._dirty = set()
            join = sorted(g for g in pending if self._groups.has_members(g) and g not in subscribed)
            leave = sorted(
                g for g in pending if not self._groups.has_members(g) and g in subscribed
            )
            pending = set()
            if join:
                await pubsub.subscribe(*(self.channel(g) for g in join))
                subscribed.update(join)
            if leave:
                # Not live from now on, before the acknowledgement: a member joining
                # meanwhile must wait for the subscription that follows (a hand-over that
                # took the old one for live would miss what is published in between).
                for group in leave:
                    self._set_live(group, False)
                await pubsub.unsubscribe(*(self.channel(g) for g in leave))
                subscribed.difference_update(leave)
            await self._wake.wait()

    async def _drain(
        self, client: coredis.Redis[bytes], pubsub: PubSub[bytes], resync: set[str]
    ) -> None:
        own = process_origin()
        while True:
            message = await pubsub.get_message()
            if message is None:
                continue
            kind = message["type"]
            group = self._group_of(message["channel"])
            if kind == "unsubscribe":
                self._set_live(group, False)
                self._last.pop(group, None)
                continue
            if kind == "subscribe":
                self._set_live(group, True)
                if group in resync:
                    resync.discard(group)
                    policy = history_policy(group)
                    last = self._last.get(group)
                    if policy is not None and last is not None:
                        # Fill what was missed from the stream instead of a resync.
                        await self._catch_up(client, group, policy, last, None)
                    else:
                        self._resync(group)
                continue
            if kind != "message":
                continue
            data = message["data"]
            raw = data if isinstance(data, bytes) else str(data).encode()
            try:
                envelope = decode_envelope(raw)
            except ValueError as exc:
                self.undecodable += 1
                logger.warning("dropped a message on group %s: %s", group, exc)
                continue
            if envelope.position is not None:
                await self._deliver_positioned(client, group, envelope)
                continue
            if envelope.origin == own:
                lag = self._echo.received(self.channel(group), raw)
                if lag is not None and (observer := instrument.active) is not None:
                    observer.broker_lag(lag)
                continue  # delivered locally when published
            if envelope.kind == KIND_PRESENCE:
                self._presence_recheck.add(group)
                self._presence_wake.set()
                continue
            _report("receive")
            self._groups.deliver(group, envelope.message)

    async def _deliver_positioned(
        self, client: coredis.Redis[bytes], group: str, envelope: Envelope
    ) -> None:
        # A history group's message: delivered by every process (the publisher's too), in
        # offset order; a jump is filled from the stream first, once for all local members.
        position = envelope.position
        assert position is not None
        policy = history_policy(group)
        if policy is None:
            # This process keeps no history for the group (settings differ between
            # processes): deliver it as it came.
            self._groups.deliver(group, envelope.message)
            return
        last = self._last.get(group)
        if last is not None and last.epoch == position.epoch:
            if position.offset <= last.offset:
                return  # already delivered (filled from the stream after a gap)
            if position.offset > last.offset + 1:
                await self._catch_up(client, group, policy, last, position.offset - 1)
        elif last is not None:
            logger.warning(
                "history of group %s was lost (new epoch): on_resync for its members", group
            )
            self._resync(group)
        self._last[group] = position
        payload = envelope.message
        kind = envelope.kind
        data = payload.encode("utf-8") if isinstance(payload, str) else payload
        self._groups.deliver_at(
            group, position.epoch, position.offset, render(policy, position, kind, data)
        )

    async def _catch_up(
        self,
        client: coredis.Redis[bytes],
        group: str,
        policy: HistoryPolicy,
        last: Position,
        until: int | None,
    ) -> None:
        # One read of the stream after ``last`` (up to ``until``, or everything), fanned out
        # to the local members; on_resync when the stream no longer holds it.
        try:
            with trio.fail_after(COMMAND_TIMEOUT):
                read = await self._history.read(
                    client, group, policy, last, lambda *a: render(policy, *a)
                )
        except (*_REDIS_DOWN, trio.TooSlowError) as exc:
            logger.warning("group %s: gap after offset %d not read (%s)", group, last.offset, exc)
            self._resync(group)
            return
        if not read.covers(last):
            logger.warning(
                "group %s: history does not hold the gap after offset %d: on_resync",
                group,
                last.offset,
            )
            self._resync(group)
            self._last[group] = read.position
            return
        for entry in read.entries:
            if until is not None and entry.offset > until:
                break
            self._groups.deliver_at(group, last.epoch, entry.offset, entry.message)
            self._last[group] = Position(last.epoch, entry.offset)
            self.recovered += 1

    def _resync(self, group: str) -> None:
        self.resyncs += 1
        count = self._groups.resync(group)
        logger.info("resubscribed group %s after a gap: on_resync for %d", group, count)
        # Presence written while Redis was away is gone too: rewrite it.
        if group in self._groups.presence_groups():
            self._presence_dirty.add(group)
            self._presence_wake.set()

    # -- presence -----------------------------------------------------------------------------

    async def _presence(self, client: coredis.Redis[bytes]) -> None:
        interval = self._ttl / 3
        next_beat = trio.current_time() + interval
        while True:
            with trio.move_on_at(next_beat):
                await self._presence_wake.wait()
            self._presence_wake = trio.Event()
            changed, self._presence_dirty = self._presence_dirty, set()
            recheck, self._presence_recheck = self._presence_recheck, set()
            beat = trio.current_time() >= next_beat
            if beat:
                next_beat = trio.current_time() + interval
            write = set(changed)
            if beat:
                write.update(self._groups.presence_groups())
            try:
                await self._write_presence(client, write, changed)
            except _REDIS_DOWN as exc:
                logger.warning("presence not written to Redis at %s: %s", self.url, exc)
                if not beat:
                    self._presence_dirty |= changed  # the next heartbeat writes it again
            look = changed | recheck | (set(self._groups.presence_groups()) if beat else set())
            for group in sorted(look):
                await self._announce(group)

    async def _write_presence(
        self, client: coredis.Redis[bytes], groups: set[str], changed: set[str]
    ) -> None:
        # One pipeline (one round trip) for every group's key, index and expiry, and a "look
        # again" to the other processes for each group in ``changed``.
        if not groups:
            return
        origin = process_origin().decode()
        ttl_ms = max(1, int(self._ttl * 1000))
        emptied: list[str] = []
        async with client.pipeline(transaction=False) as pipe:
            for group in sorted(groups):
                counts = self._groups.presence(group)
                key = self._presence_key(group, origin)
                index = self._presence_index(group)
                if counts:
                    pipe.set(key, json.dumps(counts), px=ttl_ms)
                    pipe.sadd(index, [origin])
                    pipe.pexpire(index, 3 * ttl_ms)
                    self._written.add(group)  # before it is sent: a cancelled write is undone
                else:
                    pipe.delete([key])
                    pipe.srem(index, [origin])
                    emptied.append(group)
                if group in changed:
                    pipe.publish(self.channel(group), encode_envelope("", kind=KIND_PRESENCE))
        # Only once Redis has it all: shutdown cancels this task as soon as the last
        # connection has left, often mid-pipeline, and _remove_presence must then still
        # delete the key and tell the others (a TTL of minutes would keep the member shown).
        self._written.difference_update(emptied)

    async def _remove_presence(self) -> None:
        # At shutdown: remove this process's presence at once (rather than after the TTL)
        # and tell the other processes to look again. On a client of its own, opened here
        # under the caller's shield: the serving client's connection pool runs its
        # connections in a task group that the shutdown has cancelled (a new connection
        # there dies at once with "Connection lost!"), and the presence task's cancelled
        # pipeline has just discarded the connection it used.
        origin = process_origin().decode()
        groups, self._written = sorted(self._written), set()
        if not groups:
            return
        async with self._open_client() as client, client.pipeline(transaction=False) as pipe:
            for group in groups:
                pipe.delete([self._presence_key(group, origin)])
                pipe.srem(self._presence_index(group), [origin])
                pipe.publish(self.channel(group), encode_envelope("", kind=KIND_PRESENCE))

    async def _announce(self, group: str) -> None:
        if group not in self._groups.presence_groups():
            self._announced.pop(group, None)
            return
        try:
            members = await self.members(group)
        except BrokerError:
            members = self._groups.presence(group)
        if self._announced.get(group) == members:
            return
        self._announced[group] = members
        try:
            self._groups.announce(group, members)
        except Exception:  # an app's announce renderer: never stop the broker
            logger.exception("announcing presence in group %s failed", group)
