"""Pins the public API (as trio's _tests/test_exports.py does); changes need a changelog line."""

from __future__ import annotations

import trio_djws


def test_public_names() -> None:
    assert trio_djws.__all__ == [
        "BaseMixin",
        "BaseWSClass",
        "Block",
        "BrokerError",
        "CloseCode",
        "ConfigurationError",
        "ConnectionClosed",
        "DjangoMiddlewareMixin",
        "JoinResult",
        "Message",
        "Namespace",
        "Position",
        "Reject",
        "TrioDjwsError",
        "WebSocket",
        "database_sync_to_thread",
        "presence",
        "publish",
        "publish_json",
        "publish_on_commit",
        "send_group_json",
        "send_to_group",
        "to_thread",
        "user_group",
    ]
    for name in trio_djws.__all__:
        assert hasattr(trio_djws, name)


def test_close_codes_come_from_wsproto() -> None:
    assert trio_djws.CloseCode.POLICY_VIOLATION == 1008
    assert trio_djws.CloseCode.INTERNAL_ERROR == 1011
