"""Signals end to end in real Chromium (Playwright) against a live Hypercorn trio server.

Playwright has no trio API: its sync API runs in one worker thread while the server runs in
this trio run. Two users, three pages: a form field change calls a Python signal, which calls
a JavaScript function in one window (WINDOW), in the user's windows (USER) or in all
(BROADCAST); a view reaches the windows granted a model instance; errors keep the socket open.
A window that reconnects recovers the calls its topics missed (group history).
"""

from __future__ import annotations

import pytest
import trio
from django.conf import settings
from django.contrib.auth.models import Group, User
from django.test import Client, override_settings
from playwright.sync_api import Browser, Page, expect

from tests.browser import chromium, new_page
from trio_djws.threads import to_thread

pytestmark = pytest.mark.django_db(transaction=True)


def _setup() -> tuple[dict[str, str], int, int]:
    # Worker thread: two users logged in (session cookies) and two topic objects.
    cookies = {}
    for name in ("alice", "bob"):
        User.objects.create_user(name, password="secret-pw")
        client = Client()
        assert client.login(username=name, password="secret-pw")
        cookies[name] = client.cookies[settings.SESSION_COOKIE_NAME].value
    red, blue = Group.objects.create(name="red"), Group.objects.create(name="blue")
    return cookies, red.pk, blue.pk


def open_page(browser: Browser, base: str, cookie: str, group: int) -> Page:
    page = new_page(browser)
    page.context.add_cookies([{"name": settings.SESSION_COOKIE_NAME, "value": cookie, "url": base}])
    page.goto(f"{base}/signals/page/{group}/")
    expect(page.locator("#state")).to_have_text("open")
    return page


def send(page: Page, scope: str, text: str) -> None:
    """Choose the scope and change the text field: the js_call sends the form."""
    page.locator("#scope").select_option(scope)
    page.locator("#text").fill(text)
    page.locator("#text").press("Tab")  # "change"


def scenario(base: str, cookies: dict[str, str], red: int, blue: int) -> None:
    with chromium() as browser:
        alice1 = open_page(browser, base, cookies["alice"], red)
        alice2 = open_page(browser, base, cookies["alice"], blue)
        bob1 = open_page(browser, base, cookies["bob"], red)
        logs = {page: page.locator("#log li") for page in (alice1, alice2, bob1)}

        send(alice1, "WINDOW", "w1")
        expect(logs[alice1]).to_have_text(["w1"])
        send(alice1, "USER", "u1")
        expect(logs[alice1]).to_have_text(["w1", "u1"])
        expect(logs[alice2]).to_have_text(["u1"])
        send(bob1, "BROADCAST", "b1")
        # Frames keep their order per window: nothing else arrived before b1.
        expect(logs[alice1]).to_have_text(["w1", "u1", "b1"])
        expect(logs[alice2]).to_have_text(["u1", "b1"])
        expect(logs[bob1]).to_have_text(["b1"])

        # A view triggers to the red Group: only the pages whose view granted it.
        reply = alice1.request.get(f"{base}/signals/notify/{red}/?text=red+news")
        assert reply.json() == {"sent": True}
        expect(logs[alice1]).to_have_text(["w1", "u1", "b1", "red news"])
        expect(logs[bob1]).to_have_text(["b1", "red news"])
        send(bob1, "BROADCAST", "b2")
        expect(logs[alice2]).to_have_text(["u1", "b1", "b2"])

        # Refusals are error events; the socket stays open.
        errors = alice2.locator("#errors li")
        alice2.locator("#staff").click()
        expect(errors).to_have_text(["tests.staff_only:forbidden"])
        alice2.evaluate("TrioDJWS.call('tests.no_such', {})")
        alice2.evaluate("TrioDJWS.call('tests.echo', {bogus: 1})")
        send(alice2, "WINDOW", " ")  # blank: the bound form is invalid
        expect(errors).to_have_text(
            [
                "tests.staff_only:forbidden",
                "tests.no_such:unknown_signal",
                "tests.echo:bad_kwargs",
                "invalid:text",
            ]
        )
        send(alice2, "WINDOW", "still open")
        expect(logs[alice2]).to_have_text(["u1", "b1", "b2", "still open"])

        # A forged token is refused (the client keeps retrying); calls made meanwhile
        # wait in the queue and go out once a valid token connects again.
        alice2.evaluate(
            """() => {
                const config = JSON.parse(
                    document.getElementById("trio-djws-config").textContent);
                window.goodConfig = config;
                TrioDJWS.stop();
                TrioDJWS.start({url: config.url, token: config.token.slice(0, -4) + "AAAA"});
            }"""
        )
        expect(alice2.locator("#state")).to_have_text("reconnecting")
        # The queue holds 100 calls: the 101st drops the oldest, with a "dropped" event.
        alice2.evaluate(
            """() => {
                TrioDJWS.call('tests.fail', {});
                TrioDJWS.call('tests.echo', {text: 'queued', to: 'WINDOW'});
                for (let i = 0; i < 99; i++) TrioDJWS.call('tests.server_side', {value: i});
            }"""
        )
        expect(errors.last).to_have_text("dropped:tests.fail")
        alice2.evaluate("() => { TrioDJWS.stop(); TrioDJWS.start(window.goodConfig); }")
        expect(alice2.locator("#state")).to_have_text("open")
        expect(logs[alice2]).to_have_text(["u1", "b1", "b2", "still open", "queued"])
        expect(errors).to_have_count(5)  # tests.fail was dropped, never sent


async def test_signals_in_chromium_window_user_broadcast_topics_errors(
    hypercorn_server: str,
) -> None:
    cookies, red, blue = await to_thread(_setup)
    await trio.to_thread.run_sync(
        scenario,
        f"http://{hypercorn_server}",
        cookies,
        red,
        blue,
        limiter=trio.CapacityLimiter(1),
    )


def recovery_scenario(base: str, cookies: dict[str, str], red: int) -> None:
    with chromium() as browser:
        page = open_page(browser, base, cookies["alice"], red)
        log = page.locator("#log li")

        def notify(text: str) -> None:
            reply = page.request.get(f"{base}/signals/notify/{red}/?text={text}")
            assert reply.json() == {"sent": True}

        notify("seen")
        expect(log).to_have_text(["seen"])
        # The window goes away; the red topic gets three calls meanwhile (from a view).
        page.evaluate(
            """() => {
                window.goodConfig = JSON.parse(
                    document.getElementById("trio-djws-config").textContent);
                TrioDJWS.stop();
            }"""
        )
        expect(page.locator("#state")).to_have_text("closed")
        missed = [f"missed-{i}" for i in range(3)]
        for text in missed:
            notify(text)
        # Back with its positions: the missed calls run once each, in order, then live.
        page.evaluate("() => TrioDJWS.start(window.goodConfig)")
        expect(page.locator("#state")).to_have_text("open")
        expect(log).to_have_text(["seen", *missed])
        notify("live")
        expect(log).to_have_text(["seen", *missed, "live"])


async def test_signals_js_recovers_the_calls_a_topic_missed(hypercorn_server: str) -> None:
    cookies, red, _ = await to_thread(_setup)
    history = {"trio_djws.topic.*": {"SIZE": 100, "TTL": 60}}
    with override_settings(WEBSOCKET_GROUP_HISTORY=history):
        await trio.to_thread.run_sync(
            recovery_scenario,
            f"http://{hypercorn_server}",
            cookies,
            red,
            limiter=trio.CapacityLimiter(1),
        )
