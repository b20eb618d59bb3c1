"""Channels consumers equivalent to trio_djws' EchoHandler and BroadcastHandler."""

from __future__ import annotations

from typing import Any

from channels.generic.websocket import AsyncWebsocketConsumer

__all__ = ["BroadcastConsumer", "EchoConsumer"]

GROUP = "bench"


class EchoConsumer(AsyncWebsocketConsumer):
    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        await self.send(text_data=text_data, bytes_data=bytes_data)


class BroadcastConsumer(AsyncWebsocketConsumer):
    groups = [GROUP]  # joined in websocket_connect, before the accept

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        await self.channel_layer.group_send(
            GROUP, {"type": "relay", "text": text_data, "bytes": bytes_data}
        )

    async def relay(self, event: dict[str, Any]) -> None:
        await self.send(text_data=event["text"], bytes_data=event["bytes"])
