"""The benchmark runner: starts each server under test pinned to core 0 and the load generator
(``bench.loadgen``) pinned to core 1 (``taskset``), on loopback, and writes
``bench/results/results.{json,md}`` and one PNG chart per workload.

Every server is a fresh process per workload (per receiver count for ``broadcast``); every
wait is bounded (server start, each load generator run, server stop).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.metadata
import importlib.util
import json
import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.sync.client import connect as sync_connect

from . import report

__all__ = ["SERVERS", "Server", "main"]

ROOT = Path(__file__).resolve().parent.parent
APP_MANAGE = ROOT / "bench" / "app" / "manage.py"
CHAT_MANAGE = ROOT / "examples" / "chatroom" / "manage.py"
CHANNELS_APP = "bench.channels_app.asgi:application"
SERVER_CORE, CLIENT_CORE = "0", "1"
START_TIMEOUT = 30.0  # seconds for a server to answer its first handshake
STOP_TIMEOUT = 15.0  # seconds between SIGTERM and SIGKILL
BROADCAST_QUEUE = 256  # WEBSOCKET_SEND_QUEUE_SIZE / channel layer capacity for broadcast
POSTGRES_URL = "postgres://postgres@127.0.0.1:5432/bench_chatroom"


def _has_runwebsocket() -> bool:
    return importlib.util.find_spec("trio_djws.management.commands.runwebsocket") is not None


def _has_metrics() -> bool:
    return (
        importlib.util.find_spec("prometheus_client") is not None
        and importlib.util.find_spec("trio_djws.metrics") is not None
    )


def _has_redis_broker() -> bool:
    try:
        from trio_djws import brokers
    except ImportError:
        return False
    return hasattr(brokers, "RedisBroker") and shutil.which("redis-server") is not None


@dataclass
class Server:
    """One server under test: how to start it on a port, and whether it is ours."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    ours: bool = True
    available: bool = True
    why_not: str = ""
    compression: str | None = None  # what the load generator offers ("deflate"), if anything
    http: bool = False  # serves the benchmark project's HTTP view (the ``http`` workload)
    only: tuple[str, ...] | None = None  # the workloads it is measured in (None: every one)

    def runs(self, workload: str) -> bool:
        """Whether this server is measured in ``workload``."""
        return self.only is None or workload in self.only

    def command(self, port: int) -> list[str]:
        return [a.format(port=port, python=sys.executable) for a in self.argv]


def _standalone(engine: str) -> Server:
    # manage.py runwebsocket with WEBSOCKET_ENGINE = engine (bench/app/settings.py reads it).
    name = "trio-djws-standalone-" + engine.replace("_", "-")
    return Server(
        name,
        ["{python}", str(APP_MANAGE), "runwebsocket", "--bind", "127.0.0.1:{port}"],
        env={"BENCH_ENGINE": engine},
        available=_has_runwebsocket(),
        why_not="manage.py runwebsocket (the standalone server) is not in this tree",
    )


def _hypercorn_trio(app: str) -> list[str]:
    # The plain Hypercorn CLI with its trio worker on the ASGI app ``app`` (module:attribute).
    return ["{python}", "-m", "hypercorn", "-k", "trio", "-b", "127.0.0.1:{port}", app]


