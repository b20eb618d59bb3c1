"""Internal: listening sockets for every server (not part of the API).

Listening sockets for every server: ``--bind`` parsing and sockets made here, so that they
carry ``TCP_USER_TIMEOUT`` (which Hypercorn's ``Config.create_sockets`` cannot set).

Used by ``manage.py serve`` (``trio_djws.servers.serve``), ``manage.py runwebsocket`` and
``trio_djws.wsgi`` (``trio_djws.servers.standalone``). No Hypercorn here.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Sequence
from typing import Final

from ..conf import get_settings

__all__: list[str] = []

logger = logging.getLogger(__name__)

BACKLOG: Final = 100  # connections waiting to be accepted: Hypercorn's Config.backlog default


def parse_bind(value: str) -> tuple[str, int]:
    """Parse ``HOST:PORT`` (``[::1]:PORT`` for IPv6); port 0 asks the kernel for a free one.

    Raises:
        ValueError: not ``HOST:PORT`` with a port in 0-65535.
    """
    host, sep, port = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not (port.isascii() and port.isdigit()) or int(port) > 65535:
        raise ValueError(
            f"--bind expects HOST:PORT (e.g. 127.0.0.1:8000 or [::1]:8000), got {value!r}"
        )
    return host, int(port)


def open_sockets(addresses: Sequence[tuple[str, int]]) -> list[socket.socket]:
    """Bind and listen on each ``(host, port)``, with ``SO_REUSEADDR``, a backlog of
    ``BACKLOG`` connections and ``TCP_USER_TIMEOUT`` = ``WEBSOCKET_TCP_USER_TIMEOUT`` seconds
    (Linux; None: unset).

    Accepted sockets inherit ``TCP_USER_TIMEOUT``: data unacknowledged that long (a peer gone
    or stalled at a zero window) aborts the connection. ``Config.create_sockets`` cannot set it.

    Raises:
        OSError: an address cannot be bound; the message names it. No socket is left open.
    """
    timeout = get_settings().tcp_user_timeout
    sockets: list[socket.socket] = []
    try:
        for host, port in addresses:
            sockets.append(_open_socket(host, port, BACKLOG, timeout))
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _open_socket(host: str, port: int, backlog: int, user_timeout: float | None) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as Hypercorn does
        if user_timeout is not None:
            option = getattr(socket, "TCP_USER_TIMEOUT", None)
            if option is None:
                logger.warning("TCP_USER_TIMEOUT is not available here; stalled peers are kept")
            else:
                sock.setsockopt(socket.IPPROTO_TCP, option, round(user_timeout * 1000))
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    return sock


def http_url(sock: socket.socket) -> str:
    """``http://HOST:PORT`` (``http://[::1]:PORT`` for IPv6) of a bound socket."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if sock.family == socket.AF_INET6 else f"http://{host}:{port}"
