"""Internal: presence of ``trio_djws.brokers.RedisBroker``, across the processes sharing a Redis.

Keys (``<prefix>`` is ``WEBSOCKET_BROKER['CONFIG']['prefix']``): a set
``<prefix>:presence-index:<group>`` of the processes with members in a group, and one key
``<prefix>:presence:<origin>:<group>`` per process and group holding its counts (JSON,
identity → connections) with a TTL of ``WEBSOCKET_PRESENCE_TTL`` seconds. The origin has no
":", so neither kind of name can equal another whatever the group names are.

The presence task heartbeats every ``WEBSOCKET_PRESENCE_TTL / 3`` seconds (rewriting every
key), writes a group's key as soon as its local presence changes, and then publishes a
presence envelope on the group's Redis channel: "look again" to the other processes, whose
subscriber calls ``recheck``. After each write it announces the group's members (all
processes) to its local members when they changed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from ...exceptions import BrokerError
from ..envelope import KIND_PRESENCE, encode_envelope, process_origin
from .client import REDIS_DOWN

if TYPE_CHECKING:
    import coredis

    from ...groups import Groups

__all__: list[str] = []

logger = logging.getLogger(__name__)


class RedisPresence:
    """This process's presence in Redis, and the members of a group across processes.

    Args:
        groups: the server's group registry (local presence, announcements).
        prefix: of every Redis key and channel.
        url: of Redis, for log lines and errors.
        ttl: ``WEBSOCKET_PRESENCE_TTL`` in seconds.
        channel: the Redis channel of a group.
        open_client: a new coredis client (for the removal at shutdown).
    """

    def __init__(
        self,
        groups: Groups,
        *,
        prefix: str,
        url: str,
        ttl: float,
        channel: Callable[[str], str],
        open_client: Callable[[], coredis.Redis[bytes]],
    ) -> None:
        self._groups = groups
        self._prefix = prefix
        self._url = url
        self._ttl = ttl
        self._channel = channel
        self._open_client = open_client
        # Groups whose presence changed here, and groups another process told to look
        # again, since the task last looked: sets, not queues (bounded by the groups).
        self._dirty: set[str] = set()
        self._recheck: set[str] = set()
        self._wake = trio.Event()
        self._announced: dict[str, dict[str, int]] = {}
        self._written: set[str] = set()  # groups with this process's presence in Redis

    def index_key(self, group: str) -> str:
        """The set of the processes with members in ``group``."""
        return f"{self._prefix}:presence-index:{group}"

    def key(self, group: str, origin: str) -> str:
        """The counts of process ``origin`` in ``group``."""
        return f"{self._prefix}:presence:{origin}:{group}"

    def changed(self, group: str) -> None:
        """The local presence of ``group`` changed (or must be written again): sync."""
        self._dirty.add(group)
        self._wake.set()

    def recheck(self, group: str) -> None:
        """Another process changed its presence in ``group``: announce again. Sync."""
        self._recheck.add(group)
        self._wake.set()

    async def members(self, client: coredis.Redis[bytes], group: str) -> dict[str, int]:
        """Presence of ``group`` across every process that shares this Redis: identity →
        number of connections; stale processes' index entries are removed.

        Raises:
            BrokerError: Redis is unreachable.
        """
        own = process_origin().decode()
        local = self._groups.presence(group)
        try:
            origins = [o.decode() for o in await client.smembers(self.index_key(group))]
            others = [o for o in origins if o != own]
            values = await client.mget([self.key(group, o) for o in others]) if others else []
            stale = [o for o, v in zip(others, values, strict=True) if v is None]
            if stale:
                await client.srem(self.index_key(group), stale)
        except REDIS_DOWN as exc:
            raise BrokerError(f"presence of group {group!r}: Redis at {self._url}: {exc}") from exc
        counts = dict(local)
        for value in values:
            try:
                entries = json.loads(value) if value is not None else {}
                for identity, count in entries.items():
                    counts[str(identity)] = counts.get(str(identity), 0) + int(count)
            except (ValueError, TypeError, AttributeError):
                logger.warning("ignored a malformed presence entry in group %s", group)
        return counts

    async def serve(self, client: coredis.Redis[bytes]) -> None:
        """The presence task: heartbeats, writes and announcements until cancelled."""
        interval = self._ttl / 3
        next_beat = trio.current_time() + interval
        while True:
            with trio.move_on_at(next_beat):
                await self._wake.wait()
            self._wake = trio.Event()
            changed, self._dirty = self._dirty, set()
            recheck, self._recheck = self._recheck, set()
            beat = trio.current_time() >= next_beat
            if beat:
                next_beat = trio.current_time() + interval
            write = set(changed)
            if beat:
                write.update(self._groups.presence_groups())
            try:
                await self._write(client, write, changed)
            except REDIS_DOWN as exc:
                logger.warning("presence not written to Redis at %s: %s", self._url, exc)
                if not beat:
                    self._dirty |= changed  # the next heartbeat writes it again
            look = changed | recheck | (set(self._groups.presence_groups()) if beat else set())
            for group in sorted(look):
                await self._announce(client, group)

    async def _write(
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
                key = self.key(group, origin)
                index = self.index_key(group)
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
                    pipe.publish(self._channel(group), encode_envelope("", kind=KIND_PRESENCE))
        # Only once Redis has it all: shutdown cancels this task as soon as the last
        # connection has left, often mid-pipeline, and remove() must then still delete the
        # key and tell the others (a TTL of minutes would keep the member shown).
        self._written.difference_update(emptied)

    async def remove(self) -> None:
        """At shutdown: remove this process's presence at once (rather than after the TTL)
        and tell the other processes to look again. Call it shielded, with a deadline."""
        # On a client of its own: the serving client's connection pool runs its connections
        # in a task group that the shutdown has cancelled (a new connection there dies at
        # once with "Connection lost!"), and the presence task's cancelled pipeline has just
        # discarded the connection it used.
        origin = process_origin().decode()
        groups, self._written = sorted(self._written), set()
        if not groups:
            return
        async with self._open_client() as client, client.pipeline(transaction=False) as pipe:
            for group in groups:
                pipe.delete([self.key(group, origin)])
                pipe.srem(self.index_key(group), [origin])
                pipe.publish(self._channel(group), encode_envelope("", kind=KIND_PRESENCE))

    async def _announce(self, client: coredis.Redis[bytes], group: str) -> None:
        if group not in self._groups.presence_groups():
            self._announced.pop(group, None)
            return
        try:
            members = await self.members(client, group)
        except BrokerError:
            members = self._groups.presence(group)
        if self._announced.get(group) == members:
            return
        self._announced[group] = members
        try:
            self._groups.announce(group, members)
        except Exception:  # an app's announce renderer: never stop the broker
            logger.exception("announcing presence in group %s failed", group)
