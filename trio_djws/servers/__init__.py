"""Internal: the servers behind ``manage.py`` and ``trio_djws.server`` / ``trio_djws.wsgi``.

Servers: the processes that listen on sockets and hand connections to the core.

- ``sockets``: ``--bind`` parsing and listening sockets with ``TCP_USER_TIMEOUT``.
- ``lifecycle``: garbage-collector tuning, SIGINT/SIGTERM, the drain (1001 after flushing).
- ``hypercorn``: the Hypercorn driver; the only module that touches Hypercorn's internals.
- ``serve``: ``manage.py serve``, the process around the Hypercorn driver.
- ``workers``: the worker processes of ``manage.py serve --workers N``.
- ``standalone``: the standalone WebSocket server on an engine (``manage.py runwebsocket``,
  also importable as ``trio_djws.server``).
- ``wsgi``: the WSGI side-thread server (documented as ``trio_djws.wsgi``).

Importing this package imports none of them.
"""

from __future__ import annotations

__all__: list[str] = []
