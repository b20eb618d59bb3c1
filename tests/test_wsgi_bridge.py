"""Django over HTTP through trio_djws.wsgi_bridge (the ASGI app's WSGI bridge), against a live
Hypercorn trio server."""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from functools import partial
from typing import TypeVar

import httpx
import pytest
import trio
import trio.testing
from django.core.signals import request_finished, request_started
from django.test import override_settings
from hypercorn.trio import serve

from tests.conftest import hypercorn_config
from tests.views import FILE_CONTENT, STREAMS, Stream
from trio_djws.asgi import get_asgi_application
from trio_djws.threads import http_limiter
from trio_djws.wsgi_bridge import HTTPOptions, configure_http

WAIT = 10.0  # seconds; generous bound on anything the server does for one request
MIB = 1024 * 1024
R = TypeVar("R")


@pytest.fixture
async def client(hypercorn_server: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"http://{hypercorn_server}", timeout=WAIT) as client:
        yield client


@pytest.fixture
async def stream(hypercorn_server: str) -> AsyncIterator[tuple[str, Stream]]:
    """A registered ``tests.views.Stream``, released at teardown. It depends on the server so
    that it is torn down first: server shutdown waits for the view's thread."""
    key = uuid.uuid4().hex
    STREAMS[key] = state = Stream()
    try:
        yield key, state
    finally:
        state.release.set()
        del STREAMS[key]


@pytest.fixture
def finished() -> Iterator[tuple[list[int], threading.Event]]:
    """Thread ids of ``request_finished`` receivers, and an event set by the first one."""
    threads: list[int] = []
    event = threading.Event()

    def receiver(sender: object, **kwargs: object) -> None:
        threads.append(threading.get_ident())
        event.set()

    request_finished.connect(receiver, dispatch_uid="tests.test_wsgi_bridge.finished")
    try:
        yield threads, event
    finally:
        request_finished.disconnect(dispatch_uid="tests.test_wsgi_bridge.finished")
        event.set()


async def wait_thread_event(event: threading.Event) -> None:
    """Wait for an event that a server thread sets, without blocking the trio thread."""
    with trio.fail_after(WAIT):
        await trio.to_thread.run_sync(event.wait, abandon_on_cancel=True)


async def read_exactly(chunks: AsyncIterator[bytes], size: int) -> bytes:
    data = b""
    while len(data) < size:
        data += await anext(chunks)
    return data


async def wait_requests_done() -> None:
    """Wait until no request of this run holds a worker thread, then until every task has
    settled, so that whatever they log has been logged."""
    limiter = http_limiter()
    borrowers = [object() for _ in range(int(limiter.total_tokens))]
    for borrower in borrowers:
        await limiter.acquire_on_behalf_of(borrower)
    for borrower in borrowers:
        limiter.release_on_behalf_of(borrower)
    await trio.testing.wait_all_tasks_blocked()


def errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.levelno >= logging.ERROR and r.name.startswith(("trio_djws", "hypercorn"))
    ]


async def test_get_with_query_reaches_the_view_with_a_pep3333_environ(
    client: httpx.AsyncClient, hypercorn_server: str
) -> None:
    headers = [
        ("X-Repeated", "a"),
        ("X-Repeated", "b"),
        ("X_Underscore", "spoof"),
        ("Cookie", "a=1"),
        ("Cookie", "b=2"),
    ]
    response = await client.get("/meta/caf%C3%A9/?q=1&q=%C3%A9", headers=headers)
    assert response.status_code == 200
    data = response.json()
    assert data["word"] == "café"
    assert data["path"] == "/meta/café/"
    assert data["reverse"] == "/meta/caf%C3%A9/"
    assert data["q"] == ["1", "é"]
    assert data["meta"] == {
        "SCRIPT_NAME": "",
        "PATH_INFO": "/meta/café/",  # Django replaces the latin-1 "bytes in str" with this
        "QUERY_STRING": "q=1&q=%C3%A9",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": hypercorn_server.rpartition(":")[2],
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "CONTENT_TYPE": None,
        "HTTP_X_REPEATED": "a,b",
        "HTTP_COOKIE": "a=1; b=2",
        "wsgi.url_scheme": "http",
        "wsgi.multithread": True,
    }
    assert data["underscore"] == []  # dropped, as Django's runserver does
    assert data["thread"] != threading.get_ident()


