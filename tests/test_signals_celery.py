"""``@signal(queue=...)`` as a Celery task: a real ``celery worker`` subprocess and a live
Hypercorn trio server, both on a private ``redis-server`` (Celery's broker and our
``RedisBroker``). The call goes page → server → Celery → worker process, and the worker's
``trigger()`` comes back to the window through Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
import trio
from django.test import override_settings
from hypercorn.trio import serve as hypercorn_serve
from trio_websocket import open_websocket_url

from tests.conftest import hypercorn_config
from tests.redis_server import RedisServer
from tests.test_signals import call, login, receive
from trio_djws.asgi import get_asgi_application

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[1]
WORKER_TIMEOUT = 40.0  # seconds for the worker to start or stop on a busy 2-core machine


async def start_worker(nursery: trio.Nursery, redis_url: str, log: list[str]) -> trio.Process:
    """``celery worker`` on the ``celery-tests`` queue; returns once it says ready."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.celery_settings",
        "TRIO_DJWS_REDIS_URL": redis_url,
        "PYTHONUNBUFFERED": "1",
    }
    command = [
        sys.executable, "-m", "celery", "-A", "tests.celery_app", "worker",
        "-Q", "celery-tests", "--pool", "solo", "--concurrency", "1",
        "--without-heartbeat", "--without-gossip", "--without-mingle", "-l", "info",
    ]  # fmt: skip
    process: trio.Process = await nursery.start(
        partial(
            trio.run_process,
            command,
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            check=False,
        )
    )
    ready = trio.Event()

    async def read_output() -> None:
        assert process.stdout is not None
        pending = b""
        async for chunk in process.stdout:
            *lines, pending = (pending + chunk).split(b"\n")
            for raw in lines:
                line = raw.decode(errors="replace")
                log.append(line)
                if " ready." in line:
                    ready.set()
        ready.set()  # exited: the test fails on the missing reply, with the log

    nursery.start_soon(read_output)
    with trio.fail_after(WORKER_TIMEOUT):
        await ready.wait()
    return process


async def test_queued_signal_runs_in_a_celery_worker_and_triggers_back(
    redis_server: RedisServer,
) -> None:
    from tests.celery_app import app as celery_app

    celery_app.conf.broker_url = redis_server.url
    log: list[str] = []
    cookie = await login("carol")
    broker = {
        "BACKEND": "trio_djws.brokers.RedisBroker",
        "CONFIG": {"url": redis_server.url, "prefix": "trio_djws_tests"},
    }
    with override_settings(WEBSOCKET_BROKER=broker, WEBSOCKET_CELERY_APP="tests.celery_app.app"):
        async with trio.open_nursery() as nursery:
            worker = await start_worker(nursery, redis_server.url, log)
            try:
                app = get_asgi_application()
                shutdown = trio.Event()
                binds = await nursery.start(
                    partial(
                        hypercorn_serve, app, hypercorn_config(), shutdown_trigger=shutdown.wait
                    )
                )
                url = binds[0].replace("http://", "ws://")
                async with open_websocket_url(
                    f"{url}/ws/signals/", extra_headers=[(b"cookie", cookie.encode())]
                ) as ws:
                    hello = await receive(ws)
                    await call(ws, "tests.celery_job", text="from celery")
                    with trio.fail_after(WORKER_TIMEOUT):
                        frame = json.loads(await ws.get_message())
                assert frame["signal"] == "tests.show"
                assert frame["kwargs"]["text"] == "from celery"
                assert frame["kwargs"]["user"] == "carol"  # WindowInfo went through JSON
                assert frame["kwargs"]["pid"] == worker.pid != os.getpid()
                assert hello["type"] == "hello"
                shutdown.set()
            except BaseException:
                print("\n".join(log))
                raise
            finally:
                worker.terminate()  # warm shutdown
                with trio.move_on_after(WORKER_TIMEOUT, shield=True):
                    await worker.wait()
                if worker.returncode is None:
                    worker.kill()
