"""Settings of the Celery worker the signals tests start: the test settings, with the Redis
broker of the test (``TRIO_DJWS_REDIS_URL``) so ``trigger()`` in the worker reaches windows."""

from __future__ import annotations

import os

from tests.settings import *  # noqa: F403

WEBSOCKET_BROKER = {
    "BACKEND": "trio_djws.brokers.RedisBroker",
    "CONFIG": {"url": os.environ["TRIO_DJWS_REDIS_URL"], "prefix": "trio_djws_tests"},
}
WEBSOCKET_CELERY_APP = "tests.celery_app.app"
