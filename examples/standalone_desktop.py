"""WebSockets without a Django project (djwebsockets' "desktop application").

Django settings are configured in code, handlers are registered with ``@Namespace`` and
``trio_djws.server.serve`` serves them: no ``manage.py``, no settings module, no HTTP.

    python examples/standalone_desktop.py [--bind HOST:PORT] [--engine trio_websocket]

Then connect to ``ws://127.0.0.1:8001/echo/`` (every message comes back) or
``ws://127.0.0.1:8001/rooms/<name>/`` (every message goes to everyone in the room).
Ctrl-C (SIGINT) or SIGTERM closes every connection with 1001 after its queued messages, then
the program exits.
"""

from __future__ import annotations

import argparse
import signal
import sys
from functools import partial

import django
import trio
from django.conf import settings

settings.configure(
    DEBUG=False,
    ALLOWED_HOSTS=["127.0.0.1", "localhost"],  # the Origin check derives from these
    USE_TZ=True,
    INSTALLED_APPS=["trio_djws"],
    WEBSOCKET_SHUTDOWN_TIMEOUT=5,  # seconds
    LOGGING={
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {"console": {"class": "logging.StreamHandler"}},
        "loggers": {"trio_djws": {"handlers": ["console"], "level": "INFO"}},
    },
)
django.setup()

# After django.setup(): the handler classes use Django (QueryDict, the JSON encoder).
from trio_djws.handlers import BroadcastHandler  # noqa: E402

from trio_djws import BaseWSClass, Namespace  # noqa: E402
from trio_djws.server import format_address, serve  # noqa: E402
from trio_djws.servers.sockets import parse_bind  # noqa: E402
from trio_djws.typing import Message  # noqa: E402
from trio_djws.websocket import WebSocket  # noqa: E402


@Namespace("/echo/")
class Echo(BaseWSClass):
    async def on_connect(self, websocket: WebSocket, path: str) -> None:
        await websocket.send_json({"hello": "desktop"})

    async def on_message(self, websocket: WebSocket, message: Message) -> None:
        await websocket.send(message)


@Namespace("/rooms/<slug:group>/")
class Room(BroadcastHandler):
    """Joins the room named in the path and relays each message to all of its members."""


async def main(host: str, port: int, engine: str | None) -> None:
    async with trio.open_nursery() as nursery:
        addresses = await nursery.start(partial(serve, host, port, engine=engine))
        for address in addresses:
            print(f"Listening on {format_address(address)}", flush=True)
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                break
        nursery.cancel_scope.cancel()  # serve() drains: 1001 after each send queue is flushed


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bind", default="127.0.0.1:8001", metavar="HOST:PORT")
    parser.add_argument("--engine", choices=["websockets", "trio_websocket"])
    options = parser.parse_args()
    try:
        bind_host, bind_port = parse_bind(options.bind)
    except ValueError as exc:
        parser.error(str(exc))
    trio.run(main, bind_host, bind_port, options.engine)
    sys.exit(0)
