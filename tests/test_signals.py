"""Signals and topics (trio_djws.signals, trio_djws.handlers.SignalHandler) against a live
Hypercorn trio server, with trio-websocket clients and httpx for the views."""

from __future__ import annotations

import json
import logging
import re
from contextlib import AsyncExitStack
from typing import Annotated, Any
from urllib.parse import urlencode

import httpx
import pytest
import trio
from django.conf import settings
from django.contrib.auth.models import Group, User
from django.core import checks, signing
from django.template import Context, Template
from django.test import Client, RequestFactory, override_settings
from trio_websocket import WebSocketConnection, open_websocket_url

from tests import signals as test_signals
from tests.conftest import rejected_status
from trio_djws.asgi import get_asgi_application
from trio_djws.history import Position
from trio_djws.signals import (
    BROADCAST,
    SERVER,
    USER,
    WINDOW,
    SerializedForm,
    WindowInfo,
    atrigger,
    serialize_topic,
    set_websocket_topics,
    signal,
    trigger,
    window_key,
)
from trio_djws.signals.registry import registry
from trio_djws.signals.topics import make_token, read_token, topics_token
from trio_djws.signals.trigger import window_info_of
from trio_djws.signals.wire import WireError, parse_since
from trio_djws.state import current_server
from trio_djws.testing import SignalQueue, WebSocketTestClient
from trio_djws.threads import to_thread

pytestmark = pytest.mark.django_db(transaction=True)  # users, sessions, groups from threads

WAIT = 10.0  # seconds; generous bound on one exchange with the live server


def _login(username: str) -> str:
    User.objects.create_user(username, password="secret-pw")
    client = Client()
    assert client.login(username=username, password="secret-pw")
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"


async def login(username: str) -> str:
    """Create and log in ``username``; returns the ``Cookie`` header value."""
    return await to_thread(_login, username)


async def receive(ws: WebSocketConnection) -> Any:
    with trio.fail_after(WAIT):
        return json.loads(await ws.get_message())


async def call(ws: WebSocketConnection, signal_name: str, **kwargs: Any) -> None:
    await ws.send_message(
        json.dumps({"v": 1, "type": "call", "signal": signal_name, "kwargs": kwargs})
    )


async def open_window(
    stack: AsyncExitStack, ws_url: str, token: str | None = None, cookie: str | None = None
) -> tuple[WebSocketConnection, str]:
    """Connect a window (closed when ``stack`` closes); returns it and its window key."""
    query = f"?token={token}" if token else ""
    headers = [(b"cookie", cookie.encode())] if cookie else []
    ws = await stack.enter_async_context(
        open_websocket_url(f"{ws_url}/ws/signals/{query}", extra_headers=headers)
    )
    hello = await receive(ws)
    assert hello["v"] == 1 and hello["type"] == "hello"
    return ws, hello["window"]


async def test_call_runs_python_and_triggers_javascript_in_that_window_only(ws_url: str) -> None:
    async with (
        open_websocket_url(f"{ws_url}/ws/signals/") as a,
        open_websocket_url(f"{ws_url}/ws/signals/") as b,
    ):
        hello_a, hello_b = await receive(a), await receive(b)
        assert hello_a["window"] != hello_b["window"]
        await call(a, "tests.echo", text="to a", to="WINDOW")
        assert await receive(a) == {
            "v": 1,
            "type": "call",
            "signal": "tests.show",
            "kwargs": {"text": "to a"},
        }
        # b got nothing before the broadcast that follows (frames keep their order).
        await call(a, "tests.echo", text="to all", to="BROADCAST")
        assert (await receive(b))["kwargs"] == {"text": "to all"}
        assert (await receive(a))["kwargs"] == {"text": "to all"}


