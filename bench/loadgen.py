"""The load generator: one process, asyncio (uvloop when installed) and the ``websockets``
client, started by the runner pinned to its own core.

``python -m bench.loadgen WORKLOAD JSON_PARAMS`` prints one JSON object (the measured
figures) on its last stdout line. Every loop is bounded in count and in time: each workload
has a ``deadline`` (seconds) after which it stops and reports what it got. CPU use of this
process and of the server's process tree (``server_pids``, read from ``/proc``) is measured
over the measured phase and reported as a percentage of one core.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

__all__ = ["main", "percentile"]

_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")
_HANDSHAKE_CONCURRENCY = 32  # handshakes in flight while connecting
_CONNECT_TIMEOUT = 30.0  # seconds per handshake


def percentile(values: list[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) of ``values`` by nearest rank, or None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def _tree(root: int) -> list[int]:
    # ``root`` and its descendants, from /proc/*/stat (ppid is field 4).
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of ``pids`` (and their descendants), in seconds."""
    total = 0
    for root in pids:
        for pid in _tree(root):
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])
    return total / _CLK_TCK


def rss_bytes(pids: list[int]) -> int:
    """Resident set size of ``pids`` and their descendants, in bytes."""
    total = 0
    for root in pids:
        for pid in _tree(root):
            try:
                with open(f"/proc/{pid}/statm") as f:
                    total += int(f.read().split()[1]) * _PAGE
            except OSError:
                continue
    return total


class _Meter:
    """CPU of this process and of the server over one phase, as % of one core."""

    def __init__(self, server_pids: list[int], extra: dict[str, list[int]]) -> None:
        self._server = server_pids
        self._extra = extra

    def __enter__(self) -> _Meter:
        self.wall = time.monotonic()
        self.client = time.process_time()
        self.server = cpu_seconds(self._server)
        self.extras = {name: cpu_seconds(pids) for name, pids in self._extra.items()}
        return self

    def __exit__(self, *exc: object) -> None:
        elapsed = max(time.monotonic() - self.wall, 1e-9)
        self.elapsed = elapsed
        self.result = {
            "client_cpu_pct": round(100 * (time.process_time() - self.client) / elapsed, 1),
            "server_cpu_pct": round(100 * (cpu_seconds(self._server) - self.server) / elapsed, 1),
        }
        for name, pids in self._extra.items():
            used = cpu_seconds(pids) - self.extras[name]
            self.result[f"{name}_cpu_pct"] = round(100 * used / elapsed, 1)


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value / 1e6, 2)


# "deflate" offers permessage-deflate (the ``compression`` parameter of a workload); by
# default every server is measured without it.
_COMPRESSION: dict[str, str | None] = {"offer": None}


async def _open(url: str) -> ClientConnection:
    return await connect(
        url,
        compression=_COMPRESSION["offer"],
        ping_interval=None,
        max_size=2**20,
        max_queue=None,  # the client never applies backpressure: it must not be the limit
        open_timeout=_CONNECT_TIMEOUT,
        close_timeout=2,
    )


async def _open_many(url: str, count: int, deadline: float) -> tuple[list[ClientConnection], int]:
    # ``count`` handshakes, 32 in flight; returns the connections and the failures.
    semaphore = asyncio.Semaphore(_HANDSHAKE_CONCURRENCY)
    failures = 0

    async def one() -> ClientConnection | None:
        nonlocal failures
        async with semaphore:
            if time.monotonic() > deadline:
                failures += 1
                return None
            try:
                return await _open(url)
            except Exception:  # noqa: BLE001 (any failed handshake is counted, not fatal)
                failures += 1
                return None

    results = await asyncio.gather(*(one() for _ in range(count)))
    return [ws for ws in results if ws is not None], failures


def _abort(connections: list[ClientConnection]) -> None:
    for ws in connections:
        ws.transport.abort()


def _payload(size: int) -> str:
    return ("x" * size)[:size]


