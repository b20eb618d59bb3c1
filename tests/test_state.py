"""The server state: what ``open_server`` does before the first handshake."""

from __future__ import annotations

import sys
import threading

import pytest
from django.test import override_settings

from trio_djws.state import open_server


async def test_open_server_imports_the_urlconf_in_a_worker_thread() -> None:
    # The first handshake that no @Namespace matches resolves ROOT_URLCONF on the trio
    # thread; importing the view modules there would stall every connection.
    sys.modules.pop("tests.thread_urls", None)
    with override_settings(ROOT_URLCONF="tests.thread_urls"):
        async with open_server():
            module = sys.modules.get("tests.thread_urls")
            assert module is not None, "the URLconf was not imported at startup"
            assert module.IMPORTED_IN is not threading.main_thread()


async def test_open_server_survives_a_urlconf_that_fails_to_import(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with override_settings(ROOT_URLCONF="tests.no_such_urls"):
        async with open_server() as state:
            assert not state.draining
    assert "ROOT_URLCONF 'tests.no_such_urls' failed to import" in caplog.text
