"""Worker threads for sync code, and the guard that keeps the ORM off the trio thread."""

from __future__ import annotations

import threading

import pytest
import trio
from django.contrib.auth.models import User
from django.core.exceptions import SynchronousOnlyOperation
from trio_websocket import open_websocket_url

import trio_djws
from trio_djws.threads import db_limiter, http_limiter


@pytest.mark.django_db(transaction=True)
async def test_orm_query_on_the_trio_thread_raises() -> None:
    with pytest.raises(SynchronousOnlyOperation, match="database_sync_to_thread"):
        User.objects.count()


@pytest.mark.django_db(transaction=True)
async def test_database_sync_to_thread_runs_the_orm_in_a_worker_thread() -> None:
    @trio_djws.database_sync_to_thread
    def create_and_count(name: str) -> tuple[int, bool]:
        User.objects.create(username=name)
        return User.objects.count(), threading.current_thread() is threading.main_thread()

    assert await create_and_count("ada") == (1, False)
    assert await trio_djws.to_thread(User.objects.filter(username="ada").exists) is True


@pytest.mark.django_db(transaction=True)
async def test_handlers_see_the_guard_and_the_thread_path(ws_url: str) -> None:
    async with open_websocket_url(f"{ws_url}/orm-on-trio-thread/") as ws:
        await ws.send_message("go")
        assert await ws.get_message() == "SynchronousOnlyOperation"
    async with open_websocket_url(f"{ws_url}/orm-in-thread/") as ws:
        await ws.send_message("go")
        assert await ws.get_message() == "0"


async def test_limiters_are_separate_and_sized_from_settings() -> None:
    assert db_limiter() is not http_limiter()
    assert db_limiter().total_tokens == 10
    assert http_limiter().total_tokens == 40
    assert db_limiter() is db_limiter()


@pytest.mark.django_db(transaction=True)
async def test_db_limiter_bounds_concurrent_threads() -> None:
    limiter = db_limiter()
    running = 0
    peak = 0
    lock = threading.Lock()
    release = threading.Event()
    started = trio.Semaphore(0)
    token = trio.lowlevel.current_trio_token()

    def work() -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        trio.from_thread.run_sync(started.release, trio_token=token)
        release.wait(10)
        with lock:
            running -= 1

    async with trio.open_nursery() as nursery:
        for _ in range(limiter.total_tokens + 5):
            nursery.start_soon(trio_djws.to_thread, work)
        for _ in range(limiter.total_tokens):
            await started.acquire()
        await trio.testing.wait_all_tasks_blocked()
        assert limiter.borrowed_tokens == limiter.total_tokens
        release.set()
    assert peak <= limiter.total_tokens