SERVE_ARGV = ["{python}", str(APP_MANAGE), "serve", "--bind", "127.0.0.1:{port}"]
SERVERS: dict[str, Server] = {
    "trio-djws": Server("trio-djws", SERVE_ARGV, http=True),
    # manage.py serve with WEBSOCKET_COMPRESSION = "deflate", clients offering it.
    "trio-djws-deflate": Server(
        "trio-djws-deflate",
        SERVE_ARGV,
        env={"BENCH_COMPRESSION": "deflate"},
        compression="deflate",
        only=("broadcast", "idle"),  # the cost of compression: memory and fan-out
    ),
    # The same project under the plain Hypercorn CLI (the ASGI app, no manage.py serve).
    "trio-djws-hypercorn": Server(
        "trio-djws-hypercorn",
        _hypercorn_trio("benchapp.asgi:application"),
        env={"PYTHONPATH": f"{ROOT}:{ROOT / 'bench' / 'app'}"},
        http=True,
        only=("http",),  # the HTTP baseline of manage.py serve
    ),
    "trio-djws-standalone-websockets": _standalone("websockets"),
    "trio-djws-standalone-trio-websocket": _standalone("trio_websocket"),
    # The cost of the Prometheus metrics (--metrics-bind turns them on), against the same
    # servers without: echo and broadcast only.
    "trio-djws-metrics": Server(
        "trio-djws-metrics",
        [*SERVE_ARGV, "--metrics-bind", "127.0.0.1:0"],
        available=_has_metrics(),
        why_not="prometheus-client or trio_djws.metrics is missing",
        only=("echo", "pipelined", "broadcast"),
    ),
    "trio-djws-standalone-websockets-metrics": Server(
        "trio-djws-standalone-websockets-metrics",
        [*_standalone("websockets").argv, "--metrics-bind", "127.0.0.1:0"],
        env={"BENCH_ENGINE": "websockets"},
        available=_has_runwebsocket() and _has_metrics(),
        why_not="prometheus-client, trio_djws.metrics or runwebsocket is missing",
        only=("echo", "pipelined", "broadcast"),
    ),
    "bare-hypercorn-trio": Server(
        "bare-hypercorn-trio",
        _hypercorn_trio("bench.bare_app:app"),
        ours=False,
    ),
    "channels-daphne": Server(
        "channels-daphne",
        ["{python}", "-m", "daphne", "-v", "0", "-b", "127.0.0.1", "-p", "{port}", CHANNELS_APP],
        ours=False,
    ),
    "channels-uvicorn": Server(
        "channels-uvicorn",
        [
            "{python}",
            "-m",
            "uvicorn",
            "--host",
            "127.0.0.1",
            "--port",
            "{port}",
            "--log-level",
            "warning",
            "--no-access-log",
            CHANNELS_APP,
        ],
        ours=False,
    ),
    "channels-hypercorn": Server(
        "channels-hypercorn",
        ["{python}", "-m", "hypercorn", "-k", "asyncio", "-b", "127.0.0.1:{port}", CHANNELS_APP],
        ours=False,
    ),
}


def _free_port() -> int:
    # An ephemeral port from the kernel; the server binds it right after.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _taskset(core: str) -> list[str]:
    return ["taskset", "-c", core] if shutil.which("taskset") and os.cpu_count() != 1 else []


@contextlib.contextmanager
def running(
    server: Server, env: dict[str, str] | None = None, argv: list[str] | None = None
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """Start ``server`` on core 0 and a fresh port; yields the process and its ws:// base URL
    once it answers a handshake on ``/echo/`` (or ``probe`` path); stops it on exit."""
    port = _free_port()
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **server.env, **(env or {})}
    command = argv if argv is not None else server.command(port)
    command = [a.format(port=port, python=sys.executable) for a in command]
    log = tempfile.TemporaryFile()
    process = subprocess.Popen(
        _taskset(SERVER_CORE) + command, cwd=ROOT, env=full_env, stdout=log, stderr=log
    )
    base = f"ws://127.0.0.1:{port}"
    try:
        probe = full_env.get("BENCH_PROBE", "/echo/")
        stop = time.monotonic() + START_TIMEOUT
        while True:
            if process.poll() is not None:
                log.seek(0)
                raise RuntimeError(
                    f"{server.name} exited with {process.returncode}: {log.read()[-2000:]!r}"
                )
            try:
                with sync_connect(base + probe, open_timeout=2, compression=None) as ws:
                    ws.close()
                break
            except Exception as exc:
                if time.monotonic() > stop:
                    raise RuntimeError(
                        f"{server.name} did not answer within {START_TIMEOUT}s"
                    ) from exc
                time.sleep(0.1)  # polling a subprocess that is starting; bounded above
        yield process, base
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.seek(0)
        tail = log.read()[-3000:].decode(errors="replace")
        if "Traceback" in tail:
            print(f"  [{server.name} log tail]\n{tail}", file=sys.stderr)


