"""Internal: the WSGI environ builder (not part of the API).

The WSGI environ builder (PEP 3333) of an ASGI ``http`` scope: one builder for the ASGI
app's WSGI bridge (``trio_djws.wsgi_bridge``, every HTTP request) and for Django auth on the
WebSocket handshake (``trio_djws.auth``, which builds a ``WSGIRequest`` from a handshake).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Final, Protocol
from urllib.parse import unquote_to_bytes

from .typing import HTTPScope

if TYPE_CHECKING:
    from wsgiref.types import WSGIEnvironment

__all__: list[str] = []

# bytes per block of a FileResponse (wsgi.file_wrapper): Django's 4 KiB blocks would cost
# one trio round trip (~70 µs) each.
FILE_BLOCK_SIZE: Final = 64 * 1024


class _Readable(Protocol):
    def read(self, size: int, /) -> bytes: ...


class _FileWrapper:
    """``wsgi.file_wrapper``: Django's ``FileResponse`` in blocks of at least
    ``FILE_BLOCK_SIZE`` bytes. Its ``close()`` closes the file, which Django has pointed
    at the response's own ``close()``."""

    def __init__(self, file: _Readable, block_size: int = FILE_BLOCK_SIZE) -> None:
        self._file = file
        self._block_size = max(block_size, FILE_BLOCK_SIZE)

    def __iter__(self) -> Iterator[bytes]:
        while block := self._file.read(self._block_size):
            yield block

    def close(self) -> None:
        close = getattr(self._file, "close", None)
        if close is not None:
            close()


def wsgi_environ(scope: HTTPScope, body: object) -> WSGIEnvironment:
    """The PEP 3333 environ of an ASGI ``http`` scope, with ``body`` as ``wsgi.input`` (a
    readable binary stream: ``read``, ``readline``, ``readlines``, iteration).

    Like Hypercorn's ``_build_environ``, except: PATH_INFO comes from ``raw_path``,
    percent-decoded to bytes and carried as latin-1 (PEP 3333's "bytes in str"), so Django
    sees the bytes the client sent, invalid UTF-8 included; SERVER_PORT is a str; a
    ``root_path`` missing from the path is not a 404 (Django's ``ASGIRequest`` does the
    same); headers with ``_`` in their name are dropped, as Django's runserver, nginx and
    Apache do, so that ``x_forwarded_for`` cannot pass for ``X-Forwarded-For``.
    """
    raw_path = scope.get("raw_path")
    path = unquote_to_bytes(raw_path.partition(b"?")[0]) if raw_path else scope["path"].encode()
    script_name = scope.get("root_path", "").encode()
    scheme = scope.get("scheme", "http")
    host, port = scope.get("server") or ("localhost", None)
    environ: WSGIEnvironment = {
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": script_name.decode("latin-1"),
        "PATH_INFO": path.removeprefix(script_name).decode("latin-1"),
        "QUERY_STRING": scope["query_string"].decode("latin-1"),
        "SERVER_NAME": host,
        "SERVER_PORT": str(port) if port is not None else ("443" if scheme == "https" else "80"),
        "SERVER_PROTOCOL": f"HTTP/{scope['http_version']}",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scheme,
        "wsgi.input": body,
        "wsgi.input_terminated": True,  # read() ends at the end of the body, chunked or not
        "wsgi.errors": sys.stderr,
        "wsgi.file_wrapper": _FileWrapper,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,  # Hypercorn may run several worker processes
        "wsgi.run_once": False,
    }
    client = scope.get("client")
    if client is not None:
        environ["REMOTE_ADDR"], environ["REMOTE_PORT"] = client[0], str(client[1])
    for raw_name, raw_value in scope["headers"]:
        name = raw_name.decode("latin-1").upper()
        if "_" in name:
            continue
        key = name.replace("-", "_")
        if key not in {"CONTENT_TYPE", "CONTENT_LENGTH"}:
            key = f"HTTP_{key}"
        value = raw_value.decode("latin-1")
        if key in environ:  # repeated header: joined as RFC 9110 §5.3 allows (cookies: "; ")
            value = environ[key] + ("; " if key == "HTTP_COOKIE" else ",") + value
        environ[key] = value
    return environ