async def echo(p: dict[str, Any], meter: _Meter) -> dict[str, Any]:
    """``clients`` connections x ``round_trips`` messages of ``size`` bytes, ``window`` in
    flight per connection (1: one at a time, RTTs recorded)."""
    url, clients, trips = p["url"], p["clients"], p["round_trips"]
    window, size = p.get("window", 1), p.get("size", 64)
    deadline = time.monotonic() + p["deadline"]
    connections, failed = await _open_many(url, clients, deadline)
    payload = _payload(size)
    rtts: list[int] = []
    done = 0
    errors = failed

    async def run(ws: ClientConnection) -> None:
        nonlocal done, errors
        try:
            if window == 1:
                for _ in range(trips):
                    if time.monotonic() > deadline:
                        return
                    start = time.perf_counter_ns()
                    await ws.send(payload)
                    await ws.recv()
                    rtts.append(time.perf_counter_ns() - start)
                    done += 1
            else:
                sent = 0
                for _ in range(min(window, trips)):
                    await ws.send(payload)
                    sent += 1
                received = 0
                while received < trips and time.monotonic() < deadline:
                    await ws.recv()
                    received += 1
                    done += 1
                    if sent < trips:
                        await ws.send(payload)
                        sent += 1
        except ConnectionClosed:
            errors += 1

    with meter:
        await asyncio.gather(*(run(ws) for ws in connections))
    _abort(connections)
    result: dict[str, Any] = {
        "messages": done,
        "expected": clients * trips,
        "elapsed_s": round(meter.elapsed, 3),
        "rate": round(done / meter.elapsed, 1),
        "errors": errors,
        "lost": clients * trips - done,
        **meter.result,
    }
    if window == 1:
        result.update(p50_ms=_ms(percentile(rtts, 50)), p99_ms=_ms(percentile(rtts, 99)))
        result["max_ms"] = _ms(max(rtts) if rtts else None)
    return result


async def broadcast(p: dict[str, Any], meter: _Meter) -> dict[str, Any]:
    """``receivers`` members of the group plus one sender (a member too); for each rate R in
    ``rates`` the sender sends R stamped messages/s for ``duration`` s. Deliveries are
    counted per member until all arrived or ``drain`` s after the last send; a member that
    was closed (1008 slow consumer, 1011, …) counts its missing messages as lost, an open one
    as late ("pending")."""
    url, receivers, duration = p["url"], p["receivers"], p["duration"]
    drain = p.get("drain", 15.0)
    start_deadline = time.monotonic() + p["deadline"]
    connections, failed = await _open_many(url, receivers + 1, start_deadline)
    sender = connections[0] if connections else None
    members = len(connections)
    state: dict[str, Any] = {
        "run": -1,
        "count": 0,
        "latencies": [],
        "last": 0.0,
        "any": 0.0,
        "out_of_order": 0,
    }
    counts = [0] * members
    last_seq = [
        -1
    ] * members  # per member, this run: a smaller seq after a larger one is a reordering
    closed: dict[int, int | None] = {}

    async def listen(index: int, ws: ClientConnection) -> None:
        try:
            async for message in ws:
                now = time.monotonic_ns()
                state["any"] = now
                run, seq, stamp = str(message).split(":", 3)[:3]
                if int(run) != state["run"]:
                    continue
                if int(seq) <= last_seq[index]:
                    state["out_of_order"] += 1
                last_seq[index] = int(seq)
                state["latencies"].append(now - int(stamp))
                counts[index] += 1
                state["count"] += 1
                state["last"] = now
        except ConnectionClosed:
            pass
        code = ws.close_code
        closed[index] = code

    listeners = [asyncio.create_task(listen(i, ws)) for i, ws in enumerate(connections)]
    runs = []
    try:
        for run, rate in enumerate(p["rates"]):
            if run and not await _settle(state, p.get("settle", 30.0)):
                # The previous rate left a backlog that did not drain: a run now would
                # measure the backlog, not this rate.
                runs.append({"rate": rate, "receivers": receivers, "error": "backlog"})
                continue
            total = int(rate * duration)
            state.update(run=run, count=0, latencies=[], last=0.0, out_of_order=0)
            for i in range(members):
                counts[i] = 0
                last_seq[i] = -1
            closed_before = set(closed)
            sent = 0
            with meter:
                begin = time.monotonic()
                first_send = time.monotonic_ns()
                if sender is not None and 0 not in closed:
                    for seq in range(total):
                        due = begin + seq / rate
                        delay = due - time.monotonic()
                        if delay > 0:
                            await asyncio.sleep(delay)
                        stamp = f"{run}:{seq}:{time.monotonic_ns()}:"
                        try:
                            await sender.send(stamp + "x" * max(0, 64 - len(stamp)))
                        except ConnectionClosed:
                            break
                        sent += 1
                expected = sent * (members - len(closed_before))
                stop = time.monotonic() + drain
                while state["count"] < expected and time.monotonic() < stop:
                    if len(closed) == members:
                        break
                    await asyncio.sleep(0.05)  # polling the counters; bounded by ``drain``
            lost = pending = 0
            for i in range(members):
                if i in closed_before:
                    continue
                missing = sent - counts[i]
                if i in closed:
                    lost += missing
                else:
                    pending += missing
            span = max((state["last"] - first_send) / 1e9, 1e-9) if state["count"] else 1e-9
            lat = state["latencies"]
            runs.append(
                {
                    "rate": rate,
                    "receivers": receivers,
                    "sent": sent,
                    "expected": expected,
                    "delivered": state["count"],
                    "deliveries_per_s": round(state["count"] / span, 1),
                    "offered_per_s": rate * (members - len(closed_before)),
                    "p50_ms": _ms(percentile(lat, 50)),
                    "p99_ms": _ms(percentile(lat, 99)),
                    "max_ms": _ms(max(lat) if lat else None),
                    "lost": lost,
                    "out_of_order": state["out_of_order"],
                    "pending": pending,
                    "closed": sorted({str(closed[i]) for i in closed if i not in closed_before}),
                    "connect_failures": failed,
                    "elapsed_s": round(meter.elapsed, 3),
                    **meter.result,
                }
            )
    finally:
        for task in listeners:
            task.cancel()
        _abort(connections)
    return {"runs": runs}