async def test_user_topic_reaches_every_window_of_that_user_only(ws_url: str) -> None:
    ada, bob = await login("ada"), await login("bob")
    async with AsyncExitStack() as stack:
        ada1, _ = await open_window(stack, ws_url, cookie=ada)
        ada2, _ = await open_window(stack, ws_url, cookie=ada)
        bob1, _ = await open_window(stack, ws_url, cookie=bob)
        await call(ada1, "tests.echo", text="ada only", to="USER")
        assert (await receive(ada1))["kwargs"]["text"] == "ada only"
        assert (await receive(ada2))["kwargs"]["text"] == "ada only"
        await call(bob1, "tests.members_only")  # the default permission: logged in
        assert (await receive(bob1))["kwargs"]["text"] == "member bob"  # nothing before it


async def test_unknown_signal_bad_kwargs_denial_failure_keep_the_connection(
    ws_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "trio_djws")
    async with open_websocket_url(f"{ws_url}/ws/signals/") as ws:
        await receive(ws)
        await call(ws, "tests.no_such_signal")
        error = await receive(ws)
        assert error["type"] == "error" and error["error"] == "unknown_signal"
        assert error["signal"] == "tests.no_such_signal"

        await call(ws, "tests.echo", txt="typo")
        error = await receive(ws)
        assert error["error"] == "bad_kwargs"
        assert "txt" in error["detail"] or "text" in error["detail"]

        await call(ws, "tests.members_only")  # anonymous: denied, logged
        assert await receive(ws) == {
            "v": 1,
            "type": "error",
            "signal": "tests.members_only",
            "error": "forbidden",
            "detail": "",
        }
        assert "denied to window" in caplog.text

        await call(ws, "tests.fail")
        error = await receive(ws)
        assert (error["error"], error["detail"]) == ("failed", "")

        await ws.send_message("not json")
        assert (await receive(ws))["error"] == "bad_message"
        await ws.send_message(json.dumps({"v": 2, "type": "call", "signal": "tests.echo"}))
        assert (await receive(ws))["error"] == "bad_message"
        await ws.send_message(b"\x00binary")
        assert (await receive(ws))["error"] == "bad_message"

        # Still open and working.
        await call(ws, "tests.echo", text="still here")
        assert (await receive(ws))["kwargs"]["text"] == "still here"


async def test_forged_or_expired_token_refuses_the_handshake(ws_url: str) -> None:
    good = make_token("k" * 32, ["auth.group:1"])
    forged = good[:-3] + ("AAA" if not good.endswith("AAA") else "BBB")
    for token in (forged, "garbage", make_token("k", ["auth.group:1"]).replace(":", ";", 1)):
        assert await rejected_status(f"{ws_url}/ws/signals/?token={token}") == 403
    with override_settings(WEBSOCKET_TOPICS_MAX_AGE=1e-6):
        with pytest.raises(signing.SignatureExpired):
            read_token(good)


async def test_view_trigger_to_obj_reaches_only_windows_granted_obj(hypercorn_server: str) -> None:
    base = f"http://{hypercorn_server}"
    ws_url = f"ws://{hypercorn_server}"
    red, blue = await to_thread(
        lambda: (Group.objects.create(name="red"), Group.objects.create(name="blue"))
    )
    async with httpx.AsyncClient(base_url=base) as http:
        tokens = []
        for group in (red.pk, blue.pk, 0):
            page = await http.get(f"/signals/page/{group}/")
            assert page.status_code == 200
            config = re.search(
                r'id="trio-djws-config" type="application/json">(.*?)</script>', page.text
            )
            assert config is not None
            tokens.append(json.loads(config[1])["token"])
        assert read_token(tokens[0]).topics == (f"auth.group:{red.pk}",)
        async with AsyncExitStack() as stack:
            windows = [(await open_window(stack, ws_url, token=token))[0] for token in tokens]
            reply = await http.get(f"/signals/notify/{red.pk}/", params={"text": "red news"})
            assert reply.json() == {"sent": True}
            assert (await receive(windows[0]))["kwargs"] == {"text": "red news"}
            # The others got nothing: the next thing each receives is their own echo.
            for ws in windows[1:]:
                await call(ws, "tests.echo", text="mine")
                assert (await receive(ws))["kwargs"] == {"text": "mine"}


