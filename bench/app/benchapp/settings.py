"""Settings of the benchmark project; the runner chooses through environment variables:

- ``BENCH_SEND_QUEUE_SIZE``: ``WEBSOCKET_SEND_QUEUE_SIZE`` (messages; default 64).
- ``BENCH_REDIS_URL``: when set, ``WEBSOCKET_BROKER`` is ``trio_djws.brokers.RedisBroker`` on
  that URL (prefix ``bench``); else the in-memory broker.
- ``BENCH_ENGINE``: ``WEBSOCKET_ENGINE`` for ``manage.py runwebsocket`` (the standalone
  server), when that command exists.
- ``BENCH_COMPRESSION``: ``WEBSOCKET_COMPRESSION`` (``deflate``; default off).
- ``BENCH_HISTORY``: when set, the groups ``bench*`` keep that many messages of history
  (``WEBSOCKET_GROUP_HISTORY``, TTL 600 s).
"""

from __future__ import annotations

import os

SECRET_KEY = "bench-only-not-a-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = ["trio_djws", "benchapp"]
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "benchapp.urls"
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True

# No Django middleware on WebSockets (sessions/auth need a database): the Channels app has no
# AuthMiddlewareStack either.
WEBSOCKET_MIDDLEWARE: list[str] = []
WEBSOCKET_SEND_QUEUE_SIZE = int(os.environ.get("BENCH_SEND_QUEUE_SIZE", "64"))
if os.environ.get("BENCH_REDIS_URL"):
    WEBSOCKET_BROKER = {
        "BACKEND": "trio_djws.brokers.RedisBroker",
        "CONFIG": {"url": os.environ["BENCH_REDIS_URL"], "prefix": "bench"},
    }
if os.environ.get("BENCH_HISTORY"):
    WEBSOCKET_GROUP_HISTORY = {"bench*": {"SIZE": int(os.environ["BENCH_HISTORY"]), "TTL": 600}}
if os.environ.get("BENCH_ENGINE"):
    WEBSOCKET_ENGINE = os.environ["BENCH_ENGINE"]
if os.environ.get("BENCH_COMPRESSION"):
    WEBSOCKET_COMPRESSION = os.environ["BENCH_COMPRESSION"]

# Connects and closes are logged at INFO; the benchmark measures the server, not its log.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"trio_djws": {"handlers": ["console"], "level": "WARNING"}},
}

if os.environ.get("BENCH_TRACEMALLOC"):
    # Diagnosis of per-connection memory: ``kill -USR1`` writes the top allocation sites.
    import signal
    import tracemalloc

    tracemalloc.start(8)

    def _dump(signum: int, frame: object) -> None:
        snapshot = tracemalloc.take_snapshot()
        with open(os.environ["BENCH_TRACEMALLOC"], "w") as out:
            # Each allocation charged to the innermost frame of trio_djws, hypercorn or the
            # app, so that trio's and h11's objects count for whoever made them.
            owners: dict[str, list[int]] = {}
            for stat in snapshot.statistics("traceback"):
                owner = str(stat.traceback[-1])
                for frame in stat.traceback:  # oldest first
                    if "trio_djws" in frame.filename or "/hypercorn/" in frame.filename:
                        owner = f"{frame.filename}:{frame.lineno}"
                entry = owners.setdefault(owner, [0, 0])
                entry[0] += stat.size
                entry[1] += stat.count
            for owner, (size, count) in sorted(owners.items(), key=lambda i: -i[1][0])[:50]:
                out.write(f"{size / 1024:10.1f} KiB {count:8d} {owner}\n")

    signal.signal(signal.SIGUSR1, _dump)