async def _settle(state: dict[str, Any], limit: float) -> bool:
    # Whether deliveries of earlier runs have stopped (none for 1 s) within ``limit`` s.
    stop = time.monotonic() + limit
    while time.monotonic() < stop:
        if time.monotonic_ns() - state["any"] > 1e9:
            return True
        await asyncio.sleep(0.1)  # polling the counters; bounded by ``limit``
    return False


async def idle(p: dict[str, Any], meter: _Meter) -> dict[str, Any]:
    """Open ``connections`` (32 handshakes in flight) and hold them: handshakes/s and server
    RSS growth per connection; then ``echo_clients`` more connections echo ``round_trips``
    64-byte messages each, one in flight, while the idle ones are held (RTT p50/p99)."""
    url, count = p["url"], p["connections"]
    deadline = time.monotonic() + p["deadline"]
    pids = p["server_pids"]
    # Warm the server (imports, first-connection caches) before the baseline.
    warm, _ = await _open_many(url, 8, deadline)
    for ws in warm:
        await ws.close()
    before = rss_bytes(pids)
    with meter:
        connections, failed = await _open_many(url, count, deadline)
    handshakes = meter.result
    elapsed = meter.elapsed
    # One round trip on a sample of the held connections: the server has settled them all.
    after = rss_bytes(pids)
    result: dict[str, Any] = {
        "connections": len(connections),
        "connect_failures": failed,
        "handshakes_per_s": round(len(connections) / elapsed, 1),
        "handshake_server_cpu_pct": handshakes["server_cpu_pct"],
        "handshake_client_cpu_pct": handshakes["client_cpu_pct"],
        "rss_before_mib": round(before / 2**20, 1),
        "rss_after_mib": round(after / 2**20, 1),
        "rss_per_connection_kib": round((after - before) / max(len(connections), 1) / 1024, 1),
    }
    if p.get("echo_clients"):
        sub = dict(p, clients=p["echo_clients"], round_trips=p["round_trips"], window=1)
        sub["deadline"] = max(5.0, deadline - time.monotonic())
        echoed = await echo(sub, meter)
        result.update(
            {
                "echo_rate": echoed["rate"],
                "echo_p50_ms": echoed["p50_ms"],
                "echo_p99_ms": echoed["p99_ms"],
                "echo_max_ms": echoed["max_ms"],
                "echo_lost": echoed["lost"],
                "echo_server_cpu_pct": echoed["server_cpu_pct"],
                "echo_client_cpu_pct": echoed["client_cpu_pct"],
            }
        )
    still_open = sum(1 for ws in connections if ws.close_code is None)
    result["dropped_while_held"] = len(connections) - still_open
    _abort(connections)
    return result