async def test_invalid_utf8_in_the_path_reaches_django_as_sent(client: httpx.AsyncClient) -> None:
    # Django re-percent-encodes the bytes; Hypercorn's own environ would give U+FFFD.
    response = await client.get("/meta/%FF/")
    assert response.json()["path"] == "/meta/%FF/"


@pytest.fixture
async def prefixed_server(nursery: trio.Nursery) -> AsyncIterator[str]:
    """Like ``hypercorn_server``, with Hypercorn's ``root_path`` set to ``/prefix``."""
    config = hypercorn_config()
    config.root_path = "/prefix"
    shutdown = trio.Event()
    app = get_asgi_application()
    binds = await nursery.start(partial(serve, app, config, shutdown_trigger=shutdown.wait))
    yield binds[0]
    shutdown.set()


async def test_root_path_becomes_script_name(prefixed_server: str) -> None:
    async with httpx.AsyncClient(timeout=WAIT) as client:
        response = await client.get(f"{prefixed_server}/prefix/meta/x/")
    data = response.json()
    assert (data["meta"]["SCRIPT_NAME"], data["meta"]["PATH_INFO"]) == ("/prefix", "/meta/x/")
    assert data["path"] == data["reverse"] == "/prefix/meta/x/"


async def test_one_mib_post_body_reaches_the_view_whole(client: httpx.AsyncClient) -> None:
    body = random.Random(1).randbytes(1 * MIB)  # 16 times TrioWSGIMiddleware's cap
    response = await client.post("/upload/", content=body)
    assert response.status_code == 200
    assert response.json() == {"length": len(body), "sha256": hashlib.sha256(body).hexdigest()}


async def test_multipart_file_upload_over_the_memory_limits(client: httpx.AsyncClient) -> None:
    # 3 MiB: over FILE_UPLOAD_MAX_MEMORY_SIZE (2.5 MiB), so Django spools it to a temp file.
    content = random.Random(2).randbytes(3 * MIB)
    response = await client.post(
        "/upload-file/", data={"name": "blob"}, files={"file": ("blob.bin", content)}
    )
    assert response.status_code == 200
    assert response.json() == {
        "name": "blob",
        "size": len(content),
        "sha256": hashlib.sha256(content).hexdigest(),
    }


async def test_readline_across_body_chunks(client: httpx.AsyncClient) -> None:
    # Lines up to 200 KB: several exceed one socket read (64 KiB) and so one body chunk.
    rng = random.Random(3)
    lines = [rng.randbytes(rng.randrange(200_000)).replace(b"\n", b"") + b"\n" for _ in range(20)]
    lines.append(b"last line without newline")
    response = await client.post("/lines/", content=b"".join(lines))
    assert response.json() == {"lines": [hashlib.sha256(line).hexdigest() for line in lines]}


async def test_body_over_data_upload_max_memory_size_gets_400(client: httpx.AsyncClient) -> None:
    # A body small enough to arrive whole before the 400 is sent: once Hypercorn has sent a
    # response, it closes a connection whose request body has not all arrived, and a client
    # still sending may then see a reset instead of the 400.
    with override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=1000):
        response = await client.post("/upload/", content=b"x" * 2000)  # RequestDataTooBig
        assert response.status_code == 400
    response = await client.post("/upload/", content=b"abc")
    assert response.json()["length"] == 3


async def test_streaming_response_arrives_chunk_by_chunk(
    client: httpx.AsyncClient, stream: tuple[str, Stream]
) -> None:
    key, state = stream
    async with client.stream("GET", f"/stream/{key}/") as response:
        assert response.headers.get("content-length") is None
        chunks = response.aiter_raw()
        # The view waits for `release` before producing b"two": the first chunk must have
        # been sent on its own (fail_after: well before the view's GATE_TIMEOUT).
        with trio.fail_after(WAIT):
            assert await read_exactly(chunks, 3) == b"one"
        assert state.chunks == 1
        state.release.set()
        assert b"".join([chunk async for chunk in chunks]) == b"two"
    await wait_thread_event(state.closed)