async def test_token_window_key_is_the_windows_key(ws_url: str) -> None:
    token = make_token("f" * 32, [])
    async with AsyncExitStack() as stack:
        ws, key = await open_window(stack, ws_url, token=token)
        assert key == "f" * 32
        # trigger() from a worker thread, with a WindowInfo made elsewhere (a dict).
        info = WindowInfo.from_dict(WindowInfo(window_key=key).to_dict())
        await to_thread(lambda: trigger(info, "tests.show", to=[WINDOW], text="by key"))
        assert (await receive(ws))["kwargs"] == {"text": "by key"}


async def test_queued_function_runs_in_the_background_and_triggers_when_done(ws_url: str) -> None:
    async with open_websocket_url(f"{ws_url}/ws/signals/") as ws:
        await receive(ws)
        await call(ws, "tests.slow", key="bg1")
        # The window's next call runs while the queued one still waits for it.
        await call(ws, "tests.release", key="bg1")
        assert (await receive(ws))["kwargs"] == {"text": "slow bg1 released=True"}


async def test_atrigger_runs_server_functions_and_sends_to_broadcast(ws_url: str) -> None:
    test_signals.SERVER_CALLS.clear()
    async with open_websocket_url(f"{ws_url}/ws/signals/") as ws:
        await receive(ws)
        await atrigger(None, "tests.server_side", to=[SERVER, BROADCAST], value=7)
        assert test_signals.SERVER_CALLS == [("server_side", {"value": 7, "window": None})]
        assert (await receive(ws))["kwargs"] == {"value": 7}


async def test_a_signals_websocket_as_trigger_source_is_its_window(ws_url: str) -> None:
    async with AsyncExitStack() as stack:
        _, key = await open_window(stack, ws_url)
        (websocket,) = (w for w in current_server().connections if w.path == "/ws/signals/")
        found = window_info_of(websocket)
        assert found is not None and found.window_key == key
        # From a worker thread too (trigger() in a plain def hook): no RunVar lookup.
        found = await to_thread(window_info_of, websocket)
        assert found is not None and found.window_key == key


async def test_trigger_on_the_trio_thread_needs_a_window() -> None:
    with pytest.raises(RuntimeError, match="atrigger"):
        trigger(None, "tests.show", to=[BROADCAST])


def test_signal_queue_captures_instead_of_delivering(rf: RequestFactory) -> None:
    test_signals.SERVER_CALLS.clear()
    group = Group.objects.create(name="green")
    request = rf.get("/")
    with SignalQueue() as signals:
        trigger(request, "tests.show", to=[WINDOW, BROADCAST, group, "custom"], text="x")
        trigger(request, "tests.server_side", value=1)  # to=[SERVER] by default
    assert test_signals.SERVER_CALLS == []  # captured, not run
    assert [(c.name, c.kwargs) for c in signals.python] == [("tests.server_side", {"value": 1})]
    assert [c.topic for c in signals.javascript] == [
        "WINDOW",
        "BROADCAST",
        f"auth.group:{group.pk}",
        "custom",
    ]
    assert signals.calls("WINDOW") == [("tests.show", {"text": "x"})]
    assert signals.javascript[0].group == f"trio_djws.window.{window_key(request)}"


def test_window_info_round_trips_through_a_dict(rf: RequestFactory) -> None:
    user = User.objects.create_user("eve", is_staff=True)
    request = rf.get("/")
    request.user = user
    set_websocket_topics(request, ["news", user])
    info = WindowInfo.from_request(request)
    assert info.topics == ("news", f"auth.user:{user.pk}")
    assert info.is_authenticated and info.is_staff and info.username == "eve"
    assert info.user_group == f"trio_djws.user.{user.pk}"
    again = WindowInfo.from_dict(json.loads(json.dumps(info.to_dict())))
    assert again == info
    assert again.user is None
    assert again.get_user() == user