async def chatroom(p: dict[str, Any], meter: _Meter) -> dict[str, Any]:
    """``users`` connections spread over ``rooms`` chatroom rooms; each sends ``messages``
    chat messages, one in flight (the next once its own comes back through the room's
    group): messages/s, latency send → own message received (p50/p99), and deliveries."""
    base, users, rooms, per_user = p["url"], p["users"], p["rooms"], p["messages"]
    deadline = time.monotonic() + p["deadline"]
    semaphore = asyncio.Semaphore(_HANDSHAKE_CONCURRENCY)
    latencies: list[int] = []
    received = [0] * users
    sent_total = 0
    errors = 0
    connections: list[ClientConnection | None] = [None] * users

    async def open_one(i: int) -> None:
        nonlocal errors
        async with semaphore:
            try:
                ws = await _open(f"{base}/ws/chat/{p['slug_prefix']}{i % rooms}/?nick=u{i}")
                # "presence" frames (who is in the room, one per join of anyone in it) may
                # come before the history: at most one per user, and a few more.
                for _ in range(users + 10):
                    if json.loads(await ws.recv())["type"] == "history":
                        connections[i] = ws
                        break
                else:
                    raise AssertionError("no history frame among the first users + 10")
            except (OSError, TimeoutError, ConnectionClosed, AssertionError):
                errors += 1

    await asyncio.gather(*(open_one(i) for i in range(users)))

    async def user(i: int, ws: ClientConnection) -> None:
        nonlocal sent_total, errors
        mine = f"u{i}:"
        try:
            for seq in range(per_user):
                if time.monotonic() > deadline:
                    return
                text = f"{mine}{seq}"
                start = time.perf_counter_ns()
                await ws.send(json.dumps({"type": "message", "text": text}))
                sent_total += 1
                while True:
                    frame = json.loads(await ws.recv())
                    if frame.get("type") == "error":
                        errors += 1
                    if frame.get("type") != "message":
                        continue  # presence (members come and go), a history resync
                    received[i] += 1
                    if frame["text"] == text:
                        latencies.append(time.perf_counter_ns() - start)
                        break
        except ConnectionClosed:
            errors += 1

    with meter:
        await asyncio.gather(*(user(i, ws) for i, ws in enumerate(connections) if ws))
    # Messages of others still in flight: drain each member until it has its room's total.
    per_room = [0] * rooms
    for i in range(users):
        if connections[i] is not None:
            per_room[i % rooms] += per_user
    stop = time.monotonic() + 10

    async def drain(i: int, ws: ClientConnection) -> None:
        while received[i] < per_room[i % rooms] and time.monotonic() < stop:
            try:
                frame = json.loads(await asyncio.wait_for(ws.recv(), stop - time.monotonic()))
            except (TimeoutError, ConnectionClosed):
                return
            if frame.get("type") == "message":
                received[i] += 1

    await asyncio.gather(*(drain(i, ws) for i, ws in enumerate(connections) if ws))
    expected_deliveries = sum(per_room[i % rooms] for i in range(users) if connections[i])
    _abort([ws for ws in connections if ws is not None])
    return {
        "users": users,
        "rooms": rooms,
        "messages": len(latencies),
        "messages_per_s": round(len(latencies) / meter.elapsed, 1),
        "deliveries": sum(received),
        "lost": expected_deliveries - sum(received),
        "p50_ms": _ms(percentile([float(v) for v in latencies], 50)),
        "p99_ms": _ms(percentile([float(v) for v in latencies], 99)),
        "errors": errors,
        "elapsed_s": round(meter.elapsed, 3),
        **meter.result,
    }


async def http(p: dict[str, Any], meter: _Meter) -> dict[str, Any]:
    """``clients`` keep-alive HTTP/1.1 connections, each sending ``requests`` GETs of ``path``
    one after the other (h11 parses the responses): requests/s, latency p50/p99, errors."""
    import h11

    host, port = p["host"], p["port"]
    clients, requests = p["clients"], p["requests"]
    deadline = time.monotonic() + p["deadline"]
    latencies: list[int] = []
    done = 0
    errors = 0

    async def run() -> None:
        nonlocal done, errors
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            errors += 1
            return
        connection = h11.Connection(h11.CLIENT)
        request = h11.Request(method="GET", target=p["path"], headers=[("Host", host)])
        try:
            for _ in range(requests):
                if time.monotonic() > deadline:
                    return
                start = time.perf_counter_ns()
                writer.write(connection.send(request) + connection.send(h11.EndOfMessage()))
                status = 0
                while True:
                    event = connection.next_event()
                    if event is h11.NEED_DATA:
                        data = await reader.read(65536)
                        if not data:
                            raise ConnectionError("closed by the server")
                        connection.receive_data(data)
                    elif isinstance(event, h11.Response):
                        status = event.status_code
                    elif isinstance(event, h11.EndOfMessage):
                        break
                connection.start_next_cycle()
                if status != 200:
                    errors += 1
                    return
                latencies.append(time.perf_counter_ns() - start)
                done += 1
        except (ConnectionError, h11.ProtocolError):
            errors += 1
        finally:
            writer.close()

    with meter:
        await asyncio.gather(*(run() for _ in range(clients)))
    return {
        "requests": done,
        "expected": clients * requests,
        "elapsed_s": round(meter.elapsed, 3),
        "rate": round(done / meter.elapsed, 1),
        "errors": errors,
        "lost": clients * requests - done,
        "p50_ms": _ms(percentile(latencies, 50)),
        "p99_ms": _ms(percentile(latencies, 99)),
        **meter.result,
    }


