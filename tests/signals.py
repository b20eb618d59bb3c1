"""Signal functions of the test suite (autodiscovered: ``tests`` is an installed app)."""

from __future__ import annotations

import os
import threading
from typing import Any

from django import forms

from trio_djws.signals import (
    BROADCAST,
    USER,
    WINDOW,
    SerializedForm,
    WindowInfo,
    everyone,
    is_staff,
    signal,
    trigger,
)

DESTINATIONS = {"WINDOW": WINDOW, "USER": USER, "BROADCAST": BROADCAST}
GATE_TIMEOUT = 30.0  # seconds a queued test function waits for its release
GATES: dict[str, threading.Event] = {}
SERVER_CALLS: list[tuple[str, dict[str, Any]]] = []


class EchoForm(forms.Form):
    scope = forms.ChoiceField(choices=[(name, name) for name in DESTINATIONS])
    text = forms.CharField(max_length=100)


@signal(path="tests.echo", is_allowed_to=everyone)
async def echo(window_info: WindowInfo, text: str, to: str = "WINDOW") -> None:
    # async: trigger() on the trio thread, scheduled on this window's connection
    trigger(window_info, "tests.show", to=[DESTINATIONS[to]], text=text)


@signal(path="tests.echo_form", is_allowed_to=everyone)
def echo_form(window_info: WindowInfo, form: SerializedForm(EchoForm)) -> None:  # type: ignore[valid-type]
    # plain def: a worker thread, so trigger() publishes
    if form.is_valid():
        data = form.cleaned_data
        trigger(window_info, "tests.show", to=[DESTINATIONS[data["scope"]]], text=data["text"])
    else:
        trigger(window_info, "tests.invalid", to=[WINDOW], errors=sorted(form.errors))


@signal(path="tests.members_only")  # the default is_allowed_to: logged-in users only
async def members_only(window_info: WindowInfo) -> None:
    trigger(window_info, "tests.show", to=[WINDOW], text=f"member {window_info.username}")


@signal(path="tests.staff_only", is_allowed_to=is_staff)
async def staff_only(window_info: WindowInfo) -> None:
    trigger(window_info, "tests.show", to=[WINDOW], text="staff")


@signal(path="tests.fail", is_allowed_to=everyone)
async def fail(window_info: WindowInfo) -> None:
    raise RuntimeError("this signal function fails on purpose")


@signal(path="tests.server_side", is_allowed_to=everyone)
def server_side(window_info: WindowInfo, value: int) -> None:
    SERVER_CALLS.append(("server_side", {"value": value, "window": window_info.window_key}))


@signal(path="tests.slow", is_allowed_to=everyone, queue="slow")
def slow(window_info: WindowInfo, key: str) -> None:
    # Background: waits until tests.release (a later call from the same window) sets it.
    released = GATES.setdefault(key, threading.Event()).wait(GATE_TIMEOUT)
    trigger(window_info, "tests.show", to=[WINDOW], text=f"slow {key} released={released}")


@signal(path="tests.release", is_allowed_to=everyone)
def release(window_info: WindowInfo, key: str) -> None:
    GATES.setdefault(key, threading.Event()).set()


@signal(path="tests.celery_job", is_allowed_to=everyone, queue="celery-tests")
def celery_job(window_info: WindowInfo, text: str) -> None:
    trigger(
        window_info,
        "tests.show",
        to=[WINDOW],
        text=text,
        pid=os.getpid(),
        user=window_info.username,
    )