def test_serialized_form_binds_the_pages_form_data() -> None:
    converter = SerializedForm(test_signals.EchoForm)
    form = converter([{"name": "scope", "value": "USER"}, {"name": "text", "value": "hi"}])
    assert form.is_valid() and form.cleaned_data == {"scope": "USER", "text": "hi"}
    with pytest.raises(TypeError):
        converter({"scope": "USER"})
    entry = registry.get("tests.echo_form")[0]
    with pytest.raises(TypeError, match="form"):
        entry.bind(WindowInfo(), {})


def test_topic_serializer_setting() -> None:
    assert serialize_topic("plain") == "plain"
    with pytest.raises(TypeError):
        serialize_topic(3)
    with override_settings(WEBSOCKET_TOPIC_SERIALIZER="builtins.repr"):
        assert serialize_topic(3) == "3"


@pytest.mark.parametrize(
    ("overrides", "check_id"),
    [
        ({"WEBSOCKET_TOPIC_SERIALIZER": "tests.nowhere.serialize"}, "trio_djws.E050"),
        ({"WEBSOCKET_CELERY_APP": "tests.nowhere.app"}, "trio_djws.E051"),
        ({"WEBSOCKET_SIGNALS_PATH": "ws/signals"}, "trio_djws.E001"),
        ({"WEBSOCKET_SIGNAL_QUEUE_THREADS": {"slow": 0}}, "trio_djws.E001"),
        ({"WEBSOCKET_TOPICS_MAX_AGE": -1}, "trio_djws.E001"),
    ],
)
def test_signals_settings_are_checked(overrides: dict[str, object], check_id: str) -> None:
    with override_settings(**overrides):
        found = [m for m in checks.run_checks(tags=["trio_djws"]) if m.id == check_id]
    assert len(found) == 1, found
    assert next(iter(overrides)) in found[0].msg


def test_signal_decorator_refuses_async_queued_functions() -> None:
    with pytest.raises(TypeError, match="plain def"):

        @signal(path="tests.bad_queue", queue="q")
        async def bad(window_info: WindowInfo) -> None:
            pass


def test_template_tags_render_the_script_and_the_call_attributes(rf: RequestFactory) -> None:
    request = rf.get("/")
    set_websocket_topics(request, ["news"])
    html = Template(
        '{% load trio_djws %}<input {% js_call "a.b" on="input" form="f" id=42 %}>'
        "{% websocket_script %}"
    ).render(Context({"request": request}))
    assert 'data-djws-call="a.b" data-djws-on="input" data-djws-form="f"' in html
    assert 'data-djws-kwargs="{&quot;id&quot;: 42}"' in html
    assert '<script src="/static/trio_djws/signals.js"></script>' in html
    config = re.search(r'application/json">(.*?)</script>', html)
    assert config is not None
    data = json.loads(config[1])
    assert data["url"] == "/ws/signals/"
    assert data["token"] == topics_token(request)
    assert read_token(data["token"]).topics == ("news",)
    assert read_token(data["token"]).window_key == window_key(request)
    assert USER is not WINDOW
    assert "port" not in data


def test_websocket_script_points_at_the_standalone_port(rf: RequestFactory) -> None:
    html = Template("{% load trio_djws %}{% websocket_script port=8001 %}").render(
        Context({"request": rf.get("/")})
    )
    config = re.search(r'application/json">(.*?)</script>', html)
    assert config is not None
    assert json.loads(config[1])["port"] == 8001


async def test_queue_thread_limit_runs_one_at_a_time(ws_url: str) -> None:
    with override_settings(WEBSOCKET_SIGNAL_QUEUE_THREADS={"slow": 1}):
        async with open_websocket_url(f"{ws_url}/ws/signals/") as ws:
            await receive(ws)
            await call(ws, "tests.slow", key="one-a")  # holds the queue's only thread
            await call(ws, "tests.slow", key="one-b")  # waits for that thread
            await call(ws, "tests.release", key="one-b")  # released, but not running yet
            await call(ws, "tests.release", key="one-a")
            first, second = await receive(ws), await receive(ws)
    assert first["kwargs"]["text"] == "slow one-a released=True"
    assert second["kwargs"]["text"] == "slow one-b released=True"


