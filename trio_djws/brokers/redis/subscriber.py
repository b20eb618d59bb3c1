"""Internal: the subscriber of ``trio_djws.brokers.RedisBroker``: one pub/sub connection.

It is subscribed to a group's Redis channel (``<prefix>:group:<name>``) only while this
process has members in it; it drains coredis' unbounded buffer as messages arrive and queues
each for the local members at once (their send queues are the bounded queues; a full one
closes that member with 1008). A process with no member in a group never receives that
group's messages. It skips this process's own messages coming back (the envelope's origin),
hands history groups' messages to ``RedisHistoryGroups`` and presence envelopes to
``RedisPresence``.

It reconnects with backoff (0.1 s doubling to 16 s), resubscribes every group that has
members, and on each fresh subscribe acknowledgement either fills a history group's gap from
its stream or calls ``on_resync`` of the group's local members.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

import trio
from coredis.retry import NoRetryPolicy

from ... import instrument
from ...history import history_policy
from ..envelope import KIND_PRESENCE, decode_envelope, process_origin
from ..lag import EchoClock
from .client import BACKOFF_FIRST, BACKOFF_MAX, REDIS_DOWN, report

if TYPE_CHECKING:
    import coredis
    from coredis.patterns.pubsub import PubSub

    from ...groups import Groups
    from .history import RedisHistoryGroups
    from .presence import RedisPresence

__all__: list[str] = []

logger = logging.getLogger(__name__)

SUBSCRIBE_TIMEOUT: Final = 10.0  # seconds for Redis to acknowledge a SUBSCRIBE


def _first_leaf(error: BaseException) -> BaseException:
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


class RedisSubscriber:
    """The subscriber task and what it knows: which groups Redis has acknowledged.

    Args:
        groups: the server's group registry.
        prefix: of every Redis key and channel.
        url: of Redis, for log lines.
        channel: the Redis channel of a group.
        history: the broker's history groups.
        presence: the broker's presence.
        resync: called with a group whose members must get ``on_resync``.

    Attributes:
        connected: whether the pub/sub connection is up now.
        down: the subscriber lost Redis (or never reached it) and retries.
        undecodable: envelopes received that were not a version-1 or -2 envelope (dropped).
        echo: the pub/sub lag of this process's own messages.
    """

    def __init__(
        self,
        groups: Groups,
        *,
        prefix: str,
        url: str,
        channel: Callable[[str], str],
        history: RedisHistoryGroups,
        presence: RedisPresence,
        resync: Callable[[str], None],
    ) -> None:
        self._groups = groups
        self._prefix = prefix
        self._url = url
        self._channel = channel
        self._history = history
        self._presence = presence
        self._resync = resync
        self.connected = False
        self.down = False
        self.undecodable = 0
        self.echo = EchoClock()
        # Groups whose subscription may have to change since the task last looked: a set,
        # not a queue (bounded by the groups touched; repeated joins/leaves coalesce).
        self._dirty: set[str] = set()
        self._wake = trio.Event()
        self._live: set[str] = set()  # groups whose subscription Redis has acknowledged
        self._live_changed = trio.Event()

    def changed(self, group: str) -> None:
        """The members of ``group`` changed here: its subscription may have to. Sync."""
        self._dirty.add(group)
        self._wake.set()

    def live(self, group: str) -> bool:
        """Whether Redis has acknowledged this process's subscription to ``group``."""
        return group in self._live

    async def wait_subscribed(self, group: str, subscribed: bool = True) -> None:
        """Wait until ``live(group)`` is ``subscribed``. A checkpoint."""
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

    def _group_of(self, channel: bytes | str) -> str:
        name = channel.decode() if isinstance(channel, bytes) else channel
        return name.removeprefix(f"{self._prefix}:group:")

    async def serve(self, client: coredis.Redis[bytes]) -> None:
        """The subscriber task: connects, subscribes and delivers until cancelled; never
        raises because Redis is away."""
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
                    logger.info("subscriber connected to Redis at %s", self._url)
                    self.connected = True
                    self.down = False
                    delay = BACKOFF_FIRST
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._reconcile, pubsub)
                        nursery.start_soon(self._drain, client, pubsub, resync)
            except* REDIS_DOWN as group:
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
            self.down = True
            for name in list(self._live):
                self._set_live(name, False)
            logger.error(
                "Redis at %s unreachable (%s: %s); retrying in %.1f s; local delivery goes on",
                self._url,
                type(failure).__name__,
                failure,
                delay,
            )
            await trio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)
            report("reconnect")

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
                await pubsub.subscribe(*(self._channel(g) for g in join))
                subscribed.update(join)
            if leave:
                # Not live from now on, before the acknowledgement: a member joining
                # meanwhile must wait for the subscription that follows (a hand-over that
                # took the old one for live would miss what is published in between).
                for group in leave:
                    self._set_live(group, False)
                await pubsub.unsubscribe(*(self._channel(g) for g in leave))
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
                self._history.forget(group)
                continue
            if kind == "subscribe":
                self._set_live(group, True)
                if group in resync:
                    resync.discard(group)
                    policy = history_policy(group)
                    last = self._history.last(group)
                    if policy is not None and last is not None:
                        # Fill what was missed from the stream instead of a resync.
                        await self._history.catch_up(client, group, policy, last, None)
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
                await self._history.deliver(client, group, envelope)
                continue
            if envelope.origin == own:
                lag = self.echo.received(self._channel(group), raw)
                if lag is not None and (observer := instrument.active) is not None:
                    observer.broker_lag(lag)
                continue  # delivered locally when published
            if envelope.kind == KIND_PRESENCE:
                self._presence.recheck(group)
                continue
            report("receive")
            self._groups.deliver(group, envelope.message)