def loadgen(workload: str, params: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run ``bench.loadgen`` on core 1 and return its JSON result (``{"error": ...}`` if it
    failed or ran past ``timeout`` seconds)."""
    try:
        done = subprocess.run(
            [
                *_taskset(CLIENT_CORE),
                sys.executable,
                "-m",
                "bench.loadgen",
                workload,
                json.dumps(params),
            ],
            cwd=ROOT,
            capture_output=True,
            timeout=timeout,
            check=False,
            text=True,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"load generator ran past {timeout}s"}
    if done.returncode != 0:
        return {"error": done.stderr[-2000:]}
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


@contextlib.contextmanager
def profiling(enabled: bool, pid: int, name: str, seconds: float, out: Path) -> Iterator[None]:
    """Record a py-spy flame graph of ``pid`` (and children) for ``seconds`` when enabled."""
    local = Path(sys.executable).parent / "py-spy"
    spy_bin = str(local) if local.exists() else shutil.which("py-spy")
    if not enabled or spy_bin is None:
        yield
        return
    spies = []
    for fmt, suffix in (("flamegraph", "svg"), ("raw", "collapsed.txt")):
        # The SVG to look at, the collapsed stacks to read and compare (raw format).
        command = [spy_bin, "record", "--subprocesses", "--nonblocking", "--rate", "250"]
        command += ["--duration", str(int(seconds)), "--pid", str(pid), "--format", fmt]
        command += ["--output", str(out / f"flame-{name}.{suffix}")]
        spies.append(
            subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        )
    try:
        yield
    finally:
        for spy in spies:
            try:
                spy.wait(seconds + 30)
            except subprocess.TimeoutExpired:
                spy.kill()
                spy.wait()


# -- workloads ------------------------------------------------------------------------------


def _record(server: str, workload: str, params: dict[str, Any], result: dict[str, Any]) -> dict:
    with open("/proc/loadavg") as f:
        load = f.read().split()[0]
    # Work per server CPU-second: steadier than rates when other jobs share the server's core.
    for rate_key in ("deliveries_per_s", "messages_per_s", "rate"):
        cpu = result.get("server_cpu_pct")
        if isinstance(result.get(rate_key), int | float) and cpu:
            result["per_server_cpu_s"] = round(result[rate_key] / (cpu / 100), 1)
            break
    return {"server": server, "workload": workload, "params": params, "loadavg": load, **result}


def run_echo(server: Server, cfg: dict[str, Any], opts: argparse.Namespace) -> list[dict]:
    records = []
    for workload, window in (("echo", 1), ("pipelined", cfg["window"])):
        if workload not in opts.workloads or not server.runs(workload):
            continue
        with running(server) as (process, base):
            params = {
                "url": base + "/echo/",
                "clients": cfg["clients"],
                "round_trips": cfg["round_trips"],
                "window": window,
                "deadline": cfg["deadline"],
                "server_pids": [process.pid],
                "compression": server.compression,
            }
            with profiling(
                opts.profile and server.name == "trio-djws",
                process.pid,
                workload,
                min(cfg["deadline"], 15),
                opts.out,
            ):
                result = loadgen("echo", params, cfg["deadline"] + 60)
        records.append(_record(server.name, workload, _public(params), result))
        _show(records[-1])
    return records


def run_broadcast(
    server: Server,
    cfg: dict[str, Any],
    opts: argparse.Namespace,
    *,
    workers: int = 1,
    workload: str = "broadcast",
    history: int | None = None,
) -> list[dict]:
    records = []
    env = {"BENCH_SEND_QUEUE_SIZE": str(cfg["queue_size"])}
    if history is not None:
        env["BENCH_HISTORY"] = str(history)  # the group keeps history (messages)
    extra: dict[str, list[int]] = {}
    redis = None
    argv = None
    if cfg.get("redis"):
        redis = _start_redis()
        env["BENCH_REDIS_URL"] = f"redis://127.0.0.1:{redis[1]}/0"
        extra["redis"] = [redis[0].pid]
        workload = f"broadcast-redis-{workers}w"
        argv = [*server.argv, "--workers", str(workers)]
    try:
        for receivers in cfg["receivers"]:
            with running(server, env, argv) as (process, base):
                params = {
                    "url": base + "/broadcast/",
                    "receivers": receivers,
                    "rates": cfg["rates"],
                    "duration": cfg["duration"],
                    "drain": cfg["drain"],
                    "deadline": cfg["deadline"],
                    "server_pids": [process.pid],
                    "extra_pids": extra,
                    "compression": server.compression,
                }
                name = f"broadcast-{receivers}"
                with profiling(
                    opts.profile and server.name == "trio-djws" and receivers == 1000,
                    process.pid,
                    name,
                    len(cfg["rates"]) * cfg["duration"] + 4,
                    opts.out,
                ):
                    result = loadgen("broadcast", params, cfg["deadline"] + 120)
            public = _public(params) | {"queue_size": cfg["queue_size"], "workers": workers}
            if "error" in result:
                records.append(_record(server.name, workload, public, result))
                _show(records[-1])
                continue
            for run in result["runs"]:
                if run.get("error") == "backlog":
                    run["error"] = "not run: the previous rate's backlog did not drain in 30 s"
                records.append(_record(server.name, workload, public | {"rate": run["rate"]}, run))
                _show(records[-1])
    finally:
        if redis is not None:
            redis[0].terminate()
            redis[0].wait(STOP_TIMEOUT)
    return records


def run_history(cfg: dict[str, Any], opts: argparse.Namespace) -> list[dict]:
    # broadcast on trio-djws with the group's history off, then on: the same run, same load.
    records: list[dict] = []
    for mode in ("off", "on"):
        history = {"history": cfg["history_size"]} if mode == "on" else {}
        records += run_broadcast(
            SERVERS["trio-djws"], cfg, opts, workload=f"broadcast-history-{mode}", **history
        )
    return records


def run_storm(cfg: dict[str, Any], opts: argparse.Namespace) -> list[dict]:
    env = {"BENCH_HISTORY": str(cfg["missed"] * 2), "BENCH_SEND_QUEUE_SIZE": "256"}
    with running(SERVERS["trio-djws"], env) as (process, base):
        params = {
            "url": base + "/history/",
            "clients": cfg["clients"],
            "missed": cfg["missed"],
            "deadline": cfg["deadline"],
            "server_pids": [process.pid],
        }
        result = loadgen("storm", params, cfg["deadline"] + 60)
    record = _record("trio-djws", "storm", _public(params), result)
    _show(record)
    return [record]


def run_idle(server: Server, cfg: dict[str, Any], opts: argparse.Namespace) -> list[dict]:
    records = []
    for count in cfg["connections"]:
        with running(server) as (process, base):
            params = {
                "url": base + "/echo/",
                "connections": count,
                "echo_clients": cfg["echo_clients"] if count == max(cfg["connections"]) else 0,
                "round_trips": cfg["round_trips"],
                "deadline": cfg["deadline"],
                "server_pids": [process.pid],
                "compression": server.compression,
            }
            result = loadgen("idle", params, cfg["deadline"] + 90)
        records.append(_record(server.name, "idle", _public(params), result))
        _show(records[-1])
    return records


def run_http(server: Server, cfg: dict[str, Any], opts: argparse.Namespace) -> list[dict]:
    """The ``http`` workload: ``clients`` keep-alive connections GET the project's small view
    (``/hello/``) ``requests`` times each."""
    with running(server) as (process, base):
        host, port = base.removeprefix("ws://").rsplit(":", 1)
        params = {
            "host": host,
            "port": int(port),
            "path": "/hello/",
            "clients": cfg["clients"],
            "requests": cfg["requests"],
            "deadline": cfg["deadline"],
            "server_pids": [process.pid],
        }
        result = loadgen("http", params, cfg["deadline"] + 60)
    record = _record(server.name, "http", _public(params), result)
    _show(record)
    return [record]


def run_chatroom(cfg: dict[str, Any], opts: argparse.Namespace) -> list[dict]:
    records = []
    chat = Server(
        "trio-djws", ["{python}", str(CHAT_MANAGE), "serve", "--bind", "127.0.0.1:{port}"]
    )
    for database in cfg["databases"]:
        if database == "sqlite":
            url = f"sqlite:///{opts.tmp}/bench-chatroom.sqlite3"
        else:
            url = POSTGRES_URL
            _create_postgres_database()
        env = {
            "DATABASE_URL": url,
            "DJANGO_DEBUG": "0",
            "CHAT_RATE_LIMIT": "off",  # the load is the point: no per-connection limit
            "BENCH_PROBE": f"/ws/chat/{cfg['slug_prefix']}0/",
        }
        _prepare_chatroom(env, cfg)
        with running(chat, env) as (process, base):
            params = {
                "url": base,
                "users": cfg["users"],
                "rooms": cfg["rooms"],
                "messages": cfg["messages"],
                "slug_prefix": cfg["slug_prefix"],
                "deadline": cfg["deadline"],
                "server_pids": [process.pid],
            }
            result = loadgen("chatroom", params, cfg["deadline"] + 60)
        records.append(
            _record("trio-djws", f"chatroom-{database}", _public(params) | {"db": database}, result)
        )
        _show(records[-1])
    return records


def _prepare_chatroom(env: dict[str, str], cfg: dict[str, Any]) -> None:
    # Schema, the benchmark's rooms, and no old messages (the history read stays the same).
    full = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
    cwd = CHAT_MANAGE.parent
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=cwd,
        env=full,
        check=True,
        timeout=120,
    )
    code = (
        "from chat.models import Room, Message\n"
        f"slugs = ['{cfg['slug_prefix']}%d' % i for i in range({cfg['rooms']})]\n"
        "for s in slugs: Room.objects.get_or_create(slug=s, defaults={'name': s})\n"
        "Message.objects.filter(room__slug__in=slugs).delete()\n"
    )
    subprocess.run(
        [sys.executable, "manage.py", "shell", "-v", "0", "-c", code],
        cwd=cwd,
        env=full,
        check=True,
        timeout=120,
    )


def _create_postgres_database() -> None:
    import psycopg

    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as c:
        exists = c.execute("SELECT 1 FROM pg_database WHERE datname = 'bench_chatroom'").fetchone()
        if not exists:
            c.execute("CREATE DATABASE bench_chatroom")


def _start_redis() -> tuple[subprocess.Popen[bytes], int]:
    port = _free_port()
    process = subprocess.Popen(
        [
            *_taskset(SERVER_CORE),
            "redis-server",
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    stop = time.monotonic() + START_TIMEOUT
    while time.monotonic() < stop:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return process, port
        time.sleep(0.05)  # redis-server starting; bounded by START_TIMEOUT
    process.kill()
    raise RuntimeError("redis-server did not start")


def _public(params: dict[str, Any]) -> dict[str, Any]:
    hidden = {"url", "server_pids", "extra_pids", "host", "port"}
    return {k: v for k, v in params.items() if k not in hidden}


def _show(record: dict[str, Any]) -> None:
    keys = [k for k in record if k not in {"params"}]
    print("  " + ", ".join(f"{k}={record[k]}" for k in keys), flush=True)


# -- configuration ------------------------------------------------------------------------

FULL: dict[str, dict[str, Any]] = {
    "echo": {"clients": 50, "round_trips": 2000, "window": 16, "deadline": 45},
    "http": {"clients": 50, "requests": 200, "deadline": 45},
    "broadcast": {
        "receivers": [100, 1000, 5000],
        "rates": [1, 5, 50],
        "duration": 4,
        "drain": 10,
        "deadline": 60,
        "queue_size": BROADCAST_QUEUE,
    },
    "idle": {
        "connections": [5000, 10000],
        "echo_clients": 50,
        "round_trips": 200,
        "deadline": 60,
    },
    "chatroom": {
        "users": 200,
        "rooms": 10,
        "messages": 10,
        "slug_prefix": "bench-",
        "databases": ["sqlite", "postgres"],
        "deadline": 60,
    },
    "redis": {
        "receivers": [100, 1000],
        "rates": [5, 50],
        "duration": 4,
        "drain": 15,
        "deadline": 60,
        "queue_size": BROADCAST_QUEUE,
        "redis": True,
    },
    "history": {
        "receivers": [1000],
        "rates": [5, 50],
        "duration": 4,
        "drain": 10,
        "deadline": 60,
        "queue_size": BROADCAST_QUEUE,
        "history_size": 1000,
    },
    "storm": {"clients": 1000, "missed": 100, "deadline": 90},
}

SMOKE_BROADCAST: dict[str, Any] = {
    "receivers": [10],
    "rates": [5],
    "duration": 2,
    "drain": 10,
    "deadline": 20,
    "queue_size": 64,
}
SMOKE: dict[str, dict[str, Any]] = {
    "echo": {"clients": 5, "round_trips": 50, "window": 4, "deadline": 20},
    "http": {"clients": 5, "requests": 20, "deadline": 20},
    "broadcast": SMOKE_BROADCAST,
    "idle": {"connections": [50], "echo_clients": 5, "round_trips": 20, "deadline": 20},
    "chatroom": {
        "users": 20,
        "rooms": 2,
        "messages": 3,
        "slug_prefix": "smoke-",
        "databases": ["sqlite", "postgres"],
        "deadline": 30,
    },
    "redis": {**SMOKE_BROADCAST, "redis": True},
    "history": {**SMOKE_BROADCAST, "history_size": 100},
    "storm": {"clients": 20, "missed": 10, "deadline": 30},
}

WORKLOADS = [
    "echo",
    "pipelined",
    "http",
    "broadcast",
    "idle",
    "chatroom",
    "redis",
    "history",
    "storm",
]


def _versions() -> dict[str, str]:
    names = ["trio-djws", "trio", "hypercorn", "channels", "daphne", "uvicorn", "websockets"]
    found = {}
    for name in names:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found[name] = importlib.metadata.version(name)
    found["python"] = platform.python_version()
    return found


def main(argv: list[str] | None = None) -> int:
    """Run the suite; returns the exit status (1 if ``--smoke`` saw a failure or a loss)."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--smoke", action="store_true", help="tiny workloads; check 0 lost, 0 out of order"
    )
    parser.add_argument("--servers", help="comma-separated subset of " + ", ".join(SERVERS))
    parser.add_argument("--workloads", help="comma-separated subset of " + ", ".join(WORKLOADS))
    parser.add_argument(
        "--repeat", type=int, default=3, help="echo/pipelined repetitions (median kept)"
    )
    parser.add_argument(
        "--receivers", help="broadcast (and Redis broadcast) receiver counts, e.g. 100,1000"
    )
    parser.add_argument("--idle", help="idle connection counts, e.g. 10000")
    parser.add_argument("--profile", action="store_true", help="py-spy flame graphs (ours)")
    parser.add_argument("--out", type=Path, help="results directory (default bench/results)")
    parser.add_argument(
        "--report", type=Path, help="only rewrite results.md and the charts from this JSON"
    )
    opts = parser.parse_args(argv)
    if opts.report:
        data = json.loads(opts.report.read_text())
        (opts.report.parent / "results.md").write_text(
            report.markdown(data["meta"], data["records"])
        )
        report.charts(data["records"], opts.report.parent)
        return 0
    cfg = {k: dict(v) for k, v in (SMOKE if opts.smoke else FULL).items()}
    if opts.receivers:
        receivers = [int(n) for n in opts.receivers.split(",")]
        cfg["broadcast"]["receivers"] = cfg["redis"]["receivers"] = receivers
    if opts.idle:
        cfg["idle"]["connections"] = [int(n) for n in opts.idle.split(",")]
    default_servers = ["trio-djws", "channels-uvicorn"] if opts.smoke else list(SERVERS)
    names = opts.servers.split(",") if opts.servers else default_servers
    opts.workloads = opts.workloads.split(",") if opts.workloads else WORKLOADS
    opts.out = opts.out or (
        Path(tempfile.mkdtemp(prefix="bench-smoke-")) if opts.smoke else ROOT / "bench/results"
    )
    opts.out.mkdir(parents=True, exist_ok=True)
    opts.tmp = tempfile.mkdtemp(prefix="bench-")
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # 10k connections need it
    notes = []
    if hard < 10_000 + 1_000:
        notes.append(f"RLIMIT_NOFILE hard limit is {hard}: the 10,000-connection run may fail")
    if not _taskset(SERVER_CORE):
        notes.append("taskset or a second core is missing: server and client are not pinned")
    servers = []
    for name in names:
        server = SERVERS[name]
        if not server.available:
            notes.append(f"{name} skipped: {server.why_not}")
            continue
        servers.append(server)
    records: list[dict] = []
    started = time.monotonic()
    if {"echo", "pipelined"} & set(opts.workloads):
        # Interleaved repetitions (server A, B, C, A, B, C, ...) so that load from elsewhere
        # on the machine hits every server alike; the median run of each is kept.
        runs: list[dict] = []
        for repetition in range(opts.repeat):
            for server in servers:
                print(f"== {server.name} echo/pipelined ({repetition + 1}/{opts.repeat})")
                runs += run_echo(
                    server, cfg["echo"], opts if repetition == 0 else _no_profile(opts)
                )
        records += _medians(runs)
    for server in servers:
        print(f"== {server.name}", flush=True)
        if "http" in opts.workloads and server.http and server.runs("http"):
            records += run_http(server, cfg["http"], opts)
        if "broadcast" in opts.workloads and server.runs("broadcast"):
            records += run_broadcast(server, cfg["broadcast"], opts)
        if "idle" in opts.workloads and server.runs("idle"):
            records += run_idle(server, cfg["idle"], opts)
    if "history" in opts.workloads and "trio-djws" in names:
        print("== broadcast with group history off / on (trio-djws)", flush=True)
        records += run_history(cfg["history"], opts)
    if "storm" in opts.workloads and "trio-djws" in names:
        print("== reconnect storm (trio-djws, group history)", flush=True)
        records += run_storm(cfg["storm"], opts)
    if "chatroom" in opts.workloads and "trio-djws" in names:
        print("== chatroom (trio-djws)", flush=True)
        records += run_chatroom(cfg["chatroom"], opts)
    if "redis" in opts.workloads and "trio-djws" in names:
        if _has_redis_broker():
            print("== broadcast over Redis (trio-djws)", flush=True)
            for workers in (1, 2) if not opts.smoke else (1,):
                records += run_broadcast(SERVERS["trio-djws"], cfg["redis"], opts, workers=workers)
        else:
            notes.append(
                "Redis broadcast skipped: trio_djws.brokers.RedisBroker is not in this tree "
                "(or redis-server is missing)"
            )
    with open("/proc/loadavg") as f:
        load = f.read().strip()
    meta = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": "nox -s bench" + (" -- " + " ".join(argv or sys.argv[1:])).rstrip(" -"),
        "versions": _versions(),
        "cpus": os.cpu_count(),
        "loadavg_at_end": load,
        "duration_s": round(time.monotonic() - started, 1),
        "broadcast_send_queue_size": cfg["broadcast"]["queue_size"],
        "notes": notes,
        "smoke": opts.smoke,
    }
    (opts.out / "results.json").write_text(json.dumps({"meta": meta, "records": records}, indent=1))
    (opts.out / "results.md").write_text(report.markdown(meta, records))
    if not opts.smoke:
        report.charts(records, opts.out)
    print(f"results in {opts.out}", flush=True)
    for note in notes:
        print("note:", note)
    if opts.smoke:
        return _check_smoke(records)
    return 0


