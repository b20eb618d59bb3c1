"""Internal: the handshake's ``Origin`` check (set ``WEBSOCKET_ALLOWED_ORIGINS``).

Origin validation against cross-site WebSocket hijacking (RFC 6455 §10.2).

Browsers always send ``Origin`` on a WebSocket handshake. It must match
``WEBSOCKET_ALLOWED_ORIGINS`` (full origins such as ``"https://example.com"``, or ``"*"``);
when that setting is None the origin's host is checked against ``ALLOWED_HOSTS`` the way
Django validates ``Host`` (as Channels' ``AllowedHostsOriginValidator`` does, with Django's
DEBUG defaults of ``.localhost``, ``127.0.0.1`` and ``[::1]``). A handshake with no Origin
(a non-browser client) passes unless ``WEBSOCKET_REQUIRE_ORIGIN = True``.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from django.conf import settings
from django.http.request import validate_host

from .conf import get_settings

__all__: list[str] = []


def allowed_hosts() -> list[str]:
    """``ALLOWED_HOSTS``, or with ``DEBUG`` and none set Django's own development defaults
    (``.localhost``, ``127.0.0.1``, ``[::1]``): the hosts an ``Origin`` may name."""
    hosts = list(settings.ALLOWED_HOSTS)
    if settings.DEBUG and not hosts:
        hosts = [".localhost", "127.0.0.1", "[::1]"]
    return hosts


def origin_allowed(origin: str | None) -> bool:
    """Whether a handshake with this ``Origin`` header value may proceed.

    Args:
        origin: the header value, or None when the header is absent.

    Returns:
        True to go on; False means the handshake gets HTTP 403.
    """
    config = get_settings()
    if origin is None:
        return not config.require_origin
    allowed = config.allowed_origins
    if allowed is not None:
        return "*" in allowed or origin.rstrip("/") in {o.rstrip("/") for o in allowed}
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        return False
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    return validate_host(host, allowed_hosts())
