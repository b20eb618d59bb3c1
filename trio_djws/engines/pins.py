"""Internal: the library releases each engine is tested on, and the checks that fail loudly on
another release before a connection is served (as ``trio_djws.servers.hypercorn``'s
``check_hypercorn()`` does for Hypercorn's private worker).

The engines read attributes that their libraries do not document (``parser_exc`` and
``eof_sent`` of ``websockets``' sans-I/O protocol, trio-websocket's ``_wsproto`` and
``_connection``); a release
that renames one would otherwise fail connection by connection, or worse, silently send no
close frame. ``get_engine()`` runs the engine's check once per process; each pin names what it
checks, so the error says what moved. The version ranges are pyproject.toml's.
"""

from __future__ import annotations

import functools
import importlib.metadata
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

__all__: list[str] = []


@dataclass(frozen=True)
class LibraryPin:
    """One library an engine drives beyond its documented API."""

    distribution: str
    """The PyPI name, e.g. ``"websockets"``."""
    series: str
    """The version prefix the engine is tested on, e.g. ``"17."``."""
    requirement: str
    """The pyproject.toml requirement that installs a tested release."""
    probes: tuple[tuple[str, Callable[[], bool]], ...]
    """``(what, holds)``: each thing the engine relies on, and a check that it is there."""


def _websockets_protocol_has(*names: str) -> Callable[[], bool]:
    def holds() -> bool:
        from websockets.server import ServerProtocol

        protocol = ServerProtocol()  # sans-I/O: no socket, nothing sent
        return all(hasattr(protocol, name) for name in names)

    return holds


def _frame_serialize_takes_mask() -> bool:
    from websockets.frames import Frame

    return "mask" in inspect.signature(Frame.serialize).parameters


def _trio_websocket_keeps_wsproto() -> bool:
    from trio_websocket import WebSocketConnection

    return "self._wsproto =" in inspect.getsource(WebSocketConnection.__init__)


def _trio_websocket_request_keeps_connection() -> bool:
    from trio_websocket import WebSocketRequest

    return "self._connection =" in inspect.getsource(WebSocketRequest.__init__)


def _wrap_server_stream_takes(*names: str) -> Callable[[], bool]:
    def holds() -> bool:
        from trio_websocket import wrap_server_stream

        return set(names) <= set(inspect.signature(wrap_server_stream).parameters)

    return holds


def _wsproto_frame_protocol_closes() -> bool:
    from wsproto.frame_protocol import FrameProtocol

    return list(inspect.signature(FrameProtocol.close).parameters) == ["self", "code", "reason"]


PINS: Final[dict[str, tuple[LibraryPin, ...]]] = {
    "websockets": (
        LibraryPin(
            "websockets",
            "17.",
            "websockets>=17,<18",
            (
                (
                    "ServerProtocol.parser_exc, .handshake_exc, .eof_sent (undocumented), "
                    ".close_rcvd, .close_sent, .state, .extensions, .subprotocol",
                    _websockets_protocol_has(
                        "parser_exc",
                        "handshake_exc",
                        "eof_sent",
                        "close_rcvd",
                        "close_sent",
                        "state",
                        "extensions",
                        "subprotocol",
                    ),
                ),
                ("Frame.serialize(mask=...)", _frame_serialize_takes_mask),
            ),
        ),
    ),
    "trio_websocket": (
        LibraryPin(
            "trio-websocket",
            "0.12.",
            "trio-websocket>=0.12,<0.13",
            (
                ("WebSocketConnection._wsproto (private)", _trio_websocket_keeps_wsproto),
                (
                    "WebSocketRequest._connection (private)",
                    _trio_websocket_request_keeps_connection,
                ),
                (
                    "wrap_server_stream(message_queue_size, max_message_size, receive_buffer_size)",
                    _wrap_server_stream_takes(
                        "message_queue_size", "max_message_size", "receive_buffer_size"
                    ),
                ),
            ),
        ),
        LibraryPin(
            "wsproto",
            "1.",
            "wsproto>=1.2,<2",
            (("FrameProtocol.close(code, reason)", _wsproto_frame_protocol_closes),),
        ),
    ),
}


def check_pin(pin: LibraryPin) -> None:
    """Check one library against its pin.

    Raises:
        RuntimeError: the installed release is outside ``pin.series``, or a probe fails; the
            message names the release, what is missing and the requirement to install.
    """
    version = importlib.metadata.version(pin.distribution)
    if not version.startswith(pin.series):
        raise RuntimeError(
            f"trio_djws's engines are tested on {pin.distribution} {pin.series}x, but "
            f"{pin.distribution} {version} is installed; install {pin.requirement!r}"
        )
    for what, holds in pin.probes:
        if not holds():
            raise RuntimeError(
                f"{pin.distribution} {version} no longer has {what}, which trio_djws's engine "
                f"relies on; install {pin.requirement!r}"
            )


@functools.cache
def check_engine(name: str) -> None:
    """Check every library the engine ``name`` (a ``WEBSOCKET_ENGINE`` value) drives; once per
    process (a successful check is cached).

    Raises:
        RuntimeError: as ``check_pin``.
    """
    for pin in PINS[name]:
        check_pin(pin)
