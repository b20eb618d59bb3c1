"""Exceptions raised by trio_djws.

The tree, as httpx draws its own::

    TrioDjwsError
    ├── ConfigurationError   also a django ImproperlyConfigured: a bad WEBSOCKET_* value,
    │                        a namespace registered twice
    ├── Reject(status=403)   raised in on_connect or a mixin: the handshake gets that HTTP status
    ├── Block                raised in a mixin hook: this event stops here
    ├── ConnectionClosed     I/O on a closing or closed connection; carries code and reason
    │   └── SlowConsumer     a transport's write deadline passed: close with 1008
    └── BrokerError          the broker (e.g. Redis) is unreachable or answered badly

Only ``serve_connection`` turns a hook's exception into a close code (1011); everywhere else
exceptions propagate.
"""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured
from wsproto.frame_protocol import CloseReason

__all__ = [
    "Block",
    "BrokerError",
    "ConfigurationError",
    "ConnectionClosed",
    "Reject",
    "SlowConsumer",
    "TrioDjwsError",
]


class TrioDjwsError(Exception):
    """Base class of every exception this library raises on purpose."""


class ConfigurationError(TrioDjwsError, ImproperlyConfigured):
    """A ``WEBSOCKET_*`` setting or a registration is wrong; the message names the value."""


class Reject(TrioDjwsError):
    """Refuse the handshake with an HTTP status (RFC 6455 §4.2.2: any non-101 status).

    Raise it from ``on_connect`` or a mixin's ``on_connect``. Nothing is accepted, so the
    client sees the status (default 403) and no close frame.

    Args:
        status: the HTTP status code of the refusal, 300..599 (a 3xx is a Django middleware's
            redirect: it reaches the client without its ``Location`` header).
        reason: a short text for the server log (not sent to the client).
    """

    def __init__(self, status: int = 403, reason: str = "") -> None:
        if not 300 <= status <= 599:
            raise ValueError(f"Reject status must be an HTTP status 300..599, got {status!r}")
        super().__init__(status, reason)
        self.status = status
        self.reason = reason

    def __str__(self) -> str:
        return f"handshake rejected with HTTP {self.status}" + (
            f": {self.reason}" if self.reason else ""
        )


class Block(TrioDjwsError):
    """Raised in a mixin hook: the current event stops there.

    In ``on_connect`` it rejects the handshake with HTTP 403; in ``on_message`` the message
    is dropped and no later mixin or handler sees it.
    """


class ConnectionClosed(TrioDjwsError):
    """The connection is closing or closed; no more I/O is possible.

    Args:
        code: the close code (RFC 6455 §7.4): 1000 normal, 1001 going away, 1006 the peer
            vanished (also what Hypercorn reports for every client close), 1008 policy, ...
        reason: the close reason text, possibly empty.
    """

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason

    def __str__(self) -> str:
        return f"connection closed with code {self.code}" + (
            f" ({self.reason})" if self.reason else ""
        )


class SlowConsumer(ConnectionClosed):
    """Raised by a transport's ``send`` whose write deadline (``WEBSOCKET_SEND_TIMEOUT``
    seconds without the peer taking any data) passed: the message was not written whole, but
    the transport can still send the close frame (the rest of a frame cut short goes first).
    The connection runtime then closes with 1008 "slow consumer" (RFC 6455 §7.4.1) and gives
    the close frame ``WEBSOCKET_CLOSE_TIMEOUT`` seconds. Handlers never see it: their
    ``send()`` raises a plain ``ConnectionClosed``."""

    def __init__(self) -> None:
        super().__init__(CloseReason.POLICY_VIOLATION, "slow consumer")


class BrokerError(TrioDjwsError):
    """The broker is unreachable or broke its protocol; logged and retried, never fatal."""
