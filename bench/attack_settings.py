"""The chatroom example's settings for ``python -m bench.attacks``: the example as shipped, plus
the limits the attacks probe and one ticket-protected namespace (``bench.attack_handlers``).

Environment (set by ``bench.attacks`` per server start):

- ``ATTACK_MAX_CONNECTIONS``: ``WEBSOCKET_MAX_CONNECTIONS`` (unset: no limit).
- ``ATTACK_CACHE_DIR``: the directory of the file-based cache the tickets are consumed in.
- everything ``chatroom.settings`` reads (``DATABASE_URL``, ``CHAT_RATE_LIMIT``, ...).
"""

from __future__ import annotations

import os
import tempfile

from chatroom.settings import *  # noqa: F403 (the example's settings, unchanged)

_max = os.environ.get("ATTACK_MAX_CONNECTIONS", "")
WEBSOCKET_MAX_CONNECTIONS = int(_max) if _max else None
WEBSOCKET_HANDLERS = ["bench.attack_handlers"]
# Tickets are consumed in a cache every process shares (a per-process one is check W090).
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
        "LOCATION": os.environ.get("ATTACK_CACHE_DIR", tempfile.gettempdir() + "/attack-cache"),
    }
}
