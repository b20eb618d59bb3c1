"""Prometheus metrics (trio_djws/metrics.py) and the instrumentation hooks they use
(trio_djws/instrument.py): in process with the in-memory test client, and across the worker
processes of a real ``manage.py serve --workers 2 --metrics-bind`` after a scripted load."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import AsyncExitStack, contextmanager
from typing import Final

import httpx
import pytest
import trio
import trio.testing
from django.core import checks
from django.test import override_settings
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from trio_websocket import ConnectionRejected, WebSocketConnection, open_websocket_url

import tests.handlers
import tests.redis_handlers  # noqa: F401  (registers /redis/...)
from tests.processes import REPO_ROOT, child_env, run_django, run_serve
from tests.redis_server import RedisServer
from trio_djws import instrument
from trio_djws.asgi import get_asgi_application
from trio_djws.exceptions import ConnectionClosed
from trio_djws.metrics import PrometheusInstrumentation, close_code_label, enable
from trio_djws.testing import HandshakeRejected, WebSocketTestClient

TIMEOUT: Final = 45.0  # seconds; the autouse watchdog in conftest allows 60
GROUP_NS: Final = "/redis/group/<str:group>/"


@contextmanager
def metrics_on() -> Iterator[PrometheusInstrumentation]:
    instrumentation = enable()
    try:
        yield instrumentation
    finally:
        instrument.unregister(instrumentation)


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_close_code_labels_are_bounded() -> None:
    assert close_code_label(1000) == "1000"
    assert close_code_label(1011) == "1011"
    assert close_code_label(4321) == "4xxx"
    assert close_code_label(3001) == "3xxx"
    assert close_code_label(2999) == "other"
    assert close_code_label(None) == "none"


def test_nothing_is_registered_by_default() -> None:
    # tests/settings.py leaves WEBSOCKET_METRICS and WEBSOCKET_TRACING off: the core's
    # one check per event finds None.
    assert instrument.active is None
    assert instrument.registered() == ()


async def test_connection_messages_hooks_and_close_are_counted() -> None:
    app = get_asgi_application()
    ns = "/echo/"
    before = {
        "opened": value("trio_djws_connections_opened_total", namespace=ns),
        "closed": value("trio_djws_connections_closed_total", namespace=ns, code="1000"),
        "in": value("trio_djws_messages_received_total", namespace=ns),
        "in_bytes": value("trio_djws_received_bytes_total", namespace=ns),
        "out": value("trio_djws_messages_sent_total", namespace=ns),
        "out_bytes": value("trio_djws_sent_bytes_total", namespace=ns),
        "hook": value("trio_djws_hook_duration_seconds_count", hook="on_message", namespace=ns),
        "close_hook": value("trio_djws_hook_duration_seconds_count", hook="on_close", namespace=ns),
        "rejected": value("trio_djws_handshakes_rejected_total", status="403"),
    }
    with metrics_on():
        async with WebSocketTestClient(app, ns) as client:
            for text in ("hello", "héllo"):  # 5 and 6 bytes in UTF-8
                await client.send(text)
                assert await client.receive() == text
            assert value("trio_djws_connections_open", namespace=ns) >= 1
        with pytest.raises(HandshakeRejected):
            async with WebSocketTestClient(app, "/reject/"):
                pass
    assert value("trio_djws_connections_opened_total", namespace=ns) - before["opened"] == 1
    closed = value("trio_djws_connections_closed_total", namespace=ns, code="1000")
    assert closed - before["closed"] == 1
    assert value("trio_djws_messages_received_total", namespace=ns) - before["in"] == 2
    assert value("trio_djws_received_bytes_total", namespace=ns) - before["in_bytes"] == 11
    assert value("trio_djws_messages_sent_total", namespace=ns) - before["out"] == 2
    assert value("trio_djws_sent_bytes_total", namespace=ns) - before["out_bytes"] == 11
    hooks = value("trio_djws_hook_duration_seconds_count", hook="on_message", namespace=ns)
    assert hooks - before["hook"] == 2
    close_hooks = value("trio_djws_hook_duration_seconds_count", hook="on_close", namespace=ns)
    assert close_hooks - before["close_hook"] == 1
    assert value("trio_djws_handshakes_rejected_total", status="403") - before["rejected"] == 1
    assert instrument.active is None  # unregistered again


async def test_one_process_scrape_is_exact_for_open_connections() -> None:
    # One process: the per-message counts and hook durations are read at the scrape itself,
    # nothing waits for a flush; a histogram's count is its +Inf bucket.
    app = get_asgi_application()
    ns = "/echo/"
    names = ("trio_djws_messages_received_total", "trio_djws_sent_bytes_total")
    hook = {"hook": "on_message", "namespace": ns}
    with metrics_on():
        before = [value(name, namespace=ns) for name in names]
        hooks_before = value("trio_djws_hook_duration_seconds_count", **hook)
        async with WebSocketTestClient(app, ns) as client:
            for _ in range(3):
                await client.send("abcd")
                assert await client.receive() == "abcd"
            await trio.testing.wait_all_tasks_blocked()  # the hook has returned
            after = [value(name, namespace=ns) for name in names]
            hooks = value("trio_djws_hook_duration_seconds_count", **hook) - hooks_before
            inf = value("trio_djws_hook_duration_seconds_bucket", le="+Inf", **hook)
            count = value("trio_djws_hook_duration_seconds_count", **hook)
            assert value("trio_djws_hook_duration_seconds_sum", **hook) > 0
    assert [a - b for a, b in zip(after, before, strict=True)] == [3, 12]
    assert hooks == 3
    assert inf == count


async def test_handlers_without_a_namespace_are_labelled_by_class_name() -> None:
    # Bounded: one label per handler class. Every dwebsocket-style view shares the label of
    # the class that serves views; the signals endpoint is labelled SignalHandler.
    app = get_asgi_application()
    opened = "trio_djws_connections_opened_total"
    before = value(opened, namespace="_ViewHandler")
    with metrics_on():
        for path in ("/dws/echo_once/", "/dws/lower_case/"):
            async with WebSocketTestClient(app, path) as client:
                await client.send("HI")
                assert (await client.receive()).lower() == "hi"
    assert value(opened, namespace="_ViewHandler") - before == 2
    assert value(opened, namespace="/dws/echo_once/") == 0


@override_settings(WEBSOCKET_SEND_QUEUE_SIZE=8)
async def test_a_slow_group_member_is_a_slow_consumer_close_and_an_overflow() -> None:
    app = get_asgi_application()
    ns = "/room/<slug:group>/"
    names = {
        "slow": ("trio_djws_slow_consumer_closes_total", {"namespace": ns}),
        "closed": ("trio_djws_connections_closed_total", {"namespace": ns, "code": "1008"}),
        "overflow": ("trio_djws_broker_events_total", {"event": "overflow"}),
    }
    with metrics_on():
        before = {key: value(name, **labels) for key, (name, labels) in names.items()}
        async with (
            WebSocketTestClient(app, "/room/metrics-slow/", receive_buffer=1) as slow,
            WebSocketTestClient(app, "/room/metrics-slow/", receive_buffer=100) as fast,
        ):
            for i in range(30):
                await fast.send(f"m{i}")
                assert await fast.receive() == f"m{i}"
            with pytest.raises(ConnectionClosed) as info:
                while True:
                    await slow.receive()
            assert info.value.code == 1008
    after = {key: value(name, **labels) for key, (name, labels) in names.items()}
    assert after["slow"] - before["slow"] == 1
    assert after["closed"] - before["closed"] == 1
    # One per message that found the slow member's queue full (held, or dropped at the end).
    assert after["overflow"] - before["overflow"] >= 1


async def test_a_redis_outage_counts_lost_publishes_and_reconnects(
    redis_server: RedisServer,
) -> None:
    from tests.test_brokers_redis import in_process_server
    from trio_djws.brokers import RedisBroker
    from trio_djws.state import current_server

    def event(name: str) -> float:
        return value("trio_djws_broker_events_total", event=name)

    with metrics_on(), trio.fail_after(TIMEOUT):
        lost, reconnects = event("lost"), event("reconnect")
        async with in_process_server(redis_server.url) as app:
            broker = current_server().broker
            assert isinstance(broker, RedisBroker)
            async with WebSocketTestClient(app, "/redis/group/metrics-down/") as member:
                assert await member.receive() == "ready"
                await redis_server.stop()
                await broker.wait_subscribed("metrics-down", subscribed=False)
                for i in range(5):
                    await member.send(f"down {i}")
                    assert await member.receive() == f"down {i}"  # local delivery
                await trio.testing.wait_all_tasks_blocked()
                assert event("lost") - lost == 5
                await redis_server.start()
                assert await member.receive() == "resync metrics-down"
                assert event("reconnect") - reconnects >= 1


async def test_a_failing_hook_is_timed_and_its_1011_counted() -> None:
    app = get_asgi_application()
    ns = "/fail/"
    before = value("trio_djws_connections_closed_total", namespace=ns, code="1011")
    with metrics_on():
        async with WebSocketTestClient(app, ns) as client:
            await client.send("boom")
            with pytest.raises(Exception, match="1011"):
                await client.receive()
    assert value("trio_djws_connections_closed_total", namespace=ns, code="1011") - before == 1
    assert value("trio_djws_hook_duration_seconds_count", hook="on_message", namespace=ns) >= 1


def test_metrics_setting_without_prometheus_client_is_check_e093() -> None:
    # A fresh interpreter in which prometheus_client cannot be imported: the app still
    # starts (nothing registered) and the check names the extra.
    code = (
        "import sys; sys.modules['prometheus_client'] = None\n"
        "import django; from django.conf import settings\n"
        "apps = ['django.contrib.contenttypes', 'django.contrib.auth', 'trio_djws']\n"
        "settings.configure(INSTALLED_APPS=apps, WEBSOCKET_METRICS=True)\n"
        "django.setup()\n"
        "from django.core import checks; from trio_djws import instrument\n"
        "print([m.id for m in checks.run_checks() if m.id.startswith('trio_djws.E09')],"
        " instrument.active)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=child_env(None),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.strip() == "['trio_djws.E093'] None"


def test_metrics_setting_with_prometheus_client_passes_the_checks() -> None:
    with override_settings(WEBSOCKET_METRICS=True, WEBSOCKET_TRACING=True):
        ids = [m.id for m in checks.run_checks() if m.id.startswith("trio_djws.E09")]
    assert ids == []


def test_dashboard_without_the_admin_is_check_w095() -> None:
    # tests/settings.py has no django.contrib.admin.
    with override_settings(WEBSOCKET_DASHBOARD_PATH="/ws/dashboard/"):
        ids = [m.id for m in checks.run_checks() if m.id.startswith("trio_djws.W09")]
    assert ids == ["trio_djws.W095"]


async def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = await trio.to_thread.run_sync(httpx.get, url)
    assert response.status_code == 200
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def get(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def scrape_until(
    url: str, ready: Callable[[dict[tuple[str, tuple[tuple[str, str], ...]], float]], bool]
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    # Scrape until ``ready(samples)``: bounded by the test's fail_after, one scrape at a time.
    while not ready(samples := await scrape(url)):
        pass
    return samples


async def open_on_both_workers(
    stack: AsyncExitStack, url: str
) -> tuple[list[WebSocketConnection], int]:
    # Connections to /redis/group/m/ until both worker processes have one; returns them all
    # and the bytes of the "ready <pid>" greetings they got.
    clients: list[WebSocketConnection] = []
    pids: set[str] = set()
    greeted = 0
    for _ in range(200):  # which worker accepts is the kernel's choice
        ws = await stack.enter_async_context(open_websocket_url(f"{url}/redis/group/m/?pid"))
        clients.append(ws)
        greeting = str(await ws.get_message())
        greeted += len(greeting)
        pids.add(greeting.removeprefix("ready "))
        if len(pids) == 2:
            return clients, greeted
    raise AssertionError("one worker accepted 200 connections in a row")


async def test_serve_workers_2_metrics_endpoint_sums_both_processes(
    redis_server: RedisServer,
) -> None:
    from tests.test_brokers_redis import redis_settings

    settings = redis_settings(redis_server.url)
    with trio.fail_after(TIMEOUT):
        async with run_serve(
            "--workers", "2", "--metrics-bind", "127.0.0.1:0", settings=settings
        ) as server:
            (match,) = await server.stdout.wait_for(r"Metrics on (http://\S+)\n")
            metrics_url = match[1]
            url = (await server.urls())[0]
            http_url = url.replace("ws://", "http://")
            await server.stderr.wait_for(r"worker \d \(pid \d+\) starting", 2)
            async with AsyncExitStack() as stack:
                clients, greeted = await open_on_both_workers(stack, url)
                count = len(clients)
                await clients[0].send_message("hello")  # fanned out through Redis to both
                for ws in clients:
                    assert await ws.get_message() == "hello"
                # Present in "lobby" (a group too), and a plain def hook (a worker thread).
                present = await stack.enter_async_context(
                    open_websocket_url(f"{url}/redis/presence/lobby/?name=ada")
                )
                assert json.loads(await present.get_message())["users"] == ["ada"]
                sync = await stack.enter_async_context(open_websocket_url(f"{url}/sync/"))
                await sync.send_message("a")
                assert await sync.get_message() == "thread:a"
                # The gauges are sampled once a second in each worker: scrape until both
                # workers' samples show the connections (no event crosses the processes).
                live = await scrape_until(
                    metrics_url,
                    lambda s: (
                        get(s, "trio_djws_presence_entries") == 1
                        and get(s, "trio_djws_groups") == 3
                    ),  # "m" on each worker, "lobby"
                )
                for ws in clients:
                    await ws.aclose(1000)
                for ws in (present, sync):
                    await ws.aclose(1000)
            # Each close is logged after it was counted.
            await server.stderr.wait_for(r"closed \w+ on '?/redis/group/m/'?: code 1000", count)
            await server.stderr.wait_for(r"closed \w+ on '?/sync/'?: code 1000")
            await server.stderr.wait_for(r"closed \w+ on '?/redis/presence/lobby/'?: code 1000")
            with pytest.raises(ConnectionRejected):  # no @Namespace: 403
                async with open_websocket_url(f"{url}/nowhere/"):
                    pass
            # The Django view: a worker's view of every process's values.
            view = await trio.to_thread.run_sync(httpx.get, f"{http_url}/metrics/")
            assert view.status_code == 200
            assert re.search(
                r'trio_djws_connections_opened_total\{namespace="/redis/group/<str:group>/"\} '
                rf"{count}\.0",
                view.text,
            ), view.text
            await server.stderr.wait_for(r"rejected handshake for '?/nowhere/'? with 403")
            samples = await scrape(metrics_url)
            server.process.send_signal(signal.SIGTERM)
            assert await server.wait_exit() == 0
    ns = {"namespace": GROUP_NS}
    assert get(samples, "trio_djws_connections_opened_total", **ns) == count
    assert get(samples, "trio_djws_connections_closed_total", code="1000", **ns) == count
    assert get(samples, "trio_djws_connections_open", **ns) == 0
    assert get(samples, "trio_djws_messages_received_total", **ns) == 1
    assert get(samples, "trio_djws_received_bytes_total", **ns) == len("hello")
    assert get(samples, "trio_djws_messages_sent_total", **ns) == 2 * count
    sent_bytes = get(samples, "trio_djws_sent_bytes_total", **ns)
    assert sent_bytes == greeted + count * len("hello")  # "ready <pid>", then "hello"
    hook = "trio_djws_hook_duration_seconds_count"
    assert get(samples, hook, hook="on_connect", **ns) == count
    assert get(samples, hook, hook="on_message", **ns) == 1
    assert get(samples, hook, hook="on_close", **ns) == count
    assert get(samples, "trio_djws_handshakes_rejected_total", status="403") == 1
    # "hello": fanned out once on each worker, to all the members together.
    assert get(samples, "trio_djws_group_fanout_members_count") == 2
    assert get(samples, "trio_djws_group_fanout_members_sum") == count
    assert get(samples, "trio_djws_group_deliveries_total") == count
    assert get(samples, "trio_djws_broker_events_total", event="publish") == 1
    assert get(samples, "trio_djws_broker_events_total", event="receive") == 1
    assert get(samples, "trio_djws_broker_events_total", event="lost") == 0
    # The publishing worker subscribes to the group: its own copy came back and was timed.
    assert get(samples, "trio_djws_broker_lag_seconds_count") == 1
    assert get(samples, "trio_djws_http_requests_total", status="200") == 1
    assert get(samples, "trio_djws_slow_consumer_closes_total", **ns) == 0
    assert get(samples, "trio_djws_broker_events_total", event="overflow") == 0
    assert get(samples, "trio_djws_broker_events_total", event="reconnect") == 0
    # One worker thread: the plain def on_message of /sync/.
    assert get(samples, "trio_djws_thread_wait_seconds_count", limiter="db") == 1
    # The sampled gauges while the connections were open: idle queues, no thread busy.
    assert get(live, "trio_djws_send_queue_messages") == 0
    assert get(live, "trio_djws_send_queue_max_messages") == 0
    assert get(live, "trio_djws_db_threads_in_use") == 0
    assert get(live, "trio_djws_connections_open", **ns) == count


async def test_runwebsocket_metrics_bind_serves_the_counts() -> None:
    with trio.fail_after(TIMEOUT):
        async with run_django(
            "runwebsocket", "--bind", "127.0.0.1:0", "--metrics-bind", "127.0.0.1:0"
        ) as server:
            (match,) = await server.stdout.wait_for(r"Metrics on (http://\S+)\n")
            url = (await server.urls())[0]
            async with open_websocket_url(f"{url}/echo/") as ws:
                await ws.send_message("ping")
                assert await ws.get_message() == "ping"
                await ws.aclose(1000)
            await server.stderr.wait_for(r"closed \w+ on '?/echo/'?: code 1000")
            samples = await scrape(match[1])
            server.process.send_signal(signal.SIGTERM)
            assert await server.wait_exit() == 0
    ns = {"namespace": "/echo/"}
    assert get(samples, "trio_djws_connections_opened_total", **ns) == 1
    assert get(samples, "trio_djws_connections_closed_total", code="1000", **ns) == 1
    assert get(samples, "trio_djws_messages_received_total", **ns) == 1
    assert get(samples, "trio_djws_messages_sent_total", **ns) == 1
    assert ("process_cpu_seconds_total", ()) in samples  # one process: the default registry


async def test_metrics_bind_on_a_taken_address_is_a_command_error() -> None:
    with trio.socket.socket() as taken:
        await taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with trio.fail_after(TIMEOUT):
            async with run_serve("--metrics-bind", f"127.0.0.1:{port}") as server:
                assert await server.wait_exit() == 1
                await server.stderr.wait_for(r"CommandError: --metrics-bind: ")


def test_bulk_added_hook_durations_equal_one_observe_each() -> None:
    # trio_djws.metrics adds hook durations through prometheus-client's histogram internals
    # (_sum, _buckets): the exposition must be what observe() per duration gives.
    from prometheus_client import CollectorRegistry, Histogram, generate_latest

    from trio_djws.metrics import BUCKETS, _add_observations

    durations = [0.00005, 0.0003, 0.0003, 0.02, 3.0, 12.0]  # 12 s: the +Inf bucket
    one, bulk = CollectorRegistry(), CollectorRegistry()
    observed = Histogram("h", "h", ["x"], buckets=BUCKETS, registry=one).labels("a")
    for duration in durations:
        observed.observe(duration)
    counts = [0] * (len(BUCKETS) + 1)
    for duration in durations:
        counts[next((i for i, b in enumerate(BUCKETS) if duration <= b), len(BUCKETS))] += 1
    added = Histogram("h", "h", ["x"], buckets=BUCKETS, registry=bulk).labels("a")
    _add_observations(added, sum(durations), counts)
    strip = re.compile(rb"^h_created.*$", re.M)  # creation times differ
    assert strip.sub(b"", generate_latest(one)) == strip.sub(b"", generate_latest(bulk))


async def test_history_group_deliveries_during_a_hand_over_are_counted() -> None:
    # A history group's fan-out takes its slow path while a member joining with since= is
    # handed over: messages published then are held for that member and queued for the
    # others, and both kinds count as deliveries, one fan-out per message.
    from tests.history_handlers import HistoryMember  # noqa: F401  (registers /history/...)
    from trio_djws import send_group_json
    from trio_djws.brokers import InMemoryBroker
    from trio_djws.state import current_server

    group, published = "h.metrics", 5
    settings = {"WEBSOCKET_GROUP_HISTORY": {"h.*": {"SIZE": 100, "TTL": 600}}}
    with override_settings(**settings), metrics_on(), trio.fail_after(TIMEOUT):
        app = get_asgi_application()
        async with WebSocketTestClient(app, f"/history/member/{group}/") as live:
            joined = (await live.receive_json())["position"]
            broker = current_server().broker
            assert isinstance(broker, InMemoryBroker)
            before = {
                "fanouts": value("trio_djws_group_fanout_members_count"),
                "members": value("trio_djws_group_fanout_members_sum"),
                "deliveries": value("trio_djws_group_deliveries_total"),
            }

            async def pause(at: str) -> None:
                if at == "subscribed":  # the new member is in the group and held
                    for n in range(published):
                        await send_group_json(group, {"n": n})

            broker.hand_over_pause = pause
            since = f"{joined['epoch']}:{joined['offset']}"
            try:
                async with WebSocketTestClient(
                    app, f"/history/member/{group}/", query_string=f"since={since}"
                ) as handed_over:
                    assert (await handed_over.receive_json())["recovered"] is True
                    got = [(await handed_over.receive_json())["n"] for _ in range(published)]
                    assert got == list(range(published))
            finally:
                broker.hand_over_pause = None
            assert [(await live.receive_json())["n"] for _ in range(published)] == got
            fanouts = value("trio_djws_group_fanout_members_count") - before["fanouts"]
            members = value("trio_djws_group_fanout_members_sum") - before["members"]
            deliveries = value("trio_djws_group_deliveries_total") - before["deliveries"]
    assert fanouts == published
    assert members == 2 * published  # the live member and the one handed over
    assert deliveries == 2 * published
