"""``RedisBroker``: groups across processes and machines through Redis pub/sub (coredis).

One broker per server process, with three tasks in the server nursery:

- the **subscriber** (``trio_djws.brokers.redis.subscriber``): one pub/sub connection,
  subscribed to a group's Redis channel (``<prefix>:group:<name>``) only while this process
  has members in it, queueing each message for the local members at once (a full send queue
  closes that member with 1008 and counts in ``overflows``);
- the **publisher** (here): takes envelopes from a bounded queue (``PUBLISH_QUEUE_SIZE``) in
  order and publishes them, so messages from one publisher to one group keep their order;
- the **presence** task (``trio_djws.brokers.redis.presence``): heartbeats (every
  ``WEBSOCKET_PRESENCE_TTL / 3`` seconds) and announces presence changes.

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

**Groups with history** (``WEBSOCKET_GROUP_HISTORY``) are kept in Redis streams and reach
every member from the subscription, in offset order (``trio_djws.brokers.redis.history``).
The client, its timeouts and backoff are ``trio_djws.brokers.redis.client``'s.

Connecting never sits on the ASGI lifespan startup path: ``serve`` reports started at once
(coredis' ``pubsub()`` would wait without limit while Redis is down, and Hypercorn kills a
server whose startup takes over 60 s).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Final

import trio

from ... import instrument
from ...conf import get_settings
from ...exceptions import BrokerError, ConfigurationError
from ...history import HistoryPolicy, JoinResult, Position, history_policy
from ...typing import Message
from ..envelope import encode_envelope, sync_origin
from ..handover import HistoryRead, Pause, join_with_history
from ..sync_clients import sync_client
from .client import REDIS_DOWN, group_channel, open_client, report
from .history import RedisHistoryGroups, publish_sync
from .presence import RedisPresence
from .subscriber import RedisSubscriber

if TYPE_CHECKING:
    import coredis

    from ..._runtime import Runtime
    from ...groups import Groups

__all__ = ["RedisBroker"]

logger = logging.getLogger(__name__)

DEFAULT_URL: Final = "redis://127.0.0.1:6379/0"
DEFAULT_PREFIX: Final = "trio_djws"
PUBLISH_QUEUE_SIZE: Final = 1024  # envelopes waiting for Redis; then publishers wait
PUBLISH_BATCH: Final = 256  # envelopes per pipeline round trip at most
PRESENCE_CLEANUP_TIMEOUT: Final = 2.0  # seconds at shutdown to remove this process's presence


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
        lost: envelopes that could not be published to Redis (Redis unreachable).
        resyncs: ``on_resync`` rounds started (one per group resubscribed after a gap, or
            per history group whose gap the history could not fill).
        hand_over_pause: awaited at each pause point of every hand-over (tests).

    Raises:
        ConfigurationError: a bad ``url`` or ``prefix``, or an unknown key.
    """

    cross_process = True

    def __init__(self, groups: Groups, config: Mapping[str, object] | None = None) -> None:
        self.url, self.prefix = _options(config or {})
        self._groups = groups
        self.lost = 0
        self.resyncs = 0
        self.hand_over_pause: Pause | None = None
        self._history = RedisHistoryGroups(
            groups, prefix=self.prefix, url=self.url, channel=self.channel, resync=self._resync
        )
        self._presence = RedisPresence(
            groups,
            prefix=self.prefix,
            url=self.url,
            ttl=get_settings().presence_ttl,
            channel=self.channel,
            open_client=lambda: open_client(self.url),
        )
        self._subscriber = RedisSubscriber(
            groups,
            prefix=self.prefix,
            url=self.url,
            channel=self.channel,
            history=self._history,
            presence=self._presence,
            resync=self._resync,
        )
        self._client: coredis.Redis[bytes] | None = None
        self._outgoing_send, self._outgoing = trio.open_memory_channel[tuple[str, bytes]](
            PUBLISH_QUEUE_SIZE
        )
        groups.watch(self._changed)

    @property
    def overflows(self) -> int:
        """Messages that found a local member's send queue full (it was closed with 1008)."""
        return self._groups.overflows

    @property
    def connected(self) -> bool:
        """Whether the subscriber is connected to Redis now."""
        return self._subscriber.connected

    @property
    def undecodable(self) -> int:
        """Envelopes received that were not a version-1 or -2 envelope (dropped)."""
        return self._subscriber.undecodable

    @property
    def recovered(self) -> int:
        """Messages of history groups filled in from the history after a gap."""
        return self._history.recovered

    # -- names --------------------------------------------------------------------------------

    def channel(self, group: str) -> str:
        """The Redis channel that carries ``group``: ``<prefix>:group:<group>``."""
        return group_channel(self.prefix, group)

    # -- the Groups watcher (sync, trio thread) ------------------------------------------------

    def _changed(self, group: str, presence: bool) -> None:
        self._subscriber.changed(group)
        if presence:
            self._presence.changed(group)

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
            await self._history.publish(self._require_client(), group, policy, message, json_object)
            return
        await trio.lowlevel.checkpoint_if_cancelled()
        envelope = encode_envelope(message)
        report("publish")
        self._groups.deliver(group, message)
        if self._client is None:
            # Not serving (no lifespan, e.g. the in-memory test client): nothing would drain
            # the queue, and no other process is reachable from here.
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        channel = self.channel(group)
        if instrument.active is not None and self._subscriber.live(group):
            self._subscriber.echo.sent(channel, envelope)  # comes back to this process's subscriber
        await self._outgoing_send.send((channel, envelope))

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
                    return await self._history.read(client, group, policy, after)
                except REDIS_DOWN as exc:
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
            channel = group_channel(prefix, group)
            publish_sync(url, prefix, channel, group, policy, message, json_object)
            return
        try:
            # Not process_origin(): nothing was delivered locally, so this process's own
            # subscriber (if it runs a server) must not skip the message.
            envelope = encode_envelope(message, origin=sync_origin())
            sync_client(url).publish(group_channel(prefix, group), envelope)
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
        await self._subscriber.wait_subscribed(group, subscribed)

    async def members(self, group: str) -> dict[str, int]:
        """Presence of ``group`` across every process that shares this Redis: identity →
        number of connections. Entries of a process that stopped heartbeating vanish after
        ``WEBSOCKET_PRESENCE_TTL`` seconds.

        Raises:
            BrokerError: Redis is unreachable.
        """
        return await self._presence.members(self._require_client(), group)

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
                    nursery.start_soon(self._subscriber.serve, client)
                    nursery.start_soon(self._presence.serve, client)
        finally:
            self._client = None
            with trio.move_on_after(PRESENCE_CLEANUP_TIMEOUT, shield=True):
                try:
                    await self._presence.remove()
                except REDIS_DOWN as exc:
                    logger.warning("presence left in Redis until it expires: %s", exc)

    def _open_client(self) -> coredis.Redis[bytes]:
        return open_client(self.url)

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
                if self._subscriber.down:
                    # The subscriber knows Redis is away: drop at once rather than make every
                    # publisher wait for a connection attempt per batch.
                    self.lost += len(batch)
                    report("lost", len(batch))
                    continue
                try:
                    if len(batch) == 1:
                        await client.publish(*first)
                    else:
                        async with client.pipeline(transaction=False) as pipe:
                            for channel, envelope in batch:
                                pipe.publish(channel, envelope)
                except REDIS_DOWN as exc:
                    self.lost += len(batch)
                    report("lost", len(batch))
                    logger.error(
                        "Redis at %s unreachable: %d messages published here did not reach "
                        "other processes (%s)",
                        self.url,
                        len(batch),
                        exc,
                    )

    def _resync(self, group: str) -> None:
        self.resyncs += 1
        count = self._groups.resync(group)
        logger.info("resubscribed group %s after a gap: on_resync for %d", group, count)
        # Presence written while Redis was away is gone too: rewrite it.
        if group in self._groups.presence_groups():
            self._presence.changed(group)
