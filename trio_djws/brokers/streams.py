"""Internal: group history of ``trio_djws.brokers.RedisBroker``.

Group history in Redis: per group a stream and a small meta key, written by one Lua script.

Keys (``<prefix>`` is ``WEBSOCKET_BROKER['CONFIG']['prefix']``):

- ``<prefix>:history:<group>``: a stream with one entry per message, ID ``0-<offset>``
  (so ``XRANGE key (0-<since> +`` reads exactly what a member missed), fields ``k`` (the
  envelope kind) and ``d`` (the payload); trimmed to the group's size with an exact
  ``MAXLEN``;
- ``<prefix>:history-meta:<group>``: a hash with ``epoch`` and ``offset`` (the last one).

``APPEND_SCRIPT`` runs atomically in Redis: it makes a new epoch if the history was lost
(both keys gone: expired, deleted, ``FLUSHALL``, a restart without persistence; or only one
of the two left), increments the offset, ``XADD``s the entry, trims it, refreshes the
``EXPIRE`` of both keys and ``PUBLISH``es the envelope with its position. The server's
coredis client and redis-py (``publish()`` from other processes) run the same script, so
they share one sequence of offsets. ``READ_SCRIPT`` reads the position, the first entry
really kept and, when that covers ``since``, the entries after it, in one step.

Redis Lua scripts cannot make random numbers that differ between runs, so the caller sends
a fresh epoch with every call; the script uses it only when it starts a new history.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Final

from coredis.commands.script import Script

from ..history import HistoryPolicy, Position
from ..typing import Message
from .handover import Entry, HistoryRead
from .ring import new_epoch

if TYPE_CHECKING:
    import coredis
    import redis

__all__: list[str] = []

# KEYS[1] stream, KEYS[2] meta; ARGV[1] TTL (seconds), ARGV[2] a fresh epoch.
_ENSURE: Final = """
local function ensure()
  local meta = redis.call('HMGET', KEYS[2], 'epoch', 'offset')
  local epoch, offset = meta[1], tonumber(meta[2])
  if (not epoch) or (not offset) or (offset > 0 and redis.call('EXISTS', KEYS[1]) == 0) then
    -- never written, expired, deleted, flushed, or only one key left: a new history
    redis.call('DEL', KEYS[1])
    redis.call('HSET', KEYS[2], 'epoch', ARGV[2], 'offset', 0)
    redis.call('EXPIRE', KEYS[2], ARGV[1])
    return ARGV[2], 0
  end
  return epoch, offset
end
"""

APPEND_SCRIPT: Final = (
    _ENSURE
    + """