def test_trigger_from_a_view_thread_runs_server_functions_there(rf: RequestFactory) -> None:
    test_signals.SERVER_CALLS.clear()
    request = rf.get("/")
    trigger(request, "tests.server_side", value=3)
    assert test_signals.SERVER_CALLS == [
        ("server_side", {"value": 3, "window": window_key(request)})
    ]
    # JavaScript destinations from outside a server need a cross-process broker.
    from trio_djws.exceptions import ConfigurationError

    with pytest.raises(ConfigurationError, match="WEBSOCKET_BROKER"):
        trigger(request, "tests.show", to=[BROADCAST], text="nowhere")


def test_annotated_serialized_form_parameter_is_converted() -> None:
    # Annotations are strings here (``from __future__ import annotations``): they are
    # evaluated in the module's globals, where Annotated is imported.
    @signal(path="tests.annotated_form")
    def annotated(
        window_info: WindowInfo,
        form: Annotated[test_signals.EchoForm, SerializedForm(test_signals.EchoForm)],
    ) -> None:
        pass

    try:
        [entry] = registry.get("tests.annotated_form")
        kwargs = entry.bind(WindowInfo(), {"form": [{"name": "text", "value": "x"}]})
        assert isinstance(kwargs["form"], test_signals.EchoForm)
        assert kwargs["form"].data["text"] == "x"
    finally:
        registry._functions.pop("tests.annotated_form", None)


NEWS_GROUP = "trio_djws.topic.news"


async def test_a_window_that_reconnects_with_since_gets_the_calls_its_topics_missed() -> None:
    history = {"trio_djws.topic.*": {"SIZE": 100, "TTL": 60}}
    with override_settings(WEBSOCKET_GROUP_HISTORY=history), trio.fail_after(WAIT):
        app = get_asgi_application()
        token = make_token("w" * 32, ["news"])
        query = urlencode({"token": token})
        async with WebSocketTestClient(app, "/ws/signals/", query_string=query) as ws:
            hello = await ws.receive_json()
            assert hello["v"] == 2 and hello["type"] == "hello"
            assert set(hello["positions"]) == {NEWS_GROUP}  # the only group with history
            start = hello["positions"][NEWS_GROUP]
            await atrigger(None, "tests.show", to=["news"], text="seen")
            seen = await ws.receive_json()
        assert seen == {
            "v": 2,
            "type": "call",
            "signal": "tests.show",
            "kwargs": {"text": "seen"},
            "group": NEWS_GROUP,
            "position": {"epoch": start["epoch"], "offset": start["offset"] + 1},
        }
        for i in range(5):  # the window is away
            await atrigger(None, "tests.show", to=["news"], text=f"missed {i}")
        since = {NEWS_GROUP: f"{seen['position']['epoch']}:{seen['position']['offset']}"}
        query = urlencode({"token": token, "since": json.dumps(since)})
        async with WebSocketTestClient(app, "/ws/signals/", query_string=query) as ws:
            missed = [await ws.receive_json() for _ in range(5)]
            assert [m["kwargs"]["text"] for m in missed] == [f"missed {i}" for i in range(5)]
            hello = await ws.receive_json()
            assert hello["type"] == "hello"
            assert hello["positions"][NEWS_GROUP] == missed[-1]["position"]
        # A position of another epoch: a resync frame after the hello, nothing replayed.
        query = urlencode({"token": token, "since": json.dumps({NEWS_GROUP: "0ther:3"})})
        async with WebSocketTestClient(app, "/ws/signals/", query_string=query) as ws:
            assert (await ws.receive_json())["type"] == "hello"
            assert await ws.receive_json() == {"v": 2, "type": "resync", "group": NEWS_GROUP}


def test_bad_since_positions_are_a_wire_error() -> None:
    for text in [
        "[]",
        "{",
        json.dumps({"g": "nope"}),
        json.dumps({str(i): "e:1" for i in range(65)}),
    ]:
        with pytest.raises(WireError):
            parse_since(text)
    assert parse_since(json.dumps({"g": "e:4"})) == {"g": Position("e", 4)}
