"""Settings of the Channels project; ``BENCH_SEND_QUEUE_SIZE`` sets the in-memory channel
layer's per-channel capacity (messages), matching trio_djws' send queue."""

from __future__ import annotations

import os

SECRET_KEY = "bench-only-not-a-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = ["channels"]  # daphne is run as a program, not an app
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "bench.app.benchapp.urls"
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True
ASGI_APPLICATION = "bench.channels_app.asgi.application"
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels.layers.InMemoryChannelLayer",
        "CONFIG": {"capacity": int(os.environ.get("BENCH_SEND_QUEUE_SIZE", "100"))},
    }
}