async def storm(p: dict[str, Any], meter: _Meter) -> dict[str, Any]:
    """The reconnect storm: ``clients`` members of a history group (``/history/``) see one
    message, all drop, ``missed`` messages are published, then all rejoin at once (32
    handshakes in flight) with their last position. Measured from the first rejoin until every
    client has its ``missed`` messages: each must be recovered, in order, none twice."""
    url, clients, missed = p["url"], p["clients"], p["missed"]
    deadline = time.monotonic() + p["deadline"]
    connections, failed = await _open_many(url, clients + 1, deadline)
    if len(connections) < 2:
        _abort(connections)
        return {"error": "could not connect", "connect_failures": failed}
    publisher, members = connections[0], connections[1:]

    async def frame(ws: ClientConnection) -> dict[str, Any]:
        async with asyncio.timeout(max(0.1, deadline - time.monotonic())):
            data: dict[str, Any] = json.loads(await ws.recv())
            return data

    try:
        for ws in connections:
            assert (await frame(ws))["type"] == "joined"
        await publisher.send("before")
        positions = [(await frame(ws))["position"] for ws in members]
        await frame(publisher)
        await asyncio.gather(*(ws.close() for ws in members))
        for i in range(missed):
            await publisher.send(str(i))
        for _ in range(missed):
            await frame(publisher)  # the publisher is a member: all were published
    except (TimeoutError, ConnectionClosed) as exc:
        _abort(connections)
        return {"error": f"setup failed: {exc!r}", "connect_failures": failed}
    semaphore = asyncio.Semaphore(_HANDSHAKE_CONCURRENCY)
    times: list[float] = []
    outcome = {"recovered": 0, "not_recovered": 0, "lost": 0, "out_of_order": 0, "errors": 0}
    rejoined: list[ClientConnection] = []

    async def rejoin(position: dict[str, Any]) -> None:
        since = f"{position['epoch']}:{position['offset']}"
        try:
            async with semaphore:
                ws = await _open(f"{url}?since={since}")
            rejoined.append(ws)
            joined = await frame(ws)
            if not joined["recovered"]:
                outcome["not_recovered"] += 1
                outcome["lost"] += missed
                return
            offsets = [(await frame(ws))["position"]["offset"] for _ in range(missed)]
        except (TimeoutError, ConnectionClosed, OSError):
            outcome["errors"] += 1
            return
        times.append(time.monotonic() - begin)
        outcome["recovered"] += 1
        expected = list(range(position["offset"] + 1, position["offset"] + missed + 1))
        if offsets != expected:
            outcome["out_of_order"] += 1
            outcome["lost"] += len(set(expected) - set(offsets))

    with meter:
        begin = time.monotonic()
        await asyncio.gather(*(rejoin(position) for position in positions))
    _abort([publisher, *rejoined])
    return {
        "clients": len(members),
        "missed": missed,
        **outcome,
        "all_recovered_s": round(max(times), 3) if times else None,
        "p50_recovered_s": round(percentile(times, 50) or 0, 3) if times else None,
        "connect_failures": failed,
        "server_cpu_s": round(meter.result["server_cpu_pct"] * meter.elapsed / 100, 2),
        **meter.result,
    }


WORKLOADS: dict[str, Callable[[dict[str, Any], _Meter], Awaitable[dict[str, Any]]]] = {
    "http": http,
    "echo": echo,
    "broadcast": broadcast,
    "idle": idle,
    "chatroom": chatroom,
    "storm": storm,
}


def main() -> None:
    """Entry point: ``python -m bench.loadgen WORKLOAD JSON_PARAMS``."""
    import resource

    workload, params = sys.argv[1], json.loads(sys.argv[2])
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    meter = _Meter(params.get("server_pids", []), params.get("extra_pids", {}))
    _COMPRESSION["offer"] = params.get("compression")
    try:
        import uvloop

        runner = uvloop.run
        loop_name = "uvloop"
    except ImportError:
        runner = asyncio.run
        loop_name = "asyncio"
    result = runner(WORKLOADS[workload](params, meter))
    result["client_loop"] = loop_name
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
