"""Per-connection message rate limits: one token bucket per connection.

``WEBSOCKET_RATE_LIMIT`` (messages per second, None: no limit) and ``WEBSOCKET_RATE_BURST``
(messages) are the default for every handler; a handler overrides them with its ``rate_limit``
class attribute (a ``RateLimit``, or None for no limit). Each connection starts with a full
bucket of ``burst`` tokens, refilled at ``per_second`` tokens per second up to ``burst``; a
message takes one token. A message that finds the bucket empty is not handled:
``BaseWSClass.on_rate_limit`` runs instead, which closes the connection with 1008 "rate limit"
by default (RFC 6455 §7.4.1, policy violation); a handler may override it to drop the message
with an error frame of its own protocol instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from .conf import get_settings

__all__ = ["FROM_SETTINGS", "RateLimit", "TokenBucket", "rate_limit_of"]

FROM_SETTINGS: Final = "settings"  # BaseWSClass.rate_limit's default: the WEBSOCKET_RATE_* pair


@dataclass(frozen=True, slots=True)
class RateLimit:
    """A message rate limit for one connection.

    Attributes:
        per_second: messages per second a connection may send on average (> 0).
        burst: messages it may send at once above that rate (>= 1): the bucket's size.

    Raises:
        ValueError: ``per_second`` is not > 0 or ``burst`` not an int >= 1.
    """

    per_second: float
    burst: int

    def __post_init__(self) -> None:
        if isinstance(self.per_second, bool) or not (
            isinstance(self.per_second, int | float) and self.per_second > 0
        ):
            raise ValueError(f"RateLimit.per_second must be a number > 0, got {self.per_second!r}")
        if isinstance(self.burst, bool) or not (isinstance(self.burst, int) and self.burst >= 1):
            raise ValueError(f"RateLimit.burst must be an int >= 1, got {self.burst!r}")


class TokenBucket:
    """The token bucket of one connection; times are ``trio.current_time()`` seconds."""

    __slots__ = ("_burst", "_last", "_rate", "_tokens")

    def __init__(self, limit: RateLimit, now: float) -> None:
        self._rate = float(limit.per_second)
        self._burst = float(limit.burst)
        self._tokens = self._burst
        self._last = now

    def take(self, now: float) -> bool:
        """Take one token if there is one (refilled for the time since the last call);
        returns whether it was taken. Sync, never blocks."""
        self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


def rate_limit_of(limit: RateLimit | Literal["settings"] | None) -> RateLimit | None:
    """The limit a handler's ``rate_limit`` attribute stands for: itself, or for
    ``FROM_SETTINGS`` (the default) ``WEBSOCKET_RATE_LIMIT``/``WEBSOCKET_RATE_BURST``; None
    means no limit."""
    if limit != FROM_SETTINGS:
        return limit if isinstance(limit, RateLimit) else None
    settings = get_settings()
    if settings.rate_limit is None:
        return None
    return RateLimit(settings.rate_limit, settings.rate_burst)
