"""Chromium through Playwright's sync API, for the browser tests (library and chatroom).

Playwright has no trio API: a test runs its browser scenario in one worker thread
(``trio.to_thread.run_sync``) while trio owns the server. ``chromium()`` launches the
system's Chromium (``shutil.which("chromium")``) with the suite's flags and sets
Playwright's ``expect`` timeout; every step is bounded by BROWSER_TIMEOUT_MS.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

from playwright.sync_api import Browser, Page, ViewportSize, expect, sync_playwright

__all__ = ["BROWSER_TIMEOUT_MS", "CHROMIUM_ARGS", "chromium", "new_page"]

CHROMIUM_ARGS: Final = [
    "--no-sandbox",  # the tests run as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
BROWSER_TIMEOUT_MS: Final = 20_000  # per Playwright step; generous for a busy 2-core machine


@contextmanager
def chromium() -> Iterator[Browser]:
    """A headless Chromium with CHROMIUM_ARGS, closed on the way out (sync: a worker thread)."""
    expect.set_options(timeout=BROWSER_TIMEOUT_MS)
    executable = shutil.which("chromium")
    assert executable is not None, "Chromium is needed: apt-get install chromium"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def new_page(browser: Browser, viewport: ViewportSize | None = None) -> Page:
    """A page in its own browser context (own cookies and localStorage), in a ``viewport``
    (Playwright's default if None), with every step bounded by BROWSER_TIMEOUT_MS."""
    context = browser.new_context() if viewport is None else browser.new_context(viewport=viewport)
    page = context.new_page()
    page.set_default_timeout(BROWSER_TIMEOUT_MS)
    return page