async def test_request_view_stream_and_request_finished_share_one_worker_thread(
    client: httpx.AsyncClient,
    stream: tuple[str, Stream],
    finished: tuple[list[int], threading.Event],
) -> None:
    key, state = stream
    state.release.set()
    response = await client.get(f"/stream/{key}/")
    assert response.content == b"onetwo"
    threads, event = finished
    await wait_thread_event(event)
    view_thread, generator_thread = state.threads
    assert threads == [view_thread] == [generator_thread]
    assert view_thread != threading.get_ident()  # not the trio thread


async def test_request_finished_fires_in_the_worker_thread(
    client: httpx.AsyncClient, finished: tuple[list[int], threading.Event]
) -> None:
    response = await client.get("/meta/x/")
    threads, event = finished
    await wait_thread_event(event)
    assert threads == [response.json()["thread"]]
    assert threads[0] != threading.get_ident()


async def test_file_response_is_served_whole_and_closed_in_the_worker_thread(
    client: httpx.AsyncClient, finished: tuple[list[int], threading.Event]
) -> None:
    response = await client.get("/file/")  # through wsgi.file_wrapper
    assert response.content == FILE_CONTENT
    assert response.headers["content-length"] == str(len(FILE_CONTENT))
    threads, event = finished
    await wait_thread_event(event)
    assert threads[0] != threading.get_ident()


async def test_views_run_under_the_http_limiter(
    client: httpx.AsyncClient, stream: tuple[str, Stream]
) -> None:
    key, _ = stream
    async with client.stream("GET", f"/stream/{key}/") as response:
        await read_exactly(response.aiter_raw(), 3)  # the view's thread is busy now
        assert http_limiter().borrowed_tokens == 1
        assert trio.to_thread.current_default_thread_limiter().borrowed_tokens == 0


async def test_client_disconnect_stops_the_streaming_response(
    client: httpx.AsyncClient,
    stream: tuple[str, Stream],
    finished: tuple[list[int], threading.Event],
    caplog: pytest.LogCaptureFixture,
) -> None:
    key, state = stream
    async with client.stream("GET", f"/stream/{key}/?endless=1") as response:
        await read_exactly(response.aiter_raw(), 3)
    # Leaving the block with the body unread closes the connection. The view now streams
    # without end, until the server notices the disconnect and closes the response.
    state.release.set()
    await wait_thread_event(state.closed)
    threads, event = finished
    await wait_thread_event(event)
    assert threads == state.threads[:1]
    await wait_requests_done()
    assert errors(caplog) == []
    assert (await client.get("/meta/x/")).status_code == 200


async def test_unknown_url_gets_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/nowhere/")
    assert response.status_code == 404


async def test_view_exception_gets_500_and_the_server_goes_on(client: httpx.AsyncClient) -> None:
    response = await client.get("/fail/")  # Django's handler500, logged by django.request
    assert response.status_code == 500
    assert (await client.get("/meta/x/")).status_code == 200


