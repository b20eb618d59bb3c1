"""Settings for ``manage.py serve`` subprocesses in tests/test_servers_hypercorn.py.

Small timeouts keep shutdown tests fast. ``LAUNCHER_TEST_SETTINGS`` (a JSON object of setting
name to value) overrides settings per test, e.g. ``{"WEBSOCKET_BROKER": {...}}``.
"""

from __future__ import annotations

import json
import os

from tests.settings import *  # noqa: F403
from tests.settings import WEBSOCKET_HANDLERS

WEBSOCKET_HANDLERS = [*WEBSOCKET_HANDLERS, "tests.launcher_handlers"]
WEBSOCKET_SHUTDOWN_TIMEOUT = 3  # seconds
WEBSOCKET_TCP_USER_TIMEOUT = 2  # seconds
WEBSOCKET_PING_INTERVAL = 1  # seconds
WEBSOCKET_SEND_QUEUE_SIZE = 128  # messages: a burst of 100 sends never waits

globals().update(json.loads(os.environ.get("LAUNCHER_TEST_SETTINGS", "{}")))
