"""Internal: how ``trio_djws.brokers.RedisBroker`` talks to Redis: its coredis client, the
names of its Redis channels, timeouts and reconnect backoff, what a Redis that is away raises,
and the broker events the instrumentation counts."""

from __future__ import annotations

from typing import Final

import coredis
import coredis.exceptions
from coredis.retry import NoRetryPolicy

from ... import instrument

__all__: list[str] = []

CONNECT_TIMEOUT: Final = 5.0  # seconds per connection attempt
# Seconds for Redis to answer a command. Without it a Redis that stops answering but keeps its
# sockets open (a network partition, a stopped process) blocks the publisher for good, and
# with it every send_to_group once the publish queue is full.
COMMAND_TIMEOUT: Final = 5.0
BACKOFF_FIRST: Final = 0.1  # seconds before the first reconnection attempt
BACKOFF_MAX: Final = 16.0  # seconds, as coredis' own pub/sub retry policy

# What an unreachable or restarting Redis raises through coredis (connection refused,
# reset, a subscribe never acknowledged).
REDIS_DOWN: Final = (coredis.exceptions.RedisError, OSError, TimeoutError)


def group_channel(prefix: str, group: str) -> str:
    """The Redis channel that carries ``group``: ``<prefix>:group:<group>``."""
    return f"{prefix}:group:{group}"


def open_client(url: str) -> coredis.Redis[bytes]:
    """A coredis client (an async context manager) with the timeouts above and no retries
    of its own: the broker's tasks retry with their backoff."""
    return coredis.Redis.from_url(
        url,
        connect_timeout=CONNECT_TIMEOUT,
        stream_timeout=COMMAND_TIMEOUT,
        retry_policy=NoRetryPolicy(),
    )


def report(event: str, count: int = 1) -> None:
    """A broker event for the instrumentation (``trio_djws.instrument``): metrics count them."""
    observer = instrument.active
    if observer is not None:
        observer.broker_event(event, count)