async def test_bridge_exception_before_the_response_started_gets_500(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    response = await client.get("/stream-fail/?after=0")
    assert response.status_code == 500
    await wait_requests_done()
    [record] = errors(caplog)
    assert record.name == "trio_djws.wsgi_bridge"
    assert record.exc_info is not None
    assert "fails on purpose" in str(record.exc_info[1])
    assert (await client.get("/meta/x/")).status_code == 200


async def test_bridge_exception_after_the_response_started_cuts_it_short(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    async with client.stream("GET", "/stream-fail/?after=1") as response:
        assert response.status_code == 200
        chunks = response.aiter_raw()
        assert await read_exactly(chunks, 3) == b"one"
        with pytest.raises(httpx.RemoteProtocolError):
            await anext(chunks)
    await wait_requests_done()
    assert [record.name for record in errors(caplog)] == ["trio_djws.wsgi_bridge"]
    assert (await client.get("/meta/x/")).status_code == 200


async def test_client_gone_mid_body_takes_no_worker_thread(
    hypercorn_server: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The body is read on the trio side before a thread is taken: a client that leaves
    # mid-body never reaches Django.
    started: list[object] = []
    request_started.connect(started.append, dispatch_uid="tests.test_wsgi_bridge.started")
    try:
        host, _, port = hypercorn_server.rpartition(":")
        async with await trio.open_tcp_stream(host, int(port)) as connection:
            head = b"POST /upload/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n"
            await connection.send_all(head + b"x" * 10)
        await trio.testing.wait_all_tasks_blocked()
        await wait_requests_done()
    finally:
        request_started.disconnect(dispatch_uid="tests.test_wsgi_bridge.started")
    assert started == []
    assert errors(caplog) == []


@override_settings(WEBSOCKET_HTTP_BODY_TIMEOUT=1, WEBSOCKET_HTTP_THREADS=2)
async def test_trickled_bodies_hold_no_thread_and_get_408(
    hypercorn_server: str, client: httpx.AsyncClient
) -> None:
    # Was: 45 POSTs trickling 1 byte every 2 s pinned all 40 HTTP threads; the login page
    # stopped answering. Here 5 trickling clients against 2 threads.
    host, _, port = hypercorn_server.rpartition(":")
    async with trio.open_nursery() as nursery:
        answers: list[bytes] = []

        async def trickle() -> None:
            async with await trio.open_tcp_stream(host, int(port)) as connection:
                head = b"POST /upload/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n"
                await connection.send_all(head + b"x")
                answer = b""
                while chunk := await connection.receive_some(4096):  # 408, then closed
                    answer += chunk
                answers.append(answer)

        for _ in range(5):
            nursery.start_soon(trickle)
        await trio.testing.wait_all_tasks_blocked()
        # Every trickling request waits for its body on the trio side: other requests are
        # served meanwhile.
        assert (await client.get("/meta/x/")).status_code == 200
    assert len(answers) == 5
    assert all(answer.startswith(b"HTTP/1.1 408") for answer in answers), answers


@override_settings(FILE_UPLOAD_MAX_MEMORY_SIZE=1024)
async def test_chunked_body_over_the_memory_size_is_spooled_and_gets_its_length(
    client: httpx.AsyncClient,
) -> None:
    payload = random.randbytes(100_000)

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: Transfer-Encoding chunked
        for start in range(0, len(payload), 7_000):
            yield payload[start : start + 7_000]

    response = await client.post("/upload/", content=chunks())
    assert response.json() == {
        "length": len(payload),
        "sha256": hashlib.sha256(payload).hexdigest(),
    }


# Found by staticfiles' AppDirectoriesFinder; not /static/, which tests/urls.py serves itself.
STATIC_URL = "/assets/"
SIGNALS_JS = "/assets/trio_djws/signals.js"


@pytest.fixture
def http_options() -> Iterator[None]:
    yield
    configure_http(HTTPOptions())  # the process default, for the next tests


@pytest.mark.parametrize(
    ("debug", "static_files", "status"),
    [
        (True, None, 200),  # manage.py serve (and runserver) in DEBUG
        (False, None, 404),  # production: WhiteNoise or the web server
        (False, True, 200),  # runserver --insecure
        (True, False, 404),  # runserver --nostatic
    ],
)
async def test_static_files_are_served_in_debug_as_runserver_does(
    client: httpx.AsyncClient,
    http_options: None,
    debug: bool,
    static_files: bool | None,
    status: int,
) -> None:
    configure_http(HTTPOptions(static_files=static_files))
    with override_settings(DEBUG=debug, STATIC_URL=STATIC_URL):
        response = await client.get(SIGNALS_JS)
    assert response.status_code == status
    if status == 200:
        assert b"WebSocket" in response.content


async def test_request_log_lines_as_runserver_writes_them(
    client: httpx.AsyncClient, http_options: None, caplog: pytest.LogCaptureFixture
) -> None:
    configure_http(HTTPOptions(log_requests=True))
    server_log = logging.getLogger("django.server")  # Django's LOGGING: it does not propagate
    server_log.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger="django.server"):
            ok = await client.get("/meta/x/?name=x")
            missing = await client.get("/no-such-page/%0Aforged")
    finally:
        server_log.removeHandler(caplog.handler)
    lines = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "django.server"]
    assert lines == [
        (logging.INFO, f'"GET /meta/x/?name=x HTTP/1.1" 200 {len(ok.content)}'),
        (logging.WARNING, f'"GET /no-such-page/%0Aforged HTTP/1.1" 404 {len(missing.content)}'),
    ]
