"""Internal: redis-py's sync clients behind ``trio_djws.publish()`` outside a server.

redis-py's sync clients, for ``publish()`` from processes and threads that run no server:
one client (a connection pool shared by threads) per process and Redis URL, the one
module-level pool (resettable with ``reset_sync_clients()`` in tests). coredis has no sync
client; redis-py's asyncio client needs asyncio.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import redis

__all__: list[str] = []

_sync_clients: dict[tuple[int, str], redis.Redis] = {}
_sync_lock = threading.Lock()


def sync_client(url: str) -> redis.Redis:
    """The process's redis-py sync client for ``url`` (a connection pool shared by threads).

    Made on first use; a forked child makes its own (sockets are not shared across a fork).
    """
    import redis

    key = (os.getpid(), url)
    with _sync_lock:
        client = _sync_clients.get(key)
        if client is None:
            client = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5)
            _sync_clients[key] = client
        return client


def reset_sync_clients() -> None:
    """Close and forget every sync client of this process (tests; after settings change)."""
    with _sync_lock:
        clients = list(_sync_clients.values())
        _sync_clients.clear()
    for client in clients:
        client.close()
