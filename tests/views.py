"""Django views served over HTTP by tests/test_wsgi_bridge.py (routed in tests/urls.py)."""

from __future__ import annotations

import hashlib
import io
import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

from django.http import (
    FileResponse,
    HttpRequest,
    HttpResponse,
    JsonResponse,
    StreamingHttpResponse,
)
from django.urls import reverse

GATE_TIMEOUT = 30.0  # seconds a streaming view waits for its test before giving up
FILE_CONTENT = random.Random(4).randbytes(1024 * 1024 + 17)  # served by `file`


@dataclass
class Stream:
    """What one streaming request shares with its test (registered in ``STREAMS``)."""

    release: threading.Event = field(
        default_factory=threading.Event
    )  # test → view: produce the next chunk
    closed: threading.Event = field(default_factory=threading.Event)  # view → test
    threads: list[int] = field(default_factory=list)  # view, then generator thread ids
    chunks: int = 0  # chunks produced so far


# key → Stream; filled and emptied by the `stream` fixture of tests/test_wsgi_bridge.py.
STREAMS: dict[str, Stream] = {}


def meta(request: HttpRequest, word: str) -> JsonResponse:
    keys = [
        "SCRIPT_NAME",
        "PATH_INFO",
        "QUERY_STRING",
        "SERVER_NAME",
        "SERVER_PORT",
        "SERVER_PROTOCOL",
        "REMOTE_ADDR",
        "CONTENT_TYPE",
        "HTTP_X_REPEATED",
        "HTTP_COOKIE",
        "wsgi.url_scheme",
        "wsgi.multithread",
    ]
    return JsonResponse(
        {
            "word": word,
            "path": request.path,
            "reverse": reverse("meta", args=[word]),
            "q": request.GET.getlist("q"),
            "meta": {key: request.META.get(key) for key in keys},
            "underscore": sorted(key for key in request.META if "UNDERSCORE" in key),
            "thread": threading.get_ident(),
        }
    )


def upload(request: HttpRequest) -> JsonResponse:
    body = request.body
    return JsonResponse({"length": len(body), "sha256": hashlib.sha256(body).hexdigest()})


def upload_file(request: HttpRequest) -> JsonResponse:
    upload = request.FILES["file"]
    digest = hashlib.sha256()
    for chunk in upload.chunks():
        digest.update(chunk)
    return JsonResponse(
        {"name": request.POST["name"], "size": upload.size, "sha256": digest.hexdigest()}
    )


def lines(request: HttpRequest) -> JsonResponse:
    # HttpRequest.__iter__ reads with readline(), through Django's LimitedStream.
    return JsonResponse({"lines": [hashlib.sha256(line).hexdigest() for line in request]})


def stream(request: HttpRequest, key: str) -> StreamingHttpResponse:
    """``b"one"``, then once the test releases it ``b"two"``; with ``?endless=1`` ``b"more"``
    until the response is closed."""
    state = STREAMS[key]
    state.threads.append(threading.get_ident())
    endless = request.GET.get("endless") == "1"

    def chunks() -> Iterator[bytes]:
        state.threads.append(threading.get_ident())
        try:
            state.chunks += 1
            yield b"one"
            if not state.release.wait(GATE_TIMEOUT):
                return
            state.chunks += 1
            yield b"two"
            while endless:
                state.chunks += 1
                yield b"more"
        finally:
            state.closed.set()

    return StreamingHttpResponse(chunks(), content_type="application/octet-stream")


def file(request: HttpRequest) -> FileResponse:
    return FileResponse(io.BytesIO(FILE_CONTENT), filename="blob.bin")


def fail(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("this view fails on purpose")


def stream_fail(request: HttpRequest) -> StreamingHttpResponse:
    """A streaming response whose iterator raises after ``?after=N`` chunks."""
    after = int(request.GET["after"])

    def chunks() -> Iterator[bytes]:
        for _ in range(after):
            yield b"one"
        raise RuntimeError("this streaming response fails on purpose")

    return StreamingHttpResponse(chunks())
