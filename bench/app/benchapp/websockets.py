"""The benchmark's app protocol on trio_djws: ``/echo/`` echoes, ``/broadcast/`` relays every
text message unchanged to all members of one group (the sender included).

trio_djws imports this module at startup (every installed app's ``websockets`` module).
"""

from __future__ import annotations

from trio_djws.handlers import BroadcastHandler, EchoHandler

from trio_djws import Namespace

__all__ = ["Broadcast", "Echo"]


@Namespace("/echo/")
class Echo(EchoHandler):
    pass


@Namespace("/broadcast/")
class Broadcast(BroadcastHandler):
    group = "bench"