-- ARGV[3] MAXLEN (messages), ARGV[4] kind, ARGV[5] payload, ARGV[6] Redis channel,
-- ARGV[7] envelope head (everything before the position)
local epoch, offset = ensure()
offset = offset + 1
redis.call('HSET', KEYS[2], 'offset', offset)
redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[3], '0-' .. offset, 'k', ARGV[4], 'd', ARGV[5])
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[1])
local position = epoch .. ':' .. offset
redis.call('PUBLISH', ARGV[6], ARGV[7] .. string.char(#position) .. position .. ARGV[5])
return {epoch, offset}
"""
)

READ_SCRIPT: Final = (
    _ENSURE
    + """
-- ARGV[3] the epoch of since ('' for none), ARGV[4] the offset of since
local epoch, offset = ensure()
local first = offset + 1
local head = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
if #head > 0 then first = tonumber(string.sub(head[1][1], 3)) end
local out = {epoch, offset, first}
local since = tonumber(ARGV[4])
if ARGV[3] == epoch and first <= since + 1 and since <= offset then
  for _, entry in ipairs(redis.call('XRANGE', KEYS[1], '(0-' .. since, '+')) do
    table.insert(out, tonumber(string.sub(entry[1], 3)))
    table.insert(out, entry[2][2])
    table.insert(out, entry[2][4])
  end
end
return out
"""
)

_APPEND: Final = Script[bytes](None, APPEND_SCRIPT)
_READ: Final = Script[bytes](None, READ_SCRIPT)

Render = Callable[[Position, bytes, bytes], Message]
"""Builds a member's message from its position, envelope kind and payload."""


def stream_key(prefix: str, group: str) -> str:
    """The stream of ``group``'s history: ``<prefix>:history:<group>``."""
    return f"{prefix}:history:{group}"


def meta_key(prefix: str, group: str) -> str:
    """The meta hash (``epoch``, ``offset``) of ``group``: ``<prefix>:history-meta:<group>``."""
    return f"{prefix}:history-meta:{group}"


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _append_args(
    policy: HistoryPolicy, kind: bytes, payload: bytes, channel: str, head: bytes
) -> list[str | bytes | int]:
    return [math.ceil(policy.ttl), new_epoch(), policy.size, kind, payload, channel, head]


def _position(reply: object) -> Position:
    assert isinstance(reply, list | tuple) and len(reply) == 2, reply
    return Position(_text(reply[0]), int(reply[1]))


def _history_read(reply: object, render: Render) -> HistoryRead:
    assert isinstance(reply, list | tuple) and len(reply) >= 3, reply
    items: Sequence[object] = reply
    position = Position(_text(items[0]), int(str(items[1])))
    entries: list[Entry] = []
    for i in range(3, len(items) - 2, 3):
        offset = int(str(items[i]))
        kind, payload = items[i + 1], items[i + 2]
        assert isinstance(kind, bytes) and isinstance(payload, bytes)
        entries.append(Entry(offset, render(Position(position.epoch, offset), kind, payload)))
    return HistoryRead(position, int(str(items[2])), entries)


class RedisHistory:
    """Reads and writes the history keys of one prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def keys(self, group: str) -> list[str]:
        """The stream and the meta key of ``group``."""
        return [stream_key(self.prefix, group), meta_key(self.prefix, group)]

    async def append(
        self,
        client: coredis.Redis[bytes],
        group: str,
        policy: HistoryPolicy,
        *,
        kind: bytes,
        payload: bytes,
        channel: str,
        head: bytes,
    ) -> Position:
        """Run ``APPEND_SCRIPT``: keep the message and publish its envelope (``head``, then
        the position's length as one byte, the position ``<epoch>:<offset>``, the payload).

        Returns:
            The message's position.

        Raises:
            coredis.exceptions.RedisError, OSError: Redis could not be reached.
        """
        args = _append_args(policy, kind, payload, channel, head)
        return _position(await _APPEND(self.keys(group), args, client=client))

    def append_sync(
        self,
        client: redis.Redis,
        group: str,
        policy: HistoryPolicy,
        *,
        kind: bytes,
        payload: bytes,
        channel: str,
        head: bytes,
    ) -> Position:
        """``append`` with redis-py's sync client (the same script).

        Raises:
            redis.exceptions.RedisError: Redis could not be reached.
        """
        script = client.register_script(APPEND_SCRIPT)
        args = _append_args(policy, kind, payload, channel, head)
        return _position(script(keys=self.keys(group), args=args))

    async def read(
        self,
        client: coredis.Redis[bytes],
        group: str,
        policy: HistoryPolicy,
        since: Position | None,
        render: Render,
    ) -> HistoryRead:
        """Run ``READ_SCRIPT``: the position, the first offset kept and, when ``since`` is
        covered, every entry after it rendered for members (starts a new history if the
        group had none or lost it).

        Raises:
            coredis.exceptions.RedisError, OSError: Redis could not be reached.
        """
        args: list[str | int] = [
            math.ceil(policy.ttl),
            new_epoch(),
            since.epoch if since is not None else "",
            since.offset if since is not None else 0,
        ]
        return _history_read(await _READ(self.keys(group), args, client=client), render)
