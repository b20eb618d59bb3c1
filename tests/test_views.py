"""dwebsocket-style views (trio_djws.views, trio_djws.middleware) against a live Hypercorn trio
server: the seed examples, every method of the sync request.websocket, routing and limits."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import trio
import trio.testing
from django.http import HttpRequest, HttpResponse
from django.test import RequestFactory, override_settings
from trio_websocket import ConnectionClosed, ConnectionRejected, open_websocket_url

from tests import ws_views
from tests.conftest import rejected_status
from tests.test_mixins import cookie_header, login
from trio_djws.middleware import WebSocketMiddleware
from trio_djws.state import current_server, drain_connections
from trio_djws.views import accept_websocket, require_websocket, view_limiter

pytestmark = pytest.mark.django_db(transaction=True)  # views run Django's request cycle

WAIT = 10.0  # seconds; generous bound on one exchange with the live server


@pytest.fixture(autouse=True)
def _fresh_view_state() -> Iterator[None]:
    ws_views.VIEW_RETURNED.clear()
    ws_views.VIEW_RESULTS.clear()
    ws_views.COUNT_GATE.clear()
    ws_views.GATE.clear()
    yield
    ws_views.GATE.set()  # never leave a view thread waiting
    ws_views.COUNT_GATE.set()


async def wait_idle() -> None:
    """Wait until every connection of the live server has ended (its view thread included)."""
    with trio.fail_after(WAIT):
        await current_server().wait_idle()


async def test_dwebsocket_echo_once(ws_url: str) -> None:
    async with open_websocket_url(f"{ws_url}/dws/echo_once/") as ws:
        await ws.send_message("Hello, World")
        with trio.fail_after(WAIT):
            assert await ws.get_message() == "Hello, World"
            with pytest.raises(ConnectionClosed) as info:
                await ws.get_message()  # the view returned: the connection ends
    assert info.value.reason.code == 1000


async def test_dwebsocket_lower_case_over_websocket_and_http(
    ws_url: str, hypercorn_server: str
) -> None:
    async with open_websocket_url(f"{ws_url}/dws/lower_case/") as ws:
        for text in ["HeLLo", "WORLD"]:
            await ws.send_message(text)
            with trio.fail_after(WAIT):
                assert await ws.get_message() == text.lower()
    await wait_idle()  # iteration ended when the client closed, and the view returned
    async with httpx.AsyncClient(base_url=f"http://{hypercorn_server}", timeout=WAIT) as http:
        response = await http.get("/dws/lower_case/", params={"message": "MiXeD"})
    assert response.status_code == 200
    assert response.text == "mixed"


async def test_require_websocket_answers_plain_http_with_400(hypercorn_server: str) -> None:
    async with httpx.AsyncClient(base_url=f"http://{hypercorn_server}", timeout=WAIT) as http:
        response = await http.get("/dws/echo_once/")
    assert response.status_code == 400


async def test_sync_api_read_send_closed_binary(ws_url: str) -> None:
    async with open_websocket_url(f"{ws_url}/dws/api/") as ws:
        with trio.fail_after(WAIT):
            assert await ws.get_message() == "ready"
            await ws.send_message("read")
            assert await ws.get_message() == "None"  # nothing else had arrived
            await ws.send_message("echo héllo")
            assert await ws.get_message() == "héllo"
            await ws.send_message("binary abc")
            assert await ws.get_message() == b"abc"
            await ws.send_message("closed")
            assert await ws.get_message() == "closed=False"


async def test_sync_api_count_has_and_read_queued_messages(ws_url: str) -> None:
    async with open_websocket_url(f"{ws_url}/dws/api/") as ws:
        with trio.fail_after(WAIT):
            assert await ws.get_message() == "ready"
            await ws.send_message("count 3")
            assert await ws.get_message() == "counting"
            for text in ["a", "b", "c"]:
                await ws.send_message(text)
            await trio.testing.wait_all_tasks_blocked()  # the server has queued all three
            ws_views.COUNT_GATE.set()
            assert await ws.get_message() == "count=3 has=True"
            assert await ws.get_message() == "drained=['a', 'b', 'c'] has=False"


async def test_sync_api_close_with_a_code(ws_url: str) -> None:
    async with open_websocket_url(f"{ws_url}/dws/api/") as ws:
        with trio.fail_after(WAIT):
            assert await ws.get_message() == "ready"
            await ws.send_message("close 4001")
            with pytest.raises(ConnectionClosed) as info:
                await ws.get_message()  # "after close" was dropped, as in dwebsocket
    assert info.value.reason.code == 4001
    await wait_idle()
    assert ws_views.VIEW_RESULTS["api"] == "closed=True"


async def test_view_exception_after_the_accept_closes_with_1011(ws_url: str) -> None:
    async with open_websocket_url(f"{ws_url}/dws/api/") as ws:
        with trio.fail_after(WAIT):
            assert await ws.get_message() == "ready"
            await ws.send_message("fail")
            with pytest.raises(ConnectionClosed) as info:
                await ws.get_message()
    assert info.value.reason.code == 1011


async def test_client_leaving_during_wait_returns_none_and_frees_the_thread(
    ws_url: str,
) -> None:
    async with open_websocket_url(f"{ws_url}/dws/wait/") as ws:
        with trio.fail_after(WAIT):
            assert await ws.get_message() == "waiting"
        assert view_limiter().borrowed_tokens == 1
    await wait_idle()
    assert ws_views.VIEW_RESULTS["wait_forever"] == ("returned", None, True)
    assert view_limiter().borrowed_tokens == 0


async def test_views_get_djangos_middleware(ws_url: str) -> None:
    cookie = await login("dora")
    async with open_websocket_url(f"{ws_url}/dws/api/", extra_headers=cookie_header(cookie)) as ws:
        with trio.fail_after(WAIT):
            assert await ws.get_message() == "ready"
            await ws.send_message("user")
            assert await ws.get_message() == "dora"


@override_settings(WEBSOCKET_VIEW_THREADS=1)
async def test_handshake_gets_503_when_every_view_thread_is_busy(ws_url: str) -> None:
    async with open_websocket_url(f"{ws_url}/dws/hold/") as ws:
        with trio.fail_after(WAIT):
            assert await ws.get_message() == "holding"
            with pytest.raises(ConnectionRejected) as info:
                async with open_websocket_url(f"{ws_url}/dws/echo_once/"):
                    pass
        assert info.value.status_code == 503
        ws_views.GATE.set()
    await wait_idle()
    async with open_websocket_url(f"{ws_url}/dws/echo_once/") as ws:  # a thread is free again
        await ws.send_message("again")
        with trio.fail_after(WAIT):
            assert await ws.get_message() == "again"


async def test_view_that_does_not_accept_websockets_gets_400(ws_url: str) -> None:
    assert await rejected_status(f"{ws_url}/dws/plain/") == 400


async def test_no_namespace_and_no_url_pattern_gets_403(ws_url: str) -> None:
    assert await rejected_status(f"{ws_url}/dws/nothing-here/") == 403


@override_settings(WEBSOCKET_ACCEPT_ALL=True)
async def test_accept_all_makes_every_view_accept(ws_url: str) -> None:
    async with open_websocket_url(f"{ws_url}/dws/plain/") as ws:
        with trio.fail_after(WAIT):
            assert await ws.get_message() == "plain view over a websocket"


async def test_view_attribute_accept_websocket(ws_url: str) -> None:
    async with open_websocket_url(f"{ws_url}/dws/flagged/") as ws:
        with trio.fail_after(WAIT):
            assert await ws.get_message() == "flagged True"


async def test_view_answering_without_the_socket(ws_url: str) -> None:
    assert await rejected_status(f"{ws_url}/dws/forbidden/") == 403
    async with open_websocket_url(f"{ws_url}/dws/silent/") as ws:  # 2xx: accepted, closed
        with trio.fail_after(WAIT), pytest.raises(ConnectionClosed) as closed:
            await ws.get_message()
    assert closed.value.reason.code == 1000


def test_middleware_marks_plain_http_and_refuses_mismatches() -> None:
    request = RequestFactory().get("/")
    middleware = WebSocketMiddleware(lambda r: HttpResponse("ok"))
    assert middleware(request).content == b"ok"
    assert request.websocket is None  # type: ignore[attr-defined]
    assert request.is_websocket() is False  # type: ignore[attr-defined]
    only_ws = require_websocket(lambda r: None)
    refused = middleware.process_view(request, only_ws, (), {})
    assert refused is not None and refused.status_code == 400
    assert middleware.process_view(request, ws_views.plain, (), {}) is None
    handshake = RequestFactory().get("/")
    handshake.websocket = object()  # type: ignore[attr-defined]  # as a handshake carries
    refused = middleware.process_view(handshake, ws_views.plain, (), {})
    assert refused is not None and refused.status_code == 400
    assert middleware.process_view(handshake, ws_views.lower_case, (), {}) is None
    with override_settings(WEBSOCKET_ACCEPT_ALL=True):
        assert middleware.process_view(handshake, ws_views.plain, (), {}) is None


def test_decorated_views_see_none_for_plain_http() -> None:
    seen: list[object] = []

    @accept_websocket
    def view(request: HttpRequest) -> HttpResponse:
        seen.append((request.websocket, request.is_websocket()))  # type: ignore[attr-defined]
        return HttpResponse()

    view(RequestFactory().get("/"))
    assert seen == [(None, False)]
    assert view.accept_websocket is True  # type: ignore[attr-defined]
    assert require_websocket(view).require_websocket is True  # type: ignore[attr-defined]


async def test_a_namespace_wins_over_a_url_pattern(ws_url: str) -> None:
    # /echo/ is both @Namespace("/echo/") (echoes every message) and a URL pattern for
    # echo_once (echoes one, then closes): the namespace serves it.
    async with open_websocket_url(f"{ws_url}/echo/") as ws:
        with trio.fail_after(WAIT):
            for text in ["one", "two"]:
                await ws.send_message(text)
                assert await ws.get_message() == text


async def test_shutdown_drain_ends_a_view_blocked_in_wait_with_1001(ws_url: str) -> None:
    # drain_connections() is what the lifespan shutdown (and manage.py serve) runs.
    async with open_websocket_url(f"{ws_url}/dws/wait/") as ws:
        with trio.fail_after(WAIT):
            assert await ws.get_message() == "waiting"
            await drain_connections()  # returns once every connection has ended
            with pytest.raises(ConnectionClosed) as info:
                await ws.get_message()
    assert info.value.reason.code == 1001
    assert ws_views.VIEW_RESULTS["wait_forever"] == ("returned", None, True)


async def test_publish_to_user_group_from_a_view_reaches_every_window(ws_url: str) -> None:
    cookie = await login("grace")
    headers = cookie_header(cookie)
    async with (
        open_websocket_url(f"{ws_url}/auth/whoami/", extra_headers=headers) as window_a,
        open_websocket_url(f"{ws_url}/auth/whoami/", extra_headers=headers) as window_b,
        open_websocket_url(f"{ws_url}/dws/notify/", extra_headers=headers) as sender,
    ):
        with trio.fail_after(WAIT):
            for window in (window_a, window_b):
                await window.get_message()  # who-am-I on connect
            await sender.send_message("you have mail")
            assert await sender.get_message() == "published"
            assert await window_a.get_message() == "you have mail"
            assert await window_b.get_message() == "you have mail"
