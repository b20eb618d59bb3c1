"""Connection limits checked on every handshake, on every transport (``serve_websocket``).

- ``WEBSOCKET_MAX_CONNECTIONS``: WebSockets per process (None: no limit). A handshake above it
  gets HTTP 503.
- ``WEBSOCKET_MAX_CONNECTIONS_PER_IP``: WebSockets per client IP address (None: no limit),
  503 above it. The address is the TCP peer's, or, when the peer is one of
  ``WEBSOCKET_TRUSTED_PROXIES``, the last address in ``X-Forwarded-For`` that is not a
  trusted proxy (opt-in: an untrusted peer could write any ``X-Forwarded-For``).
- ``WEBSOCKET_FD_HEADROOM``: file descriptors kept free below the process's ``RLIMIT_NOFILE``
  (Linux, where ``/proc/self/fd`` counts them). A handshake arriving with fewer free gets
  HTTP 503 instead of the server running into ``EMFILE`` (its accept loop would then log a
  traceback per retry and answer nothing).

Each refusal is counted (``refused``) and logged through ``peer_warning``: at most one line
per cause and minute, which says how many more were refused.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import resource
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

import trio

from .conf import get_settings
from .log import peer_warning
from .typing import WebSocketScope

__all__ = ["FD_CHECK_INTERVAL", "Limits", "client_ip", "current_limits"]

logger = logging.getLogger(__name__)

FD_CHECK_INTERVAL: Final = 1.0  # seconds between two counts of the open file descriptors


def client_ip(scope: WebSocketScope, trusted: tuple[str, ...]) -> str | None:
    """The client's IP address: the TCP peer's, or behind a trusted proxy the last
    ``X-Forwarded-For`` entry that is not itself a trusted proxy. None if unknown."""
    client = scope.get("client")
    peer = client[0] if client else None
    if peer is None or not trusted or not _in(peer, trusted):
        return peer
    forwarded: list[str] = []
    for name, value in scope["headers"]:
        if name.lower() == b"x-forwarded-for":
            forwarded.extend(p.strip() for p in value.decode("latin-1").split(","))
    for address in reversed(forwarded):
        if address and not _in(address, trusted):
            return address
    return peer


def _in(address: str, networks: tuple[str, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(n, strict=False) for n in networks)


def _open_fds() -> int | None:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return None  # not Linux: the headroom is not checked


class Limits:
    """The connection limits of one server (one per trio run, ``current_limits()``)."""

    def __init__(self) -> None:
        self.per_ip: Counter[str] = Counter()  # live WebSockets per client IP
        self.refused: Counter[str] = Counter()  # handshakes refused, per cause
        self._fds_checked = -FD_CHECK_INTERVAL  # when the descriptors were last counted
        self._fds = 0  # how many were open then
        self._live_at_count = 0  # and how many WebSockets were live
        self._fds_low = False

    def refusal(self, scope: WebSocketScope, live: int) -> str | None:
        """Why a handshake must be refused with 503 (and log it), or None. ``live``: the
        WebSockets this process serves now."""
        settings = get_settings()
        if settings.max_connections is not None and live >= settings.max_connections:
            return self._refuse(
                "max_connections",
                "rejected handshake from %s for %r with 503: WEBSOCKET_MAX_CONNECTIONS (%d) "
                "reached",
                scope,
                settings.max_connections,
            )
        if settings.max_connections_per_ip is not None:
            ip = client_ip(scope, settings.trusted_proxies)
            if ip is not None and self.per_ip[ip] >= settings.max_connections_per_ip:
                return self._refuse(
                    "max_connections_per_ip",
                    "rejected handshake from %s for %r with 503: "
                    "WEBSOCKET_MAX_CONNECTIONS_PER_IP (%d) reached for its address",
                    scope,
                    settings.max_connections_per_ip,
                )
        if settings.fd_headroom and self._few_fds(settings.fd_headroom, live):
            return self._refuse(
                "fd_headroom",
                "rejected handshake from %s for %r with 503: fewer than WEBSOCKET_FD_HEADROOM "
                "(%d) file descriptors left below RLIMIT_NOFILE",
                scope,
                settings.fd_headroom,
            )
        return None

    def _refuse(self, cause: str, msg: str, scope: WebSocketScope, limit: int) -> str:
        self.refused[cause] += 1
        client = scope.get("client")
        peer = f"{client[0]}:{client[1]}" if client else "an unknown client"
        peer_warning(logger, msg, peer, scope["path"], limit, per_interval=1)
        return cause

    def _few_fds(self, headroom: int, live: int) -> bool:
        # Counting /proc/self/fd costs a syscall per descriptor: once a second, and in between
        # only when the WebSockets opened since the last count (one descriptor each) may
        # have brought the process within ``headroom`` of its limit. Once short, a handshake
        # is refused without a count for the rest of that second.
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY:
            return False
        now = trio.current_time()
        stale = now - self._fds_checked >= FD_CHECK_INTERVAL
        if self._fds_low and not stale:
            return True
        estimate = self._fds + max(0, live - self._live_at_count)
        if stale or estimate >= soft - headroom:
            count = _open_fds()
            if count is None:
                return False
            self._fds, self._live_at_count, self._fds_checked = count, live, now
            self._fds_low = count >= soft - headroom
        return self._fds_low

    @contextmanager
    def counted(self, scope: WebSocketScope) -> Iterator[None]:
        """Count a WebSocket against its client IP while it lives (when capped per IP)."""
        settings = get_settings()
        ip = (
            client_ip(scope, settings.trusted_proxies)
            if settings.max_connections_per_ip is not None
            else None
        )
        if ip is None:
            yield
            return
        self.per_ip[ip] += 1
        try:
            yield
        finally:
            self.per_ip[ip] -= 1
            if not self.per_ip[ip]:
                del self.per_ip[ip]


_limits: trio.lowlevel.RunVar[Limits] = trio.lowlevel.RunVar("trio_djws.limits")


def current_limits() -> Limits:
    """The ``Limits`` of the server running in this trio run, made on first use."""
    try:
        return _limits.get()
    except LookupError:
        limits = Limits()
        _limits.set(limits)
        return limits
