"""The Channels ASGI application: ``bench.channels_app.asgi:application`` (run from the
repository root under Daphne, uvicorn or Hypercorn's asyncio worker)."""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.channels_app.settings")

import django

django.setup()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

from .consumers import BroadcastConsumer, EchoConsumer  # noqa: E402

application = ProtocolTypeRouter(
    {
        "websocket": URLRouter(
            [
                path("echo/", EchoConsumer.as_asgi()),
                path("broadcast/", BroadcastConsumer.as_asgi()),
            ]
        )
    }
)
