"""Internal: groups with history (``WEBSOCKET_GROUP_HISTORY``) on the Redis broker.

``publish`` runs the append script of ``trio_djws.brokers.streams`` (the message is kept in
the group's stream at the next offset and published with its position, version-2 envelope),
and every process, the publishing one included, delivers it from its subscription, so every
member gets the group's messages in offset order. ``deliver`` remembers the last offset
delivered per group: an offset that jumps (this process missed messages, e.g. while Redis
was away) is filled from the stream with one read per group and process, then fanned out;
only when the stream no longer holds them (or the epoch changed: the history was lost) do the
group's members get ``on_resync``. A publish while Redis is unreachable is retried for
``WEBSOCKET_HISTORY_PUBLISH_TIMEOUT`` seconds, then raises ``BrokerError``: never dropped
silently.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from ...conf import get_settings
from ...exceptions import BrokerError
from ...history import HistoryPolicy, Position, history_policy, json_with_position
from ...typing import Message
from ..envelope import KIND_BYTES, KIND_JSON, KIND_TEXT, Envelope, envelope_head, sync_origin
from ..handover import HistoryRead
from ..streams import RedisHistory
from ..sync_clients import sync_client
from .client import BACKOFF_FIRST, BACKOFF_MAX, COMMAND_TIMEOUT, REDIS_DOWN

if TYPE_CHECKING:
    import coredis

    from ...groups import Groups

__all__: list[str] = []

logger = logging.getLogger(__name__)


def kind_and_payload(message: Message, json_object: bool) -> tuple[bytes, bytes]:
    """The envelope kind and the payload bytes of ``message``."""
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


def publish_sync(
    url: str,
    prefix: str,
    channel: str,
    group: str,
    policy: HistoryPolicy,
    message: Message,
    json_object: bool,
) -> None:
    """``publish()`` outside a server, to a history group: the append script through
    redis-py, retried with backoff for ``WEBSOCKET_HISTORY_PUBLISH_TIMEOUT`` seconds (a
    blocking call: in a plain thread or process, never on the trio thread).

    Raises:
        BrokerError: Redis stayed unreachable; the message was not sent.
    """
    import redis.exceptions

    kind, payload = kind_and_payload(message, json_object)
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
                channel=channel,
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


class RedisHistoryGroups:
    """The history groups of one Redis broker: publish, read and in-order delivery.

    Args:
        groups: the server's group registry.
        prefix: of every Redis key and channel.
        url: of Redis, for log lines and errors.
        channel: the Redis channel of a group.
        resync: called with a group whose members must get ``on_resync``.

    Attributes:
        recovered: messages filled in from the history after a gap.
    """

    def __init__(
        self,
        groups: Groups,
        *,
        prefix: str,
        url: str,
        channel: Callable[[str], str],
        resync: Callable[[str], None],
    ) -> None:
        self._groups = groups
        self._prefix = prefix
        self._url = url
        self._channel = channel
        self._resync = resync
        self._streams = RedisHistory(prefix)
        self._told_version_2 = False
        # The last position delivered here, per history group subscribed.
        self._last: dict[str, Position] = {}
        self.recovered = 0

    async def publish(
        self,
        client: coredis.Redis[bytes],
        group: str,
        policy: HistoryPolicy,
        message: Message,
        json_object: bool,
    ) -> None:
        """Append ``message`` to the group's stream (which publishes it with its position),
        retried with backoff while Redis is unreachable.

        Raises:
            BrokerError: Redis stayed unreachable for ``WEBSOCKET_HISTORY_PUBLISH_TIMEOUT``
                seconds; the message was not sent.
        """
        kind, payload = kind_and_payload(message, json_object)
        head = envelope_head(kind)
        if not self._told_version_2:
            # Once per broker: during a rolling upgrade, older processes drop these.
            self._told_version_2 = True
            logger.info(
                "history groups travel in envelope version 2: processes of a trio-djws "
                "without group history drop them (one warning each: 'expected an envelope "
                "of version 1, got 2'); upgrade every process sharing prefix %r",
                self._prefix,
            )
        timeout = get_settings().history_publish_timeout
        delay = BACKOFF_FIRST
        failure: BaseException | None = None
        with trio.move_on_after(timeout):
            while True:
                try:
                    await self._streams.append(
                        client,
                        group,
                        policy,
                        kind=kind,
                        payload=payload,
                        channel=self._channel(group),
                        head=head,
                    )
                except REDIS_DOWN as exc:
                    failure = exc
                    await trio.sleep(delay)  # retry with backoff until the deadline
                    delay = min(delay * 2, BACKOFF_MAX)
                else:
                    return
        raise BrokerError(
            f"could not publish to history group {group!r}: Redis at {self._url} unreachable "
            f"for {timeout} s (WEBSOCKET_HISTORY_PUBLISH_TIMEOUT): {failure}"
        )

    async def read(
        self,
        client: coredis.Redis[bytes],
        group: str,
        policy: HistoryPolicy,
        after: Position | None,
    ) -> HistoryRead:
        """The group's stream after ``after``, rendered as its members receive it."""
        return await self._streams.read(client, group, policy, after, lambda *a: render(policy, *a))

    def last(self, group: str) -> Position | None:
        """The last position delivered here in ``group``, if any since it was subscribed."""
        return self._last.get(group)

    def forget(self, group: str) -> None:
        """This process no longer subscribes to ``group``."""
        self._last.pop(group, None)

    async def deliver(self, client: coredis.Redis[bytes], group: str, envelope: Envelope) -> None:
        """A history group's message from the subscription: delivered by every process (the
        publisher's too), in offset order; a jump is filled from the stream first, once for
        all local members."""
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
                await self.catch_up(client, group, policy, last, position.offset - 1)
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

    async def catch_up(
        self,
        client: coredis.Redis[bytes],
        group: str,
        policy: HistoryPolicy,
        last: Position,
        until: int | None,
    ) -> None:
        """One read of the stream after ``last`` (up to offset ``until``, or everything),
        fanned out to the local members; ``on_resync`` when the stream no longer holds it."""
        try:
            with trio.fail_after(COMMAND_TIMEOUT):
                read = await self.read(client, group, policy, last)
        except (*REDIS_DOWN, trio.TooSlowError) as exc:
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