def _no_profile(opts: argparse.Namespace) -> argparse.Namespace:
    return argparse.Namespace(**{**vars(opts), "profile": False})


def _medians(runs: list[dict]) -> list[dict]:
    # The median run (by rate) of each server and workload, with every run's rate kept.
    keyed: dict[tuple[str, str], list[dict]] = {}
    for r in runs:
        keyed.setdefault((r["server"], r["workload"]), []).append(r)
    out = []
    for group in keyed.values():
        good = sorted((r for r in group if "rate" in r), key=lambda r: r["rate"])
        if not good:
            out.append(group[0])
            continue
        median = dict(good[len(good) // 2])
        median["rates_all_runs"] = [r["rate"] for r in group if "rate" in r]
        out.append(median)
    return out


def _check_smoke(records: list[dict]) -> int:
    # Completion and 0 lost only: speed is never asserted.
    bad = []
    for r in records:
        lost = sum(
            r.get(k) or 0 for k in ("lost", "out_of_order", "pending", "echo_lost", "errors")
        )
        lost += r.get("connect_failures") or 0
        if "error" in r or lost:
            bad.append(r)
    for r in bad:
        print("SMOKE FAILURE:", json.dumps(r)[:1500], file=sys.stderr)
    print(f"smoke: {len(records)} results, {len(bad)} failed", flush=True)
    return 1 if bad or not records else 0
